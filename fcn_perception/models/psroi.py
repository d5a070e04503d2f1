"""Position-sensitive RoI average pooling (Dai et al. 2016) from tensor operations.

The pooled value of bin ``(i, j)`` of output channel ``c`` is the mean of input
channel ``c*k*k + i*k + j`` over the bin's cells.  Bin sums come from an integral
image (two cumulative sums), so the operation is plain ``CumSum``/``Gather``/
arithmetic in ONNX, needs no custom operator, and is differentiable.

Binning follows torchvision's ``ps_roi_pool`` exactly (CPU kernel):

* RoI corners are scaled by ``spatial_scale`` and rounded half away from zero;
* RoI width/height are at least one cell; bin size = RoI size / k (float);
* bin ``i`` spans ``[floor(i * bin), ceil((i + 1) * bin))`` cells from the RoI start,
  clipped to ``[0, H - 1]`` (torchvision's forward never reaches the last row and
  column); an empty bin pools to 0.

``include_last=True`` clips to ``[0, H]`` instead, so bins may cover the last row and
column; R-FCN uses that.  It equals torchvision's result on the input padded by one
zero row and column at the bottom and right.
"""
from __future__ import annotations

import torch


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.floor(torch.abs(x) + 0.5)


def ps_roi_pool(features: torch.Tensor, rois: torch.Tensor, output_size: int,
                spatial_scale: float, include_last: bool = False) -> torch.Tensor:
    """Position-sensitive RoI average pooling.

    Args:
        features: ``(N, C_out * k * k, H, W)`` position-sensitive maps.
        rois: ``(R, 5)`` rows ``batch_index, x1, y1, x2, y2`` in input pixels.
        output_size: ``k`` (bins per side).
        spatial_scale: feature cells per input pixel (``1 / stride``).
        include_last: clip bins to ``H``/``W`` instead of ``H - 1``/``W - 1``.

    Returns:
        ``(R, C_out, k, k)`` pooled values (same as ``torchvision.ops.ps_roi_pool``
        when ``include_last`` is false).
    """
    k = int(output_size)
    n, channels, height, width = features.shape
    c_out = channels // (k * k)
    # integral image with a leading zero row and column: (N, C, H + 1, W + 1)
    integral = torch.nn.functional.pad(features.cumsum(2).cumsum(3), (1, 0, 1, 0))
    flat = integral.reshape(-1)

    rois = rois.to(features.dtype)
    batch = rois[:, 0].to(torch.int64)
    scaled = _round_half_away(rois[:, 1:5] * spatial_scale)
    x0, y0 = scaled[:, 0], scaled[:, 1]
    roi_w = torch.clamp(scaled[:, 2] - x0, min=1.0)
    roi_h = torch.clamp(scaled[:, 3] - y0, min=1.0)
    bin_w = roi_w / k
    bin_h = roi_h / k

    steps = torch.arange(k, dtype=features.dtype, device=features.device)
    hi_h = height if include_last else height - 1
    hi_w = width if include_last else width - 1
    h_lim = torch.as_tensor(hi_h, dtype=features.dtype, device=features.device)
    w_lim = torch.as_tensor(hi_w, dtype=features.dtype, device=features.device)
    zero = torch.zeros((), dtype=features.dtype, device=features.device)

    def bounds(start, size, lim):  # (R, k) start and end cell of each bin
        lo = torch.floor(steps[None, :] * size[:, None]) + start[:, None]
        hi = torch.ceil((steps[None, :] + 1) * size[:, None]) + start[:, None]
        return (torch.minimum(torch.maximum(lo, zero), lim),
                torch.minimum(torch.maximum(hi, zero), lim))

    hs, he = bounds(y0, bin_h, h_lim)
    ws, we = bounds(x0, bin_w, w_lim)
    # (R, k, k) corners, broadcast over rows i (h) and columns j (w)
    hs, he = hs[:, :, None], he[:, :, None]
    ws, we = ws[:, None, :], we[:, None, :]
    area = (he - hs) * (we - ws)
    valid = (he > hs) & (we > ws)

    # channel of (c, i, j) = c*k*k + i*k + j, plane index of (roi, c, i, j)
    chan = torch.arange(c_out * k * k, device=features.device).reshape(1, c_out, k, k)
    plane = batch.reshape(-1, 1, 1, 1) * channels + chan  # (R, C_out, k, k)
    row_len = width + 1
    plane_len = (height + 1) * row_len
    base = plane * plane_len

    def at(h, w):  # integral values at integer corners (R, k, k) -> (R, C_out, k, k)
        off = (h * row_len + w).to(torch.int64)[:, None, :, :]
        return flat[base + off]

    total = at(he, we) - at(hs, we) - at(he, ws) + at(hs, ws)
    out = total / torch.clamp(area, min=1.0)[:, None, :, :]
    return torch.where(valid[:, None, :, :], out, torch.zeros_like(out))
