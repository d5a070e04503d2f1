"""R-FCN: region-based fully convolutional detector (Dai, Li, He, Sun 2016).

Composed like torchvision's ``GeneralizedRCNN``: backbone -> neck -> RPN -> head.

* **Backbone** (:mod:`fcn_perception.models.backbones`): EfficientNet-Lite0 with
  ImageNet weights by default, or a torchvision ResNet.
* **Neck** (:class:`FeatureFusion`), one shared feature map:
  ``"fuse8"`` (default): stride 8, ``relu(l8 + up(l16 + up(l32)))`` with 1x1 laterals
  (FPN-style top-down, bilinear upsampling), which keeps small road objects (median
  height 36-50 px at 360x480) several cells tall;
  ``"fuse"``: the same at stride 16 (``s16 + up(s32)``);
  ``"dilated"`` (the paper's choice): the stride-32 stage loses its stride and is
  dilated ("a trous"), so the backbone's last map itself is at stride 16.
* **RPN** (:class:`fcn_perception.models.rpn.RegionProposalNetwork`): 9 anchors per
  cell (3 sizes x 3 height/width ratios).
* **Head** (:class:`fcn_perception.models.ps_roi_head.PSRoIHead`): k=3
  position-sensitive score and regression maps, PSRoI pooling, voting, softmax, box
  decoding, per-class NMS.

Classes: ``num_classes`` foreground classes; detections' ``labels`` are ``0..C-1``
(index into the model card's ``classes``); the background is internal.

Everything used at inference is a tensor operation that traces into ONNX, with
``NonMaxSuppression`` for both NMS steps and dynamic input size; see
:func:`export_onnx` and :class:`RFCNExport`.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from fcn_perception.card import RFCN_DEFAULTS
from fcn_perception.errors import WeightsError
from fcn_perception.models.backbones import build_backbone
from fcn_perception.models.ps_roi_head import PSRoIHead
from fcn_perception.models.rpn import RegionProposalNetwork
from fcn_perception.weights_io import load_state_dict

NECK_STRIDES = {"fuse8": 8, "fuse": 16, "dilated": 16}
DEFAULTS = RFCN_DEFAULTS  # the options and their defaults are card data


def _dilate_resnet_stage(layer: nn.Module) -> None:
    """Remove the stride of a ResNet stage and dilate its 3x3 convolutions by 2."""
    for m in layer.modules():
        if isinstance(m, nn.Conv2d):
            if m.stride == (2, 2):
                m.stride = (1, 1)
            if m.kernel_size == (3, 3):
                m.dilation, m.padding = (2, 2), (2, 2)


def _shape_hw(x: torch.Tensor) -> torch.Tensor:
    """``(H, W)`` of a ``(N, C, H, W)`` tensor as a float tensor (traced as Shape in ONNX)."""
    return torch._shape_as_tensor(x)[2:4].to(torch.float32)


class FeatureFusion(nn.Module):
    """Top-down fusion of backbone taps into one map at the finest of ``levels``.

    ``levels`` coarse to fine, e.g. ``("s32", "s16", "s8")``: 1x1 laterals to
    ``channels``, each coarser sum upsampled bilinearly to the next finer tap's size
    and added, ReLU at the end.  One level: ReLU of its lateral.
    Shapes: taps dict -> ``(N, channels, H_f, W_f)`` of the finest level.
    """

    def __init__(self, in_channels: dict[str, int], levels: tuple[str, ...], channels: int) -> None:
        super().__init__()
        self.levels = tuple(levels)
        self.laterals = nn.ModuleDict({lv: nn.Conv2d(in_channels[lv], channels, 1)
                                       for lv in self.levels})
        for m in self.laterals.values():
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)

    def forward(self, taps: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.laterals[self.levels[0]](taps[self.levels[0]])
        for lv in self.levels[1:]:
            lat = self.laterals[lv](taps[lv])
            out = lat + F.interpolate(out, size=lat.shape[-2:], mode="bilinear",
                                      align_corners=False)
        return F.relu(out)


class RFCN(nn.Module):
    """R-FCN detector; see the module docstring.

    ``forward(images, targets=None, image_sizes=None)``:

    * training (``targets`` given, a list of dicts with ``boxes`` ``(G, 4)`` float
      ``x1, y1, x2, y2`` pixels and ``labels`` ``(G,)`` int64 in ``0..C-1``): returns a
      dict of losses ``rpn_cls``, ``rpn_box``, ``cls``, ``box``;
    * inference: returns one dict per image with ``boxes`` ``(D, 4)``, ``scores``
      ``(D,)``, ``labels`` ``(D,)`` and ``class_scores`` ``(D, C)`` (``D <=
      max_detections``, sorted by score).

    ``images`` is ``(N, 3, H, W)``, normalised; ``image_sizes`` (``[(h, w), ...]``)
    gives each image's size inside a zero-padded batch (default: the whole tensor).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, **cfg) -> None:
        super().__init__()
        unknown = sorted(set(cfg) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown R-FCN options {unknown}; known: {sorted(DEFAULTS)}")
        c = {**DEFAULTS, **cfg}
        if c["neck"] not in NECK_STRIDES:
            raise ValueError(f"unknown neck {c['neck']!r}; expected one of {sorted(NECK_STRIDES)}")
        self.cfg = c
        self.num_classes = int(num_classes)
        self.stride = NECK_STRIDES[c["neck"]]
        self.backbone = backbone
        ch = backbone.channels
        if c["neck"] == "dilated":
            if hasattr(backbone, "dilate_s32"):
                backbone.dilate_s32()
            else:
                _dilate_resnet_stage(backbone.layer4)
            self.neck = FeatureFusion(ch, ("s32",), int(c["feature_channels"]))
        else:
            levels = ("s32", "s16", "s8") if c["neck"] == "fuse8" else ("s32", "s16")
            self.neck = FeatureFusion(ch, levels, int(c["feature_channels"]))
        fc = int(c["feature_channels"])
        self.rpn = RegionProposalNetwork(
            fc, c["anchor_sizes"], c["aspect_ratios"], self.stride,
            c["rpn_pre_nms_top_n_train"], c["rpn_post_nms_top_n_train"],
            c["rpn_pre_nms_top_n_test"], c["rpn_post_nms_top_n_test"], c["rpn_nms_thresh"],
            c["rpn_batch_size"], c["rpn_positive_fraction"], c["rpn_fg_iou"], c["rpn_bg_iou"],
            c["min_box_size"])
        self.head = PSRoIHead(
            fc, self.num_classes, self.stride, int(c["head_channels"]), int(c["k"]),
            c["roi_batch_size"], c["roi_positive_fraction"], c["roi_fg_iou"], c["ohem"],
            c["score_thresh"], c["nms_thresh"], c["max_detections"], c["min_box_size"])

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The shared map ``(N, feature_channels, ceil(H/stride), ceil(W/stride))``."""
        return self.neck(self.backbone(images))

    def forward(self, images: torch.Tensor, targets: list[dict] | None = None,
                image_sizes: list[tuple[int, int]] | None = None):
        if self.training and targets is None:
            raise ValueError("R-FCN in training mode needs targets (boxes and labels)")
        feat = self.features(images)
        full_hw = _shape_hw(images)
        hws = [full_hw if image_sizes is None else
               torch.tensor(image_sizes[i], dtype=torch.float32, device=images.device)
               for i in range(images.shape[0])]
        proposals, rpn_losses = self.rpn(feat, hws, targets)
        out = self.head(feat, proposals, hws, targets)
        return {**rpn_losses, **out} if targets is not None else out


def build_rfcn(arch: dict, pretrained_backbone: str | Path | None = None) -> RFCN:
    """An :class:`RFCN` from a model card's ``architecture`` dict (see :data:`DEFAULTS`)."""
    cfg = {k: v for k, v in arch.items() if k not in ("name", "backbone", "num_classes")}
    name = arch.get("backbone", DEFAULTS["backbone"])
    if name == "vgg16":
        raise ValueError("R-FCN needs a ResNet or EfficientNet-Lite backbone, got 'vgg16'")
    return RFCN(build_backbone(name, pretrained_backbone),
                int(arch.get("num_classes", DEFAULTS["num_classes"])), **cfg)


def architecture(**overrides) -> dict:
    """The full architecture dict (defaults plus ``overrides``), as stored in model cards."""
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown R-FCN options {unknown}")
    return {**DEFAULTS, **overrides}


def init_backbone_from(model: RFCN, path: str | Path, prefix: str = "backbone.") -> int:
    """Copy backbone weights from a checkpoint or state dict whose keys start with ``prefix``
    (for example an FCN checkpoint's ``model``).  Returns the number of tensors copied."""
    state = load_state_dict(path)
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = model.backbone.state_dict()
    missing = sorted(set(own) - set(sub))
    bad = [k for k in own if k in sub and sub[k].shape != own[k].shape]
    if not sub or missing or bad:
        raise WeightsError(
            f"{path} holds no matching '{prefix}*' backbone weights for {model.backbone.name} "
            f"(missing {missing[:4]}, shape mismatch {bad[:4]})"
        )
    model.backbone.load_state_dict({k: sub[k].to(own[k].dtype) for k in own})
    return len(own)


class RFCNExport(nn.Module):
    """Batch-1 wrapper with fixed-size outputs, for ONNX export.

    Input ``image`` ``(1, 3, H, W)`` normalised.  Outputs, padded to
    ``max_detections`` rows: ``boxes`` ``(D, 4)`` float32, ``scores`` ``(D,)``
    float32 (0 in padding), ``labels`` ``(D,)`` int64 (-1 in padding),
    ``num_detections`` ``()`` int64, the number of valid rows, and ``class_scores``
    ``(D, C)`` float32, each detection's class distribution (0 in padding).
    """

    INPUT_NAMES = ["image"]
    OUTPUT_NAMES = ["boxes", "scores", "labels", "num_detections", "class_scores"]

    def __init__(self, model: RFCN) -> None:
        super().__init__()
        self.model = model.eval()
        self.max_detections = int(model.cfg["max_detections"])

    def forward(self, image: torch.Tensor):
        det = self.model(image)[0]
        d = self.max_detections
        boxes = torch.cat([det["boxes"], det["boxes"].new_zeros((d, 4))])[:d]
        scores = torch.cat([det["scores"], det["scores"].new_zeros((d,))])[:d]
        labels = torch.cat([det["labels"], det["labels"].new_full((d,), -1)])[:d]
        dist = det["class_scores"]
        dist = torch.cat([dist, dist.new_zeros((d, dist.shape[1]))])[:d]
        num = torch._shape_as_tensor(det["scores"])[0]
        return boxes, scores, labels, num, dist


def export_onnx(model: RFCN, path: str | Path, height: int = 360, width: int = 480,
                opset: int = 17) -> Path:
    """Export the whole detector (backbone, RPN, proposals, both NMS steps, PSRoI head
    and box decoding) to one ONNX graph with dynamic input height and width."""
    import warnings

    path = Path(path)
    wrapper = RFCNExport(model).eval()
    dummy = torch.zeros(1, 3, height, width)
    with warnings.catch_warnings():
        # expected: tracer notes, the legacy-exporter notice, Slice constant folding
        for category in (torch.jit.TracerWarning, DeprecationWarning, FutureWarning):
            warnings.simplefilter("ignore", category)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            wrapper, (dummy,), str(path), dynamo=False, opset_version=opset,
            input_names=RFCNExport.INPUT_NAMES, output_names=RFCNExport.OUTPUT_NAMES,
            dynamic_axes={"image": {2: "height", 3: "width"}},
        )
    _fix_output_shapes(path, wrapper.max_detections, model.num_classes)
    return path


def _fix_output_shapes(path: Path, max_detections: int, num_classes: int) -> None:
    """Record the fixed output sizes (tracing leaves the padded slices symbolic)."""
    import onnx

    model = onnx.load(str(path))
    dims = {"boxes": [max_detections, 4], "scores": [max_detections],
            "labels": [max_detections], "num_detections": [],
            "class_scores": [max_detections, num_classes]}
    for out in model.graph.output:
        shape = out.type.tensor_type.shape
        for dim, value in zip(shape.dim, dims[out.name]):
            dim.Clear()
            dim.dim_value = value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
