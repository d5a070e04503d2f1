"""Backend outputs (the :mod:`~fcn_perception.inference.contract` tensors) -> results
at the input image's resolution."""
from __future__ import annotations

import numpy as np

from fcn_perception.inference.results import DetectionResult, SegmentationResult


def to_numpy(x) -> np.ndarray:
    """numpy view of a numpy array or a (CPU or CUDA) torch tensor."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def argmax_channels(scores: np.ndarray) -> np.ndarray:
    """``(C, h, w)`` -> ``(h, w)`` uint8 index of the first maximum (as ``argmax``), by a
    running maximum over channels: contiguous passes instead of a strided reduction."""
    best = scores[0].copy()
    index = np.zeros(best.shape, np.uint8)
    for c in range(1, scores.shape[0]):
        greater = scores[c] > best
        np.maximum(best, scores[c], out=best)
        index[greater] = c
    return index


def _bilinear_taps(n_in: int, n_out: int):
    """PyTorch's ``align_corners=False`` bilinear source taps: ``(i0, i1, w1)`` arrays."""
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


def upsampled_argmax(scores: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """``argmax`` of the bilinear upsampling (``align_corners=False``) of ``(C, h, w)``
    scores to ``out_hw``, computed without upsampling every channel everywhere.

    Bilinear upsampling makes each output a convex combination of (up to) four input
    cells; where those cells share their argmax class ``k``, ``k`` is also the argmax of
    the combination (every inequality ``s_k >= s_j`` survives a convex combination, and
    strict ones stay strict, so first-index tie-breaking agrees too).  Only outputs
    whose cells disagree -- near class boundaries, a small fraction -- are interpolated
    in full.  Equal to ``F.interpolate(...).argmax(1)`` up to float rounding.
    """
    c, h, w = scores.shape
    H, W = int(out_hw[0]), int(out_hw[1])
    low = argmax_channels(scores)
    if (h, w) == (H, W):
        return low
    y0, y1, wy = _bilinear_taps(h, H)
    x0, x1, wx = _bilinear_taps(w, W)
    a, b = low[y0][:, x0], low[y0][:, x1]
    cc, d = low[y1][:, x0], low[y1][:, x1]
    labels = a.copy()
    ys, xs = np.nonzero((a != b) | (a != cc) | (a != d))
    if len(ys):
        fy, fx = wy[ys], wx[xs]
        r0, r1, c0, c1 = y0[ys], y1[ys], x0[xs], x1[xs]
        top = scores[:, r0, c0] * (1 - fx) + scores[:, r0, c1] * fx
        bottom = scores[:, r1, c0] * (1 - fx) + scores[:, r1, c1] * fx
        labels[ys, xs] = argmax_channels((top * (1 - fy) + bottom * fy)[:, :, None])[:, 0]
    return labels


def labels_from_logits(logits, out_hw: tuple[int, int]) -> np.ndarray:
    """``(1, C, h, w)`` scores -> ``(H, W)`` uint8 labels: the argmax of the scores
    upsampled bilinearly to ``out_hw`` (``align_corners=False``), as training evaluates a
    reduced-size network.  CUDA tensors are handled on the GPU, the rest with
    :func:`upsampled_argmax`."""
    if hasattr(logits, "is_cuda") and logits.is_cuda:
        import torch
        import torch.nn.functional as F

        with torch.inference_mode():
            t = logits if logits.dim() == 4 else logits[None]
            if tuple(t.shape[-2:]) != tuple(out_hw):
                t = F.interpolate(t.float(), size=tuple(out_hw), mode="bilinear",
                                  align_corners=False)
            return t[0].argmax(0).to(torch.uint8).cpu().numpy()
    scores = to_numpy(logits)
    scores = scores[0] if scores.ndim == 4 else scores
    return upsampled_argmax(np.ascontiguousarray(scores, np.float32), out_hw)


def confidence_from_logits(logits, out_hw: tuple[int, int]) -> np.ndarray:
    """``(1, C, h, w)`` (or ``(C, h, w)``) scores -> ``(H, W)`` float32: the top class's
    softmax probability of the scores upsampled bilinearly to ``out_hw``
    (``align_corners=False``, as :func:`labels_from_logits`), on the scores' device."""
    import torch
    import torch.nn.functional as F

    from fcn_perception.inference.optimize import top_probability

    with torch.inference_mode():
        t = logits if isinstance(logits, torch.Tensor) else torch.from_numpy(
            np.ascontiguousarray(to_numpy(logits), np.float32))
        t = (t if t.dim() == 4 else t[None]).float()
        if tuple(t.shape[-2:]) != tuple(out_hw):
            t = F.interpolate(t, size=tuple(out_hw), mode="bilinear", align_corners=False)
        return np.ascontiguousarray(top_probability(t)[0].cpu().numpy(), np.float32)


def _first(x) -> np.ndarray:
    """A map of the first (only) batch item, as numpy."""
    x = to_numpy(x)
    return x[0] if x.ndim == 3 else x


def segmentation_result(outputs: dict, input_hw: tuple[int, int], placement=None,
                        confidence: bool = False) -> SegmentationResult:
    """Contract outputs -> :class:`SegmentationResult` at ``input_hw``.

    ``logits`` (a network run at a reduced size) are upsampled bilinearly and then
    argmax-ed; ``labels`` at another size are resized nearest-neighbour, ``confidence``
    bilinearly.  With a :class:`~fcn_perception.inference.geometry.Placement` only its
    ``content`` part of the network's maps is used, resized to its ``region`` and pasted
    into the frame (:data:`~fcn_perception.inference.geometry.UNSEEN_LABEL` and
    confidence 0 outside).  ``confidence``: also fill ``SegmentationResult.confidence``
    (from the ``confidence`` output, else from ``logits``).
    """
    from fcn_perception.inference.geometry import UNSEEN_LABEL, resize_bilinear, resize_nearest

    region_hw = tuple(input_hw) if placement is None else placement.region.hw

    def cut(x):
        return x if placement is None else placement.content_of(x)

    conf = None
    if outputs.get("logits") is not None:
        scores = cut(outputs["logits"])
        labels = labels_from_logits(scores, region_hw)
        if confidence:
            conf = confidence_from_logits(scores, region_hw)
    else:
        labels = cut(_first(outputs["labels"]))
        if labels.dtype != np.uint8:
            labels = labels.astype(np.uint8)
        if labels.shape != region_hw:
            labels = resize_nearest(labels, region_hw)
        if confidence:
            if outputs.get("confidence") is None:
                raise ValueError("the backend gave no 'confidence' output for this frame")
            conf = resize_bilinear(cut(_first(outputs["confidence"])).astype(np.float32),
                                   region_hw)
    if placement is not None:
        labels = placement.paste(labels, UNSEEN_LABEL)
        conf = None if conf is None else placement.paste(conf, 0.0)
    return SegmentationResult(
        labels=np.ascontiguousarray(labels),
        confidence=None if conf is None else np.ascontiguousarray(conf, np.float32))


def detection_result(outputs: dict, input_hw: tuple[int, int], net_hw: tuple[int, int],
                     score_threshold: float = 0.0, max_detections: int | None = None,
                     placement=None) -> DetectionResult:
    """Padded ``boxes/scores/labels[/num_detections][/class_scores]`` ->
    :class:`DetectionResult`.

    Boxes are scaled from the network input ``net_hw`` to ``input_hw`` and clipped (with
    a :class:`~fcn_perception.inference.geometry.Placement`: mapped from its ``content``
    to its ``region`` and clipped to the region); detections below ``score_threshold``
    are dropped; at most ``max_detections`` are kept, sorted by descending score.
    """
    boxes = to_numpy(outputs["boxes"]).astype(np.float32).reshape(-1, 4)
    scores = to_numpy(outputs["scores"]).astype(np.float32).reshape(-1)
    labels = to_numpy(outputs["labels"]).reshape(-1).astype(np.int64)
    count = len(scores)
    if outputs.get("num_detections") is not None:
        count = min(count, int(to_numpy(outputs["num_detections"]).reshape(-1)[0]))
    dist = None
    if outputs.get("class_scores") is not None:
        dist = to_numpy(outputs["class_scores"]).astype(np.float32)
        dist = dist.reshape(-1, dist.shape[-1])[:count]
    boxes, scores, labels = boxes[:count], scores[:count], labels[:count]
    keep = (labels >= 0) & (scores >= score_threshold)
    order = np.flatnonzero(keep)[np.argsort(-scores[keep], kind="stable")]
    if max_detections is not None:
        order = order[:max_detections]
    boxes, scores, labels = boxes[order], scores[order], labels[order]
    dist = dist[order] if dist is not None else None
    (ih, iw), (nh, nw) = input_hw, net_hw
    if placement is not None:
        boxes = placement.boxes_to_input(boxes)
    elif (ih, iw) != (nh, nw):
        boxes = boxes * np.array([iw / nw, ih / nh, iw / nw, ih / nh], np.float32)
    if placement is None:
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, iw)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, ih)
    return DetectionResult(boxes=np.ascontiguousarray(boxes, np.float32),
                           scores=np.ascontiguousarray(scores), class_ids=labels,
                           class_scores=None if dist is None else np.ascontiguousarray(dist))
