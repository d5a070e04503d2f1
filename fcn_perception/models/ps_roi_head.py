"""R-FCN's detection head: position-sensitive score and regression maps, PSRoI pooling,
voting, and the per-class post-processing (Dai et al. 2016).

A 1x1 conv + ReLU reduces the shared features to ``head_channels``; 1x1 convs then give
``k*k*(C+1)`` position-sensitive class maps and ``4*k*k`` class-agnostic regression
maps.  PSRoI average pooling (:func:`fcn_perception.models.psroi.ps_roi_pool`) gives
``(R, C+1, k, k)`` and ``(R, 4, k, k)`` per RoI; voting averages the ``k*k`` bins;
softmax gives class probabilities; the deltas (weights 10, 10, 5, 5) refine each RoI.
All per-RoI work after pooling is an average, so the head costs almost nothing per RoI.

Training: RoIs (proposals plus the ground-truth boxes) with IoU >= ``fg_iou`` are
foreground, others background; ``batch_size`` RoIs per image with at most
``positive_fraction`` foreground, or with ``ohem`` online hard example mining (every
RoI is scored, the ``batch_size`` with the highest loss are back-propagated).

Inference: per-class score threshold, per-class NMS (:func:`torchvision.ops.batched_nms`),
the best ``max_detections`` kept.  Each detection carries its RoI's full class
distribution (the softmax over foreground classes; background is the remainder).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, remove_small_boxes

from fcn_perception.models.box_coder import BoxCoder, match_boxes, sample_labels
from fcn_perception.models.psroi import ps_roi_pool
from fcn_perception.models.rpn import clip_boxes


class PSRoIHead(nn.Module):
    """Position-sensitive RoI head for ``num_classes`` foreground classes.

    Args:
        channels: feature channels in; ``stride``: feature stride in input pixels.
        k: bins per side of the position-sensitive grid.
    """

    def __init__(self, channels: int, num_classes: int, stride: int, head_channels: int = 512,
                 k: int = 3, batch_size: int = 128, positive_fraction: float = 0.25,
                 fg_iou: float = 0.5, ohem: bool = False, score_thresh: float = 0.05,
                 nms_thresh: float = 0.3, max_detections: int = 100,
                 min_box_size: float = 1.0) -> None:
        super().__init__()
        self.num_classes, self.k, self.stride = int(num_classes), int(k), int(stride)
        self.conv_new = nn.Conv2d(channels, head_channels, 1)
        self.ps_cls = nn.Conv2d(head_channels, self.k * self.k * (self.num_classes + 1), 1)
        self.ps_reg = nn.Conv2d(head_channels, 4 * self.k * self.k, 1)
        nn.init.kaiming_normal_(self.conv_new.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv_new.bias)
        for m in (self.ps_cls, self.ps_reg):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        self.coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
        self.batch_size, self.positive_fraction = int(batch_size), float(positive_fraction)
        self.fg_iou, self.ohem = float(fg_iou), bool(ohem)
        self.score_thresh, self.nms_thresh = float(score_thresh), float(nms_thresh)
        self.max_detections, self.min_box_size = int(max_detections), float(min_box_size)

    def vote(self, feature: torch.Tensor, rois: torch.Tensor):
        """Voted class logits ``(R, C+1)`` and deltas ``(R, 4)`` for ``(R, 5)`` RoIs
        (rows ``batch_index, x1, y1, x2, y2``)."""
        t = F.relu(self.conv_new(feature))
        scale = 1.0 / self.stride
        cls = ps_roi_pool(self.ps_cls(t), rois, self.k, scale, include_last=True)
        reg = ps_roi_pool(self.ps_reg(t), rois, self.k, scale, include_last=True)
        return cls.mean(dim=(2, 3)), reg.mean(dim=(2, 3))

    # ---------------------------------------------------------------- training
    def targets(self, proposals: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor):
        """Sampled RoIs ``(R, 4)``, labels ``(R,)`` (0 = background) and deltas ``(R, 4)``."""
        rois = torch.cat([proposals, gt_boxes]) if gt_boxes.numel() else proposals
        matched = match_boxes(rois, gt_boxes, self.fg_iou, self.fg_iou, False)
        if not self.ohem:
            pos, neg = sample_labels(matched, self.batch_size, self.positive_fraction)
            keep = torch.cat([pos, neg])
            rois, matched = rois[keep], matched[keep]
        fg = matched >= 0
        labels = torch.zeros_like(matched)
        labels[fg] = gt_labels[matched[fg]] + 1
        deltas = torch.zeros_like(rois)
        if fg.any():
            deltas[fg] = self.coder.encode(gt_boxes[matched[fg]], rois[fg])
        return rois, labels, deltas

    def loss(self, cls, reg, labels, deltas, counts: list[int]):
        """Cross-entropy and foreground smooth-L1, averaged over the kept RoIs."""
        ce = F.cross_entropy(cls, labels, reduction="none")
        fg = (labels > 0).to(reg.dtype)[:, None]
        l1 = (F.smooth_l1_loss(reg, deltas, beta=1 / 9, reduction="none") * fg).sum(dim=1)
        if self.ohem:  # keep the hardest RoIs of each image
            keep, start = [], 0
            for n in counts:
                hard = (ce[start:start + n] + l1[start:start + n]).detach()
                keep.append(hard.topk(min(self.batch_size, n)).indices + start)
                start += n
            keep = torch.cat(keep)
            ce, l1 = ce[keep], l1[keep]
        n = max(ce.numel(), 1)
        return ce.sum() / n, l1.sum() / n

    # ---------------------------------------------------------------- inference
    def detections(self, cls: torch.Tensor, deltas: torch.Tensor, proposals: torch.Tensor,
                   hw: torch.Tensor) -> dict:
        """One image's detections: ``boxes`` ``(D, 4)``, ``scores`` ``(D,)``, ``labels``
        ``(D,)`` and ``class_scores`` ``(D, C)`` (the RoI's foreground probabilities)."""
        num = self.num_classes
        probs = F.softmax(cls, dim=1)[:, 1:]  # (R, C)
        boxes = clip_boxes(self.coder.decode(deltas, proposals), hw)
        roi = torch.arange(proposals.shape[0], device=cls.device).repeat_interleave(num)
        scores = probs.reshape(-1)
        labels = torch.arange(num, device=cls.device).repeat(proposals.shape[0])
        keep = torch.nonzero(scores > self.score_thresh).flatten()
        roi, scores, labels = roi[keep], scores[keep], labels[keep]
        cand = boxes[roi]
        keep = remove_small_boxes(cand, self.min_box_size)
        roi, scores, labels, cand = roi[keep], scores[keep], labels[keep], cand[keep]
        keep = batched_nms(cand, scores, labels, self.nms_thresh)[: self.max_detections]
        return {"boxes": cand[keep], "scores": scores[keep], "labels": labels[keep],
                "class_scores": probs[roi[keep]]}

    def forward(self, feature: torch.Tensor, proposals: list[torch.Tensor],
                image_hw: list[torch.Tensor], targets: list[dict] | None = None):
        """Losses ``{"cls", "box"}`` with ``targets``, else one detections dict per image."""
        if targets is None:
            rois = torch.cat([torch.cat([torch.full_like(p[:, :1], i), p], dim=1)
                              for i, p in enumerate(proposals)])
            cls, deltas = self.vote(feature, rois)
            out, start = [], 0
            for i, p in enumerate(proposals):
                count = p.shape[0]
                out.append(self.detections(cls[start:start + count], deltas[start:start + count],
                                           p, image_hw[i]))
                start = start + count
            return out
        rois, labels, deltas, counts = [], [], [], []
        for i, (p, t) in enumerate(zip(proposals, targets)):
            r, lab, d = self.targets(p, t["boxes"].to(feature.dtype), t["labels"].to(torch.int64))
            rois.append(torch.cat([torch.full_like(r[:, :1], i), r], dim=1))
            labels.append(lab)
            deltas.append(d)
            counts.append(r.shape[0])
        cls, reg = self.vote(feature, torch.cat(rois))
        ce, l1 = self.loss(cls, reg, torch.cat(labels), torch.cat(deltas), counts)
        return {"cls": ce, "box": l1}
