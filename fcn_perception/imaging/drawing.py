"""Palette colouring, overlay blending and box drawing on numpy RGB images (no ROS)."""
from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image, ImageDraw


def palette_lut(palette, num_classes: int | None = None) -> np.ndarray:
    """A ``(256, 3)`` uint8 lookup table from a list of RGB triples.

    Class ids without a palette entry get a deterministic, distinct colour; id 255
    (and anything past the table) stays black.
    """
    lut = np.zeros((256, 3), np.uint8)
    palette = [] if palette is None else list(palette)
    count = max(len(palette), num_classes or 0)
    for i in range(min(count, 255)):
        if i < len(palette):
            lut[i] = np.asarray(palette[i], np.int64).clip(0, 255)
        else:  # golden-ratio hue walk, bright enough to see on road scenes
            lut[i] = _hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.75, 0.95)
    return lut


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def colorize(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8 class ids -> ``(H, W, 3)`` uint8 RGB through a palette LUT."""
    return lut[labels]


def blend(rgb: np.ndarray, color: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) * rgb + alpha * color`` in uint8 (integer arithmetic, rounded)."""
    a = int(round(float(alpha) * 256))
    if a <= 0:
        return rgb.copy()
    if a >= 256:
        return color.copy()
    out = rgb.astype(np.uint16) * (256 - a)
    out += color.astype(np.uint16) * a
    out += 128
    return (out >> 8).astype(np.uint8)


def draw_detections(
    rgb: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    classes: list[str],
    lut: np.ndarray,
    width: int = 2,
) -> np.ndarray:
    """A copy of ``rgb`` with each box outlined in its class colour and labelled
    ``"<name> <score>"`` on a filled tab above (or inside, at the top edge) the box."""
    img = Image.fromarray(np.ascontiguousarray(rgb))
    if len(scores) == 0:
        return np.array(img)
    draw = ImageDraw.Draw(img)
    h, w = rgb.shape[:2]
    for box, score, cid in zip(np.asarray(boxes), np.asarray(scores), np.asarray(class_ids)):
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = max(0.0, min(x1, w - 1.0)), max(0.0, min(x2, w - 1.0))
        y1, y2 = max(0.0, min(y1, h - 1.0)), max(0.0, min(y2, h - 1.0))
        cid = int(cid)
        colour = tuple(int(c) for c in lut[cid % 256])
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        name = classes[cid] if 0 <= cid < len(classes) else str(cid)
        text = f"{name} {float(score):.2f}"
        left, top, right, bottom = draw.textbbox((0, 0), text)
        tw, th = right - left + 4, bottom - top + 4
        ty = y1 - th if y1 - th >= 0 else y1
        draw.rectangle((x1, ty, x1 + tw, ty + th), fill=colour)
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        draw.text((x1 + 2 - left, ty + 2 - top), text, fill=(0, 0, 0) if luminance > 128 else (255, 255, 255))
    return np.array(img)
