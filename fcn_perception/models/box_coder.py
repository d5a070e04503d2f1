"""Box parameterisation and IoU-based matching for the RPN and the R-FCN head.

Boxes are ``x1, y1, x2, y2`` in input pixels (continuous; width ``x2 - x1``).  A box
relative to a reference box (anchor or proposal) with centre ``(x, y)`` and size
``(w, h)`` is encoded as (Girshick et al., used by Faster R-CNN and R-FCN)::

    tx = wx (x' - x) / w,  ty = wy (y' - y) / h,  tw = ww log(w' / w),  th = wh log(h' / h)

and decoded as ``x' = x + w tx / wx``, ``w' = w exp(tw / ww)`` (and likewise for y, h).
The weights ``(wx, wy, ww, wh)`` only rescale the targets: ``(1, 1, 1, 1)`` for the
RPN and ``(10, 10, 5, 5)`` for the detection head, as in torchvision.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.ops import box_iou

BBOX_CLIP = math.log(1000.0 / 16)


class BoxCoder:
    def __init__(self, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 clip: float = BBOX_CLIP) -> None:
        self.weights = tuple(float(w) for w in weights)
        self.clip = clip

    def encode(self, boxes: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Targets ``(N, 4)`` that turn ``reference`` ``(N, 4)`` into ``boxes`` ``(N, 4)``."""
        wx, wy, ww, wh = self.weights
        rw = reference[:, 2] - reference[:, 0]
        rh = reference[:, 3] - reference[:, 1]
        rx = reference[:, 0] + 0.5 * rw
        ry = reference[:, 1] + 0.5 * rh
        bw = boxes[:, 2] - boxes[:, 0]
        bh = boxes[:, 3] - boxes[:, 1]
        bx = boxes[:, 0] + 0.5 * bw
        by = boxes[:, 1] + 0.5 * bh
        return torch.stack([wx * (bx - rx) / rw, wy * (by - ry) / rh,
                            ww * torch.log(bw / rw), wh * torch.log(bh / rh)], dim=1)

    def decode(self, deltas: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Boxes ``(N, 4)`` from targets ``(N, 4)`` relative to ``reference`` ``(N, 4)``."""
        wx, wy, ww, wh = self.weights
        rw = reference[:, 2] - reference[:, 0]
        rh = reference[:, 3] - reference[:, 1]
        rx = reference[:, 0] + 0.5 * rw
        ry = reference[:, 1] + 0.5 * rh
        dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
        dw = torch.clamp(deltas[:, 2] / ww, max=self.clip)
        dh = torch.clamp(deltas[:, 3] / wh, max=self.clip)
        x, y = rx + dx * rw, ry + dy * rh
        w, h = rw * torch.exp(dw), rh * torch.exp(dh)
        return torch.stack([x - 0.5 * w, y - 0.5 * h, x + 0.5 * w, y + 0.5 * h], dim=1)


def match_boxes(reference: torch.Tensor, gt_boxes: torch.Tensor, high: float, low: float,
                allow_low_quality: bool) -> torch.Tensor:
    """Assign each reference box to a ground-truth box by IoU.

    Returns ``(N,)`` int64: the matched ground-truth index where the best IoU is
    ``>= high``; ``-1`` (negative) where it is ``< low``; ``-2`` (ignored) in between.
    With ``allow_low_quality``, every ground-truth box also claims the reference
    boxes that overlap it best (the RPN rule, so every object has an anchor).
    """
    n = reference.shape[0]
    if gt_boxes.numel() == 0:
        return torch.full((n,), -1, dtype=torch.int64, device=reference.device)
    iou = box_iou(gt_boxes, reference)  # (G, N)
    best, idx = iou.max(dim=0)
    matched = idx.clone()
    matched[best < high] = -2
    matched[best < low] = -1
    if allow_low_quality:
        best_per_gt = iou.max(dim=1, keepdim=True).values
        gt_i, ref_i = torch.nonzero((iou == best_per_gt) & (best_per_gt > 0), as_tuple=True)
        matched[ref_i] = idx[ref_i]
    return matched


def sample_labels(matched: torch.Tensor, batch_size: int, positive_fraction: float,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random positives (``matched >= 0``) and negatives (``== -1``) for the loss.

    At most ``batch_size * positive_fraction`` positives; negatives fill the rest.
    Returns the index tensors ``(pos, neg)``.
    """
    pos = torch.nonzero(matched >= 0).flatten()
    neg = torch.nonzero(matched == -1).flatten()
    n_pos = min(pos.numel(), int(batch_size * positive_fraction))
    n_neg = min(neg.numel(), batch_size - n_pos)
    pos = pos[torch.randperm(pos.numel(), generator=generator, device=pos.device)[:n_pos]]
    neg = neg[torch.randperm(neg.numel(), generator=generator, device=neg.device)[:n_neg]]
    return pos, neg
