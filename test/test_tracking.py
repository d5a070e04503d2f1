"""The ByteTrack tracker and its parts (no ROS): optimal assignment against brute force,
the Kalman model, ids through missed frames, low-score recovery, crossing objects, and
the shipped R-FCN on a CamVid frame panned across the image."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from fcn_perception.tracking import ByteTracker, TrackerConfig, kalman
from fcn_perception.tracking.assignment import linear_assignment
from fcn_perception.tracking.bytetrack import box_iou


def _best(cost: np.ndarray, threshold: float) -> tuple[int, float]:
    """(most pairs, least total cost) over every matching of allowed pairs."""
    n, m = cost.shape
    allowed = cost <= threshold
    best = (0, 0.0)
    for k in range(1, min(n, m) + 1):
        for rows in itertools.combinations(range(n), k):
            for cols in itertools.permutations(range(m), k):
                if all(allowed[r, c] for r, c in zip(rows, cols)):
                    total = float(sum(cost[r, c] for r, c in zip(rows, cols)))
                    if k > best[0] or (k == best[0] and total < best[1]):
                        best = (k, total)
    return best


def test_assignment_is_optimal_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, m = (int(x) for x in rng.integers(0, 6, 2))
        cost = rng.random((n, m))
        threshold = float(rng.choice([0.3, 0.6, 1.1]))
        matches, rows, cols = linear_assignment(cost, threshold)
        pairs, total = _best(cost, threshold)
        assert len(matches) == pairs
        assert cost[matches[:, 0], matches[:, 1]].sum() == pytest.approx(total)
        assert sorted([*matches[:, 0], *rows]) == list(range(n))
        assert sorted([*matches[:, 1], *cols]) == list(range(m))
        assert np.all(cost[matches[:, 0], matches[:, 1]] <= threshold)


def test_assignment_of_separate_blocks_and_inf():
    cost = np.full((4, 4), np.inf)
    cost[0, 1], cost[1, 0], cost[2, 3], cost[3, 3] = 0.1, 0.2, 0.3, 0.05
    matches, rows, cols = linear_assignment(cost, 0.5)
    assert sorted(map(tuple, matches.tolist())) == [(0, 1), (1, 0), (3, 3)]
    assert rows.tolist() == [2] and cols.tolist() == [2]


def test_kalman_follows_constant_velocity():
    box = np.array([[100.0, 50.0, 140.0, 130.0]])
    mean, cov = kalman.initiate(kalman.xyxy_to_xyah(box))
    for k in range(1, 15):
        mean, cov = kalman.predict(mean, cov)
        mean, cov = kalman.update(mean, cov, kalman.xyxy_to_xyah(box + [4 * k, 0, 4 * k, 0]))
    predicted, _ = kalman.predict(mean, cov)
    np.testing.assert_allclose(kalman.xyah_to_xyxy(predicted)[0], box[0] + [60, 0, 60, 0],
                               atol=1.0)
    assert mean[0, 4] == pytest.approx(4.0, abs=0.3)  # x velocity, pixels per frame


def _moving(frame: int) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.array([[10 + 6 * frame, 40, 60 + 6 * frame, 140],
                      [300 - 5 * frame, 60, 350 - 5 * frame, 150],
                      [200, 200 + 3 * frame, 260, 260 + 3 * frame]], np.float64)
    return boxes, np.array([0.9, 0.8, 0.7])


def test_ids_stay_through_missed_frames_and_are_unique():
    tracker = ByteTracker(TrackerConfig(track_buffer=5))
    seen = []
    for frame in range(20):
        boxes, scores = _moving(frame)
        keep = np.ones(3, bool)
        if frame in (6, 7):
            keep[1] = False  # the second object is missed for two frames
        if frame == 12:
            keep[:] = False  # nothing detected at all
        ids = tracker.update(boxes[keep], scores[keep])
        full = np.full(3, -1)
        full[keep] = ids
        seen.append(full)
    seen = np.array(seen)
    assert np.all(seen[seen >= 0].reshape(-1) > 0)
    for obj in range(3):
        column = seen[:, obj]
        assert len(set(column[column >= 0])) == 1, column  # one id per object
    assert len({seen[0, 0], seen[0, 1], seen[0, 2]}) == 3


def test_a_lost_track_is_forgotten_after_track_buffer():
    tracker = ByteTracker(TrackerConfig(track_buffer=2))
    box = np.array([[100.0, 100, 150, 200]])
    first = tracker.update(box, [0.9])[0]
    for _ in range(4):
        tracker.update(np.zeros((0, 4)), [])
    assert tracker.update(box, [0.9])[0] != first


def test_low_score_detections_continue_tracks_but_start_none():
    tracker = ByteTracker(TrackerConfig(high_threshold=0.5, low_threshold=0.1))
    box = np.array([[100.0, 100, 150, 200]])
    first = tracker.update(box, [0.9])[0]
    assert tracker.update(box + 2, [0.3])[0] == first  # occluded: low score, same track
    assert tracker.update(box + 4, [0.05])[0] == -1  # below low_threshold: ignored
    other = np.array([[400.0, 100, 450, 200]])
    assert tracker.update(other, [0.3])[0] == -1  # a low detection starts no track


def test_crossing_objects_keep_their_ids():
    """Two boxes passing each other at constant speed: the motion model carries them
    through the frames where they overlap."""
    tracker = ByteTracker()
    history = []
    for f in range(30):
        a = [100 + 8 * f, 100, 160 + 8 * f, 220]
        b = [420 - 8 * f, 105, 480 - 8 * f, 225]
        history.append(tracker.update(np.array([a, b], float), np.array([0.9, 0.85])))
    history = np.array(history)
    assert len(set(history[:, 0])) == 1 and len(set(history[:, 1])) == 1
    assert history[0, 0] != history[0, 1]


def test_shared_id_counter_and_validation():
    ids = itertools.count(1)
    a, b = ByteTracker(ids=ids), ByteTracker(ids=ids)
    box = np.array([[0.0, 0, 10, 10]])
    assert {int(a.update(box, [0.9])[0]), int(b.update(box, [0.9])[0])} == {1, 2}
    with pytest.raises(ValueError, match="low_threshold"):
        TrackerConfig(high_threshold=0.3, low_threshold=0.5)
    with pytest.raises(ValueError, match="scores"):
        a.update(box, [0.9, 0.8])


def test_box_iou():
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]], float)
    np.testing.assert_allclose(box_iou(a, a), [[1, 25 / 175], [25 / 175, 1]])


def test_shipped_rfcn_on_a_panned_camvid_frame_keeps_ids():
    """The shipped detector on a CamVid crop panned 2 px a frame: the detections matched
    to the previous frame's (IoU >= 0.5, after the shift) keep their id."""
    from factories import camvid_frames

    from fcn_perception import load_predictor

    frame = camvid_frames(1)[0]
    det = load_predictor("detection", backend="onnxruntime-cpu")
    tracker = ByteTracker()
    height, width = 320, 440
    previous = None
    kept = matched = 0
    for k in range(10):
        crop = np.ascontiguousarray(frame[20:20 + height, 2 * k:2 * k + width])
        result = det(crop, score_threshold=0.1)
        ids = tracker.update(result.boxes, result.scores)
        high = ids >= 0
        boxes, ids = result.boxes[high], ids[high]
        if previous is not None and len(boxes) and len(previous[0]):
            shifted = previous[0] - [2, 0, 2, 0]  # the scene moved 2 px left
            iou = box_iou(shifted, boxes)
            for i, j in zip(*np.nonzero(iou >= 0.5)):
                if iou[i].argmax() == j and iou[:, j].argmax() == i:
                    matched += 1
                    kept += previous[1][i] == ids[j]
        previous = (boxes, ids)
    print(f"kept {kept} of {matched} matched detections")
    assert matched >= 9  # at least one object followed through the sequence
    assert kept / matched >= 0.9, (kept, matched)
