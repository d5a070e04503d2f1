"""Network input geometry (resize, letterbox, centre crop, region of interest) and the
exact mapping of labels, confidence and boxes back to input pixels."""
from __future__ import annotations

import numpy as np
import pytest

from fcn_perception.inference.geometry import (
    UNSEEN_LABEL,
    Geometry,
    Rect,
    resize_image,
)
from fcn_perception.inference.postprocess import (
    confidence_from_logits,
    detection_result,
    segmentation_result,
)


def _coordinate_image(h: int, w: int) -> np.ndarray:
    """Pixel (y, x) holds (x, y, 0) (sizes up to 256)."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.uint8)


def test_default_geometry_is_todays_resize():
    p = Geometry(size=(90, 120)).place((360, 640))
    assert p.whole_frame and not p.padded
    assert p.region == Rect(0, 0, 360, 640) and p.content == Rect(0, 0, 90, 120)
    rgb = np.zeros((360, 640, 3), np.uint8)
    img, resize_to = p.network_image(rgb)
    assert img is rgb and resize_to == (90, 120)  # the backend resizes, as before
    native = Geometry().place((360, 640))
    assert native.net_hw == (360, 640) and native.whole_frame


def test_letterbox_keeps_the_aspect_and_pads_with_the_fill():
    g = Geometry(size=(96, 96), policy="letterbox", fill=(124, 116, 104))
    p = g.place((360, 640))  # 16:9 into a square: 54 rows of content, centred
    assert p.content == Rect(21, 0, 75, 96) and p.padded
    img, resize_to = p.network_image(np.full((360, 640, 3), 7, np.uint8), g.fill)
    assert img.shape == (96, 96, 3) and resize_to == (96, 96)
    assert (img[:21] == (124, 116, 104)).all() and (img[75:] == (124, 116, 104)).all()
    assert (img[21:75] == 7).all()
    # portrait frame: pillarbox
    q = g.place((640, 360))
    assert q.content == Rect(0, 21, 96, 75)


def test_centre_crop_cuts_the_sides_of_a_wide_frame():
    p = Geometry(size=(90, 120), policy="crop").place((360, 640))
    assert p.region == Rect(0, 80, 360, 560)  # 480 of 640 columns, centred: 4:3
    assert p.content == Rect(0, 0, 90, 120)
    tall = Geometry(size=(90, 120), policy="crop").place((600, 480))
    assert tall.region == Rect(120, 0, 480, 480)


@pytest.mark.parametrize("policy", ["resize", "letterbox", "crop"])
@pytest.mark.parametrize("roi", [None, (100, 40, 300, 200), (500, 300, 0, 0)])
def test_points_map_back_exactly(policy, roi):
    """to_input inverts to_network for every policy, with and without a ROI, and the
    region's corners land on the content's corners."""
    p = Geometry(size=(72, 96), policy=policy, roi=roi).place((360, 640))
    rng = np.random.default_rng(0)
    pts = rng.uniform([p.region.x0, p.region.y0], [p.region.x1, p.region.y1], (50, 2))
    np.testing.assert_allclose(p.to_input(p.to_network(pts)), pts, atol=1e-9)
    corners = np.array([[p.region.x0, p.region.y0], [p.region.x1, p.region.y1]], float)
    np.testing.assert_allclose(p.to_network(corners), [[p.content.x0, p.content.y0],
                                                       [p.content.x1, p.content.y1]])


@pytest.mark.parametrize("policy", ["resize", "letterbox", "crop"])
def test_network_image_pixels_come_from_where_the_mapping_says(policy):
    """A frame whose pixels encode their coordinates: every content pixel of the network
    image holds (nearly) the input coordinate the mapping gives for its centre."""
    h, w = 200, 256
    frame = _coordinate_image(h, w)
    g = Geometry(size=(60, 60), policy=policy, roi=(40, 20, 200, 170))
    p = g.place((h, w))
    img, resize_to = p.network_image(frame)
    if tuple(img.shape[:2]) != tuple(resize_to):  # resize/crop: what the backend does
        img = resize_image(img, resize_to)
    c = p.content
    ys, xs = np.mgrid[c.y0:c.y1, c.x0:c.x1]
    mapped = p.to_input(np.stack([xs + 0.5, ys + 0.5], -1))
    # antialiased bilinear averages neighbours: within a few pixels of the centre
    got_x = img[c.y0:c.y1, c.x0:c.x1, 0].astype(float)
    got_y = img[c.y0:c.y1, c.x0:c.x1, 1].astype(float)
    inner = (slice(2, -2), slice(2, -2))
    assert np.abs(got_x - (mapped[..., 0] - 0.5))[inner].max() <= 3.0
    assert np.abs(got_y - (mapped[..., 1] - 0.5))[inner].max() <= 3.0


def test_roi_is_clipped_and_rejected_outside():
    g = Geometry(roi=(600, 300, 100, 100))
    assert g.region_of((360, 640)) == Rect(300, 600, 360, 640)
    with pytest.raises(ValueError, match="outside"):
        Geometry(roi=(700, 0, 10, 10)).place((360, 640))
    assert Geometry(roi=(0, 0, 0, 0)).roi is None
    with pytest.raises(ValueError, match="aspect policy"):
        Geometry(policy="squash")
    with pytest.raises(ValueError, match="both"):
        Geometry.from_params(height=90, width=0)
    assert Geometry.from_params(card_size=[90, 120]).size == (90, 120)
    assert Geometry.from_params(height=45, width=60, card_size=[90, 120]).size == (45, 60)


def test_labels_come_back_at_the_input_resolution_with_unseen_pixels_marked():
    """A network answer that is a function of the canvas coordinate maps back onto the
    input coordinate the placement says, outside the ROI 255."""
    g = Geometry(size=(50, 80), policy="letterbox", roi=(40, 30, 200, 100))
    p = g.place((240, 320))
    canvas = np.zeros((1, 50, 80), np.uint8)
    canvas[0, :, 40:] = 1  # right half of the canvas -> right half of the ROI
    canvas[0, :p.content.y0] = 9  # padding must not leak into the frame
    canvas[0, p.content.y1:] = 9
    labels = segmentation_result({"labels": canvas}, (240, 320), placement=p).labels
    assert labels.shape == (240, 320)
    assert (labels[:30] == UNSEEN_LABEL).all() and (labels[:, :40] == UNSEEN_LABEL).all()
    assert (labels[130:] == UNSEEN_LABEL).all() and (labels[:, 240:] == UNSEEN_LABEL).all()
    roi = labels[30:130, 40:240]
    assert (roi[:, :100] == 0).all() and (roi[:, 100:] == 1).all()


def test_logits_and_confidence_map_back_through_the_placement():
    p = Geometry(size=(30, 40), policy="crop").place((60, 100))  # region x 10..90
    assert p.region == Rect(0, 10, 60, 90)
    logits = np.zeros((1, 3, 30, 40), np.float32)
    logits[0, 2, :, 20:] = 5.0  # class 2, confident, on the right half
    r = segmentation_result({"logits": logits}, (60, 100), placement=p, confidence=True)
    assert r.labels.shape == r.confidence.shape == (60, 100)
    assert (r.labels[:, :10] == UNSEEN_LABEL).all() and (r.confidence[:, :10] == 0).all()
    assert (r.labels[:, 52:90] == 2).all() and (r.labels[:, 10:48] == 0).all()
    top = np.exp(5) / (np.exp(5) + 2)
    np.testing.assert_allclose(r.confidence[:, 60:90], top, rtol=1e-5)
    np.testing.assert_allclose(r.confidence[:, 10:40], 1 / 3, rtol=1e-5)


def test_confidence_from_logits_is_the_top_softmax_probability():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(1, 5, 6, 7)).astype(np.float32) * 4
    conf = confidence_from_logits(scores, (6, 7))
    e = np.exp(scores[0] - scores[0].max(0))
    np.testing.assert_allclose(conf, (e / e.sum(0)).max(0), rtol=1e-5)
    assert conf.dtype == np.float32 and ((conf > 0.2) & (conf <= 1)).all()
    up = confidence_from_logits(scores, (12, 14))
    assert up.shape == (12, 14)


@pytest.mark.parametrize("policy", ["resize", "letterbox", "crop"])
def test_boxes_map_back_to_input_pixels(policy):
    p = Geometry(size=(60, 80), policy=policy, roi=(20, 10, 160, 100)).place((200, 300))
    truth = np.array([[40.0, 30.0, 120.0, 90.0]], np.float32)  # input pixels, in the ROI
    (x1, y1), (x2, y2) = p.to_network(truth.reshape(2, 2))
    outputs = {"boxes": np.array([[x1, y1, x2, y2]], np.float32),
               "scores": np.array([0.9], np.float32), "labels": np.array([0])}
    r = detection_result(outputs, (200, 300), p.net_hw, placement=p)
    np.testing.assert_allclose(r.boxes, truth, atol=1e-3)
    # a box over the padding / beyond the region is clipped to the region
    outputs["boxes"] = np.array([[-50, -50, 500, 500]], np.float32)
    r = detection_result(outputs, (200, 300), p.net_hw, placement=p)
    reg = p.region
    np.testing.assert_allclose(r.boxes, [[reg.x0, reg.y0, reg.x1, reg.y1]])
