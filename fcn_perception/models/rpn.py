"""Region proposal network (Ren et al. 2015) on one feature map, as R-FCN uses it.

Per feature cell: a 3x3 conv + ReLU, then ``A = len(sizes) * len(ratios)`` objectness
logits and ``4A`` box deltas (weights 1, 1, 1, 1) relative to the cell's anchors
(:class:`fcn_perception.models.anchors.AnchorGenerator`).

Training: anchors with IoU >= ``fg_iou`` to a ground-truth box are positive (and each
box's best anchors), < ``bg_iou`` negative; ``batch_size`` anchors per image, at most
``positive_fraction`` positive; binary cross-entropy and smooth-L1 (beta 1/9), both
normalised by the number of sampled anchors.  Proposals: the ``pre_nms`` best decoded
anchors, clipped to the image, small boxes removed, NMS at ``nms_thresh``, the best
``post_nms`` kept (separate counts for training and inference).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms, remove_small_boxes

from fcn_perception.models.anchors import AnchorGenerator
from fcn_perception.models.box_coder import BoxCoder, match_boxes, sample_labels


def clip_boxes(boxes: torch.Tensor, hw: torch.Tensor) -> torch.Tensor:
    """Clip ``(N, 4)`` ``x1, y1, x2, y2`` boxes to an image of size ``hw`` (float ``(2,)``)."""
    x = torch.minimum(boxes[:, 0::2].clamp(min=0), hw[1])
    y = torch.minimum(boxes[:, 1::2].clamp(min=0), hw[0])
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def topk_count(x: torch.Tensor, k: int):
    """``min(k, len(x))`` that stays dynamic when traced for ONNX."""
    if not torch.jit.is_tracing():
        return min(k, x.shape[0])
    n = torch._shape_as_tensor(x)[0:1]
    return torch.min(torch.cat([torch.tensor([k], dtype=n.dtype), n]))


class RegionProposalNetwork(nn.Module):
    """RPN on a ``(N, channels, H, W)`` feature map of stride ``stride``.

    ``forward(feature, image_hw, targets=None)`` returns ``(proposals, losses)``:
    ``proposals`` is one ``(P, 4)`` tensor per image (``P <= post_nms``), ``losses``
    ``{"rpn_cls", "rpn_box"}`` when ``targets`` (dicts with ``boxes`` ``(G, 4)``) are
    given, else empty.  ``image_hw`` is one float ``(2,)`` tensor ``(h, w)`` per image.
    """

    def __init__(self, channels: int, sizes: Sequence[float], ratios: Sequence[float],
                 stride: int, pre_nms_train: int = 2000, post_nms_train: int = 300,
                 pre_nms_test: int = 1000, post_nms_test: int = 150, nms_thresh: float = 0.7,
                 batch_size: int = 256, positive_fraction: float = 0.5, fg_iou: float = 0.7,
                 bg_iou: float = 0.3, min_box_size: float = 1.0) -> None:
        super().__init__()
        self.anchor_generator = AnchorGenerator(sizes, ratios, stride)
        a = self.anchor_generator.num_anchors
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.cls = nn.Conv2d(channels, a, 1)
        self.reg = nn.Conv2d(channels, 4 * a, 1)
        for m in (self.conv, self.cls, self.reg):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        self.coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.pre_nms = {True: int(pre_nms_train), False: int(pre_nms_test)}
        self.post_nms = {True: int(post_nms_train), False: int(post_nms_test)}
        self.nms_thresh = float(nms_thresh)
        self.batch_size, self.positive_fraction = int(batch_size), float(positive_fraction)
        self.fg_iou, self.bg_iou = float(fg_iou), float(bg_iou)
        self.min_box_size = float(min_box_size)

    def head(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objectness ``(N, H*W*A)`` and deltas ``(N, H*W*A, 4)`` in anchor order."""
        n = feature.shape[0]
        t = F.relu(self.conv(feature))
        obj = self.cls(t).permute(0, 2, 3, 1).reshape(n, -1)
        reg = self.reg(t)
        a = self.anchor_generator.num_anchors
        reg = reg.reshape(n, a, 4, reg.shape[-2], reg.shape[-1]).permute(0, 3, 4, 1, 2)
        return obj, reg.reshape(n, -1, 4)

    def propose(self, anchors: torch.Tensor, obj: torch.Tensor, reg: torch.Tensor,
                hw: torch.Tensor, training: bool) -> torch.Tensor:
        """``(P, 4)`` proposals of one image from its ``(M,)`` logits and ``(M, 4)`` deltas."""
        scores, idx = obj.topk(topk_count(obj, self.pre_nms[training]))
        boxes = clip_boxes(self.coder.decode(reg[idx], anchors[idx]), hw)
        keep = remove_small_boxes(boxes, self.min_box_size)
        boxes, scores = boxes[keep], scores[keep]
        keep = nms(boxes, scores, self.nms_thresh)[: self.post_nms[training]]
        return boxes[keep]

    def loss(self, anchors: torch.Tensor, obj: torch.Tensor, reg: torch.Tensor,
             gt_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objectness and box losses of one image (``(M,)``, ``(M, 4)``, ``(G, 4)``)."""
        matched = match_boxes(anchors, gt_boxes, self.fg_iou, self.bg_iou, True)
        pos, neg = sample_labels(matched, self.batch_size, self.positive_fraction)
        sampled = torch.cat([pos, neg])
        target = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]).to(obj.dtype)
        cls = F.binary_cross_entropy_with_logits(obj[sampled], target, reduction="sum")
        box = reg.sum() * 0.0  # keeps every parameter in the graph (DDP) without positives
        if pos.numel():
            t = self.coder.encode(gt_boxes[matched[pos]], anchors[pos])
            box = F.smooth_l1_loss(reg[pos], t, beta=1 / 9, reduction="sum")
        n = max(sampled.numel(), 1)
        return cls / n, box / n

    def forward(self, feature: torch.Tensor, image_hw: list[torch.Tensor],
                targets: list[dict] | None = None):
        anchors = self.anchor_generator(feature)
        obj, reg = self.head(feature)
        training = targets is not None
        proposals = [self.propose(anchors, obj[i].detach(), reg[i].detach(), image_hw[i],
                                  training) for i in range(feature.shape[0])]
        if not training:
            return proposals, {}
        cls, box = zip(*(self.loss(anchors, obj[i], reg[i], t["boxes"].to(feature.dtype))
                         for i, t in enumerate(targets)))
        return proposals, {"rpn_cls": torch.stack(cls).mean(), "rpn_box": torch.stack(box).mean()}
