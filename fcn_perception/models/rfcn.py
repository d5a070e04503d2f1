"""R-FCN: region-based fully convolutional detector (Dai, Li, He, Sun 2016).

Pipeline (one stride-16 feature map, as in the paper):

* **Backbone**: a torchvision ResNet (ResNet-18 by default, ResNet-34/50/101 too).
  ``neck="fuse"`` (default, cheap): ``relu(1x1(layer3) + upsample(1x1(layer4)))``, an
  FPN-style top-down step that keeps layer4's context at stride 16.
  ``neck="dilated"`` (the paper's choice): layer4's stride is removed and its 3x3
  convolutions dilated by 2 ("a trous"), so layer4 itself is at stride 16 (about 1.7x
  the backbone cost of ``fuse`` for ResNet-18).
* **RPN**: 3x3 conv + ReLU, then per cell ``A = len(sizes) * len(ratios)`` (9) objectness
  logits and ``4A`` box deltas.  Training: anchors with IoU >= 0.7 to a ground-truth
  box are positive (and each box's best anchors), < 0.3 negative; 256 anchors per
  image, at most half positive; binary cross-entropy and smooth-L1.  Proposals:
  top-scoring decoded anchors, clipped, NMS 0.7, the best ``post_nms`` kept.
* **Head**: 1x1 conv + ReLU to ``head_channels``, then position-sensitive score maps
  ``k*k*(C+1)`` and class-agnostic position-sensitive regression maps ``4*k*k`` (k=3).
  PSRoI average pooling (:func:`fcn_perception.models.psroi.ps_roi_pool`) gives
  ``(R, C+1, k, k)`` and ``(R, 4, k, k)``; voting averages the ``k*k`` bins; softmax
  gives class probabilities; the box deltas refine each proposal (weights 10,10,5,5).
  Training: proposals (plus the ground-truth boxes) with IoU >= 0.5 are foreground,
  others background; 128 RoIs per image with at most 25% foreground, or with
  ``ohem=True`` online hard example mining (all RoIs are scored, the 128 with the
  highest loss are back-propagated; cheap here because the per-RoI head is free).
* **Output**: per-class score threshold, per-class NMS (0.3) via the coordinate-offset
  trick of :func:`torchvision.ops.batched_nms`, the best ``max_detections`` kept.

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
from torchvision.ops import batched_nms, nms, remove_small_boxes

from fcn_perception.models.anchors import AnchorGenerator
from fcn_perception.models.backbones import RESNETS, build_backbone
from fcn_perception.models.box_coder import BoxCoder, match_boxes, sample_labels
from fcn_perception.models.psroi import ps_roi_pool

STRIDE = 16
DEFAULTS = {
    "name": "rfcn",
    "backbone": "resnet18",
    "num_classes": 3,
    "neck": "fuse",
    "feature_channels": 256,
    "head_channels": 512,
    "k": 3,
    "anchor_sizes": [20, 50, 125],
    "aspect_ratios": [0.5, 1.0, 2.0],
    "rpn_pre_nms_top_n_train": 2000,
    "rpn_post_nms_top_n_train": 300,
    "rpn_pre_nms_top_n_test": 1000,
    "rpn_post_nms_top_n_test": 150,
    "rpn_nms_thresh": 0.7,
    "rpn_batch_size": 256,
    "rpn_positive_fraction": 0.5,
    "rpn_fg_iou": 0.7,
    "rpn_bg_iou": 0.3,
    "roi_batch_size": 128,
    "roi_positive_fraction": 0.25,
    "roi_fg_iou": 0.5,
    "ohem": False,
    "score_thresh": 0.05,
    "nms_thresh": 0.3,
    "max_detections": 100,
    "min_box_size": 1.0,
}


def _dilate_last_stage(layer: nn.Module) -> None:
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


def _topk_count(x: torch.Tensor, k: int):
    """``min(k, len(x))`` that stays dynamic when traced for ONNX."""
    if not torch.jit.is_tracing():
        return min(k, x.shape[0])
    n = torch._shape_as_tensor(x)[0:1]
    return torch.min(torch.cat([torch.tensor([k], dtype=n.dtype), n]))


def _clip(boxes: torch.Tensor, hw: torch.Tensor) -> torch.Tensor:
    x = torch.minimum(boxes[:, 0::2].clamp(min=0), hw[1])
    y = torch.minimum(boxes[:, 1::2].clamp(min=0), hw[0])
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


class RFCN(nn.Module):
    """R-FCN detector; see the module docstring.

    ``forward(images, targets=None, image_sizes=None)``:

    * training (``targets`` given, a list of dicts with ``boxes`` ``(G, 4)`` float
      ``x1, y1, x2, y2`` pixels and ``labels`` ``(G,)`` int64 in ``0..C-1``): returns a
      dict of losses ``rpn_cls``, ``rpn_box``, ``cls``, ``box``;
    * inference: returns one dict per image with ``boxes`` ``(D, 4)``, ``scores``
      ``(D,)`` and ``labels`` ``(D,)`` (``D <= max_detections``, sorted by score).

    ``images`` is ``(N, 3, H, W)``, normalised; ``image_sizes`` (``[(h, w), ...]``)
    gives each image's size inside a zero-padded batch (default: the whole tensor).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, **cfg) -> None:
        super().__init__()
        unknown = sorted(set(cfg) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"unknown R-FCN options {unknown}; known: {sorted(DEFAULTS)}")
        c = {**DEFAULTS, **cfg}
        self.cfg = c
        self.num_classes = int(num_classes)
        self.k = int(c["k"])
        self.backbone = backbone
        ch = backbone.channels
        if c["neck"] == "fuse":
            fc = int(c["feature_channels"])
            self.lateral16 = nn.Conv2d(ch["s16"], fc, 1)
            self.lateral32 = nn.Conv2d(ch["s32"], fc, 1)
        elif c["neck"] == "dilated":
            _dilate_last_stage(backbone.layer4)
            fc = ch["s32"]
        else:
            raise ValueError(f"unknown neck {c['neck']!r}; expected 'fuse' or 'dilated'")
        self.anchor_generator = AnchorGenerator(c["anchor_sizes"], c["aspect_ratios"], STRIDE)
        a = self.anchor_generator.num_anchors
        self.rpn_conv = nn.Conv2d(fc, fc, 3, padding=1)
        self.rpn_cls = nn.Conv2d(fc, a, 1)
        self.rpn_reg = nn.Conv2d(fc, 4 * a, 1)
        hc = int(c["head_channels"])
        self.conv_new = nn.Conv2d(fc, hc, 1)
        self.ps_cls = nn.Conv2d(hc, self.k * self.k * (self.num_classes + 1), 1)
        self.ps_reg = nn.Conv2d(hc, 4 * self.k * self.k, 1)
        for m in (self.rpn_conv, self.rpn_cls, self.rpn_reg, self.ps_cls, self.ps_reg):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        for m in (self.conv_new, *([self.lateral16, self.lateral32] if c["neck"] == "fuse" else [])):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        self.rpn_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.head_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))

    # ---------------------------------------------------------------- features
    def features(self, images: torch.Tensor) -> torch.Tensor:
        taps = self.backbone(images)
        if self.cfg["neck"] == "dilated":
            return taps["s32"]
        s16 = taps["s16"]
        top = F.interpolate(self.lateral32(taps["s32"]), size=s16.shape[-2:], mode="nearest")
        return F.relu(self.lateral16(s16) + top)

    # ---------------------------------------------------------------- RPN
    def _rpn(self, feat: torch.Tensor):
        n = feat.shape[0]
        t = F.relu(self.rpn_conv(feat))
        obj = self.rpn_cls(t).permute(0, 2, 3, 1).reshape(n, -1)
        reg = self.rpn_reg(t)
        a = self.anchor_generator.num_anchors
        reg = reg.reshape(n, a, 4, reg.shape[-2], reg.shape[-1]).permute(0, 3, 4, 1, 2)
        return obj, reg.reshape(n, -1, 4)

    def _proposals(self, anchors, obj, reg, hw, training: bool) -> torch.Tensor:
        c = self.cfg
        pre = c["rpn_pre_nms_top_n_train" if training else "rpn_pre_nms_top_n_test"]
        post = c["rpn_post_nms_top_n_train" if training else "rpn_post_nms_top_n_test"]
        scores, idx = obj.topk(_topk_count(obj, pre))
        boxes = _clip(self.rpn_coder.decode(reg[idx], anchors[idx]), hw)
        keep = remove_small_boxes(boxes, float(c["min_box_size"]))
        boxes, scores = boxes[keep], scores[keep]
        keep = nms(boxes, scores, float(c["rpn_nms_thresh"]))[:post]
        return boxes[keep]

    def _rpn_loss(self, anchors, obj, reg, gt_boxes):
        c = self.cfg
        matched = match_boxes(anchors, gt_boxes, c["rpn_fg_iou"], c["rpn_bg_iou"], True)
        pos, neg = sample_labels(matched, c["rpn_batch_size"], c["rpn_positive_fraction"])
        sampled = torch.cat([pos, neg])
        target = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).to(obj.dtype)
        cls = F.binary_cross_entropy_with_logits(obj[sampled], target, reduction="sum")
        box = reg.sum() * 0.0  # keeps every parameter in the graph (DDP) without positives
        if pos.numel():
            t = self.rpn_coder.encode(gt_boxes[matched[pos]], anchors[pos])
            box = F.smooth_l1_loss(reg[pos], t, beta=1 / 9, reduction="sum")
        n = max(sampled.numel(), 1)
        return cls / n, box / n

    # ---------------------------------------------------------------- head
    def _head(self, feat: torch.Tensor, rois: torch.Tensor):
        """Voted class logits ``(R, C+1)`` and box deltas ``(R, 4)`` for ``(R, 5)`` RoIs."""
        t = F.relu(self.conv_new(feat))
        scale = 1.0 / STRIDE
        cls = ps_roi_pool(self.ps_cls(t), rois, self.k, scale, include_last=True)
        reg = ps_roi_pool(self.ps_reg(t), rois, self.k, scale, include_last=True)
        return cls.mean(dim=(2, 3)), reg.mean(dim=(2, 3))

    def _roi_targets(self, proposals, gt_boxes, gt_labels):
        c = self.cfg
        rois = torch.cat([proposals, gt_boxes]) if gt_boxes.numel() else proposals
        matched = match_boxes(rois, gt_boxes, c["roi_fg_iou"], c["roi_fg_iou"], False)
        if not c["ohem"]:
            pos, neg = sample_labels(matched, c["roi_batch_size"], c["roi_positive_fraction"])
            keep = torch.cat([pos, neg])
            rois, matched = rois[keep], matched[keep]
        fg = matched >= 0
        labels = torch.zeros_like(matched)
        labels[fg] = gt_labels[matched[fg]] + 1
        targets = torch.zeros_like(rois)
        if fg.any():
            targets[fg] = self.head_coder.encode(gt_boxes[matched[fg]], rois[fg])
        return rois, labels, targets

    def _head_loss(self, cls, reg, labels, targets, counts):
        ce = F.cross_entropy(cls, labels, reduction="none")
        fg = (labels > 0).to(reg.dtype)[:, None]
        l1 = (F.smooth_l1_loss(reg, targets, beta=1 / 9, reduction="none") * fg).sum(dim=1)
        if self.cfg["ohem"]:  # keep the hardest RoIs of each image
            b = int(self.cfg["roi_batch_size"])
            keep, start = [], 0
            for n in counts:
                loss = (ce[start:start + n] + l1[start:start + n]).detach()
                keep.append(loss.topk(min(b, n)).indices + start)
                start += n
            keep = torch.cat(keep)
            ce, l1 = ce[keep], l1[keep]
        n = max(ce.numel(), 1)
        return ce.sum() / n, l1.sum() / n

    # ---------------------------------------------------------------- forward
    def forward(self, images: torch.Tensor, targets: list[dict] | None = None,
                image_sizes: list[tuple[int, int]] | None = None):
        if self.training and targets is None:
            raise ValueError("R-FCN in training mode needs targets (boxes and labels)")
        feat = self.features(images)
        anchors = self.anchor_generator(feat)
        obj, reg = self._rpn(feat)
        n = images.shape[0]
        full_hw = _shape_hw(images)
        hws = [full_hw if image_sizes is None else
               torch.tensor(image_sizes[i], dtype=torch.float32, device=images.device)
               for i in range(n)]
        training = targets is not None
        proposals = [self._proposals(anchors, obj[i].detach(), reg[i].detach(), hws[i], training)
                     for i in range(n)]
        if training:
            return self._losses(feat, anchors, obj, reg, proposals, targets)
        rois = torch.cat([
            torch.cat([torch.full_like(p[:, :1], i), p], dim=1) for i, p in enumerate(proposals)
        ])
        cls, deltas = self._head(feat, rois)
        out, start = [], 0
        for i, p in enumerate(proposals):
            count = p.shape[0]
            out.append(self._detections(cls[start:start + count], deltas[start:start + count],
                                        p, hws[i]))
            start = start + count
        return out

    def _losses(self, feat, anchors, obj, reg, proposals, targets):
        rpn_cls, rpn_box, all_rois, all_labels, all_targets, counts = [], [], [], [], [], []
        for i, t in enumerate(targets):
            gt_boxes = t["boxes"].to(feat.dtype)
            gt_labels = t["labels"].to(torch.int64)
            lc, lb = self._rpn_loss(anchors, obj[i], reg[i], gt_boxes)
            rpn_cls.append(lc)
            rpn_box.append(lb)
            rois, labels, tg = self._roi_targets(proposals[i], gt_boxes, gt_labels)
            all_rois.append(torch.cat([torch.full_like(rois[:, :1], i), rois], dim=1))
            all_labels.append(labels)
            all_targets.append(tg)
            counts.append(rois.shape[0])
        cls, deltas = self._head(feat, torch.cat(all_rois))
        head_cls, head_box = self._head_loss(cls, deltas, torch.cat(all_labels),
                                             torch.cat(all_targets), counts)
        return {
            "rpn_cls": torch.stack(rpn_cls).mean(),
            "rpn_box": torch.stack(rpn_box).mean(),
            "cls": head_cls,
            "box": head_box,
        }

    def _detections(self, cls, deltas, proposals, hw) -> dict:
        c = self.cfg
        num = self.num_classes
        probs = F.softmax(cls, dim=1)[:, 1:]  # (R, C)
        boxes = _clip(self.head_coder.decode(deltas, proposals), hw)
        boxes = boxes[:, None, :].expand(-1, num, 4).reshape(-1, 4)
        scores = probs.reshape(-1)
        labels = torch.arange(num, device=cls.device).repeat(proposals.shape[0])
        keep = torch.nonzero(scores > float(c["score_thresh"])).flatten()
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = remove_small_boxes(boxes, float(c["min_box_size"]))
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, float(c["nms_thresh"]))[: int(c["max_detections"])]
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def build_rfcn(arch: dict, pretrained_backbone: str | Path | None = None) -> RFCN:
    """An :class:`RFCN` from a model card's ``architecture`` dict (see :data:`DEFAULTS`)."""
    cfg = {k: v for k, v in arch.items() if k not in ("name", "backbone", "num_classes")}
    name = arch.get("backbone", DEFAULTS["backbone"])
    if name not in RESNETS:
        raise ValueError(f"R-FCN needs a ResNet backbone ({sorted(RESNETS)}), got {name!r}")
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
    from fcn_perception.weights_io import WeightsError, load_state_dict

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
    float32 (0 in padding), ``labels`` ``(D,)`` int64 (-1 in padding) and
    ``num_detections`` ``()`` int64, the number of valid rows.
    """

    INPUT_NAMES = ["image"]
    OUTPUT_NAMES = ["boxes", "scores", "labels", "num_detections"]

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
        num = torch._shape_as_tensor(det["scores"])[0]
        return boxes, scores, labels, num


def export_onnx(model: RFCN, path: str | Path, height: int = 360, width: int = 480,
                opset: int = 17) -> Path:
    """Export the whole detector (backbone, RPN, proposals, both NMS steps, PSRoI head
    and box decoding) to one ONNX graph with dynamic input height and width."""
    import warnings

    path = Path(path)
    wrapper = RFCNExport(model)
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
    _fix_output_shapes(path, wrapper.max_detections)
    return path


def _fix_output_shapes(path: Path, max_detections: int) -> None:
    """Record the fixed output sizes (tracing leaves the padded slices symbolic)."""
    import onnx

    model = onnx.load(str(path))
    dims = {"boxes": [max_detections, 4], "scores": [max_detections],
            "labels": [max_detections], "num_detections": []}
    for out in model.graph.output:
        shape = out.type.tensor_type.shape
        for dim, value in zip(shape.dim, dims[out.name]):
            dim.Clear()
            dim.dim_value = value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
