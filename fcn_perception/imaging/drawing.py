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


def detection_labels(scores: np.ndarray | None, class_ids: np.ndarray,
                     classes: list[str]) -> list[str]:
    """The text of each box's tab: ``"<name> <score>"``, or ``"<name>"`` without scores
    (ground truth)."""
    names = [classes[int(c)] if 0 <= int(c) < len(classes) else str(int(c))
             for c in np.asarray(class_ids)]
    if scores is None:
        return names
    return [f"{name} {float(score):.2f}" for name, score in zip(names, np.asarray(scores))]


def tab_origin(x1: float, y1: float, tab_w: float, tab_h: float, w: int, h: int):
    """Top-left corner of a ``tab_w x tab_h`` label tab for a box whose top-left corner is
    ``(x1, y1)`` in a ``w x h`` image: above the box, inside it at the top edge, and moved
    left (right-aligned with the image) where it would run past the right edge."""
    tx = max(0.0, min(x1, w - tab_w))
    ty = y1 - tab_h if y1 - tab_h >= 0 else max(0.0, min(y1, h - tab_h))
    return tx, ty


def draw_detections(
    rgb: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray | None,
    class_ids: np.ndarray,
    classes: list[str],
    lut: np.ndarray,
    width: int = 2,
) -> np.ndarray:
    """A copy of ``rgb`` with each box outlined in its class colour and labelled
    (:func:`detection_labels`: ``"<name> <score>"``, the name alone when ``scores`` is
    None) on a filled tab placed by :func:`tab_origin`, so it stays inside the image."""
    img = Image.fromarray(np.ascontiguousarray(rgb))
    if len(class_ids) == 0:
        return np.array(img)
    draw = ImageDraw.Draw(img)
    h, w = rgb.shape[:2]
    texts = detection_labels(scores, class_ids, classes)
    for box, cid, text in zip(np.asarray(boxes), np.asarray(class_ids), texts):
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = max(0.0, min(x1, w - 1.0)), max(0.0, min(x2, w - 1.0))
        y1, y2 = max(0.0, min(y1, h - 1.0)), max(0.0, min(y2, h - 1.0))
        colour = tuple(int(c) for c in lut[int(cid) % 256])
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        left, top, right, bottom = draw.textbbox((0, 0), text)
        tw, th = right - left + 4, bottom - top + 4
        tx, ty = tab_origin(x1, y1, tw, th, w, h)
        draw.rectangle((tx, ty, tx + tw - 1, ty + th - 1), fill=colour)
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        draw.text((tx + 2 - left, ty + 2 - top), text,
                  fill=(0, 0, 0) if luminance > 128 else (255, 255, 255))
    return np.array(img)
