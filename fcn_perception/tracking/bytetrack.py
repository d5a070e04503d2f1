"""A ByteTrack tracker (Zhang et al., "ByteTrack: Multi-Object Tracking by Associating
Every Detection Box", ECCV 2022) on plain arrays: it gives each detection of a frame a
track id that stays the same while the object is seen.

Per frame (:meth:`ByteTracker.update`), as in the reference implementation:

1. every known track (confirmed, and lost within ``track_buffer`` frames) is moved one
   frame ahead by its Kalman filter;
2. the *high* detections (score >= ``high_threshold``) are matched to them by IoU
   weighted by score (cost ``1 - IoU * score`` <= ``first_match_cost``);
3. the *low* detections (``low_threshold`` <= score < ``high_threshold``: occluded or
   blurred objects) are matched to the confirmed tracks still unmatched
   (``1 - IoU`` <= ``second_match_cost``); tracks unmatched now become *lost*;
4. the high detections left are matched to last frame's new (tentative) tracks
   (``<= tentative_match_cost``), which are confirmed or dropped;
5. a new track starts from each high detection still left (score >=
   ``new_track_threshold``); lost tracks older than ``track_buffer`` frames are removed.

Differences from the reference, for a node that publishes every detection it keeps:
a new track's id is given at once (the reference outputs a track only from its second
frame, except in the first frame), so every published high detection has an id; a low
detection is kept only when it continues a confirmed track.  Ids are unique per
tracker (or per shared ``ids`` counter) and never reused.

Why not a library: ``supervision`` 0.31 no longer ships ByteTrack (it moved to
``trackers``, which pulls opencv-python, clashing with this package's
opencv-python-headless, plus PyAV and supervision); ``boxmot`` is AGPL-3.0 and needs
torch, timm and pandas; ``norfair`` requires numpy < 2; ``motpy`` (2021) has no
ByteTrack.  This module is NumPy only.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fcn_perception.tracking import kalman
from fcn_perception.tracking.assignment import linear_assignment

TRACKED, LOST, REMOVED = "tracked", "lost", "removed"


@dataclass(frozen=True)
class TrackerConfig:
    """The tracker's thresholds (ByteTrack's defaults for the matching costs)."""

    high_threshold: float = 0.5  # the first association's detections; new tracks
    low_threshold: float = 0.1  # below: ignored
    new_track_threshold: float | None = None  # None: high_threshold
    track_buffer: int = 30  # frames a lost track is kept for re-identification
    first_match_cost: float = 0.8
    second_match_cost: float = 0.5
    tentative_match_cost: float = 0.7

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_threshold <= self.high_threshold <= 1.0:
            raise ValueError(f"need 0 <= low_threshold ({self.low_threshold}) <= "
                             f"high_threshold ({self.high_threshold}) <= 1")
        if self.track_buffer < 0:
            raise ValueError(f"track_buffer must be >= 0, got {self.track_buffer}")


class Track:
    """One object's filter state and bookkeeping."""

    __slots__ = ("track_id", "mean", "cov", "state", "confirmed", "last_frame", "hits")

    def __init__(self, track_id: int, mean: np.ndarray, cov: np.ndarray, frame: int,
                 confirmed: bool) -> None:
        self.track_id = track_id
        self.mean, self.cov = mean, cov
        self.state = TRACKED
        self.confirmed = confirmed
        self.last_frame = frame
        self.hits = 1

    @property
    def box(self) -> np.ndarray:
        """``(4,)`` x1 y1 x2 y2 of the current estimate."""
        return kalman.xyah_to_xyxy(self.mean[None])[0]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, 4)`` x ``(M, 4)`` corner boxes -> ``(N, M)`` IoU."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


class ByteTracker:
    """ByteTrack on one camera's detections; :meth:`update` once per frame.

    ``ids`` is the counter new track ids come from (share one between trackers to keep
    ids unique across cameras); default: 1, 2, 3, ..."""

    def __init__(self, config: TrackerConfig | None = None,
                 ids: Iterator[int] | None = None) -> None:
        self.config = config or TrackerConfig()
        self._ids = ids if ids is not None else itertools.count(1)
        self.tracks: list[Track] = []  # tracked and lost, not removed
        self.frame = 0

    @property
    def active(self) -> int:
        """Tracks seen in the last frame."""
        return sum(t.state == TRACKED for t in self.tracks)

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """One frame's ``(N, 4)`` x1 y1 x2 y2 boxes and ``(N,)`` scores -> ``(N,)`` int64
        track ids, ``-1`` for a detection not tracked (a low-score detection that
        continues no confirmed track, or one below ``low_threshold``)."""
        cfg = self.config
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        if len(boxes) != len(scores):
            raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
        self.frame += 1
        ids = np.full(len(boxes), -1, np.int64)
        high = np.flatnonzero(scores >= cfg.high_threshold)
        low = np.flatnonzero((scores >= cfg.low_threshold) & (scores < cfg.high_threshold))

        tentative = [t for t in self.tracks if t.state == TRACKED and not t.confirmed]
        pool = [t for t in self.tracks if t.confirmed]  # tracked and lost
        self._predict(pool)
        measurements = kalman.xyxy_to_xyah(boxes)
        updates: list[tuple[Track, int]] = []

        # 2. high detections <-> confirmed and lost tracks, IoU weighted by score
        cost = 1.0 - self._iou(pool, boxes[high]) * scores[high][None, :]
        matches, rest_tracks, rest_high = linear_assignment(cost, cfg.first_match_cost)
        updates += [(pool[t], high[d]) for t, d in matches]
        # 3. low detections <-> confirmed tracks seen last frame and still unmatched
        pending = [pool[t] for t in rest_tracks if pool[t].state == TRACKED]
        cost = 1.0 - self._iou(pending, boxes[low])
        matches, unmatched, _ = linear_assignment(cost, cfg.second_match_cost)
        updates += [(pending[t], low[d]) for t, d in matches]
        for t in unmatched:
            pending[t].state = LOST
        # 4. remaining high detections <-> last frame's tentative tracks
        high = high[rest_high]
        cost = 1.0 - self._iou(tentative, boxes[high]) * scores[high][None, :]
        matches, unmatched, rest_high = linear_assignment(cost, cfg.tentative_match_cost)
        for t, d in matches:
            tentative[t].confirmed = True
            updates.append((tentative[t], high[d]))
        for t in unmatched:
            tentative[t].state = REMOVED
        self._correct(updates, measurements)
        for track, d in updates:
            ids[d] = track.track_id
        # 5. new tracks; forget old lost ones
        start = cfg.high_threshold if cfg.new_track_threshold is None else cfg.new_track_threshold
        new = [d for d in high[rest_high] if scores[d] >= start]
        if new:
            mean, cov = kalman.initiate(measurements[new])
            for k, d in enumerate(new):
                track = Track(next(self._ids), mean[k], cov[k], self.frame,
                              confirmed=self.frame == 1)
                self.tracks.append(track)
                ids[d] = track.track_id
        for t in self.tracks:
            if t.state == LOST and self.frame - t.last_frame > cfg.track_buffer:
                t.state = REMOVED
        self.tracks = [t for t in self.tracks if t.state != REMOVED]
        return ids

    @staticmethod
    def _iou(tracks: list[Track], boxes: np.ndarray) -> np.ndarray:
        if not tracks or not len(boxes):
            return np.zeros((len(tracks), len(boxes)))
        return box_iou(kalman.xyah_to_xyxy(np.stack([t.mean for t in tracks])), boxes)

    @staticmethod
    def _predict(tracks: list[Track]) -> None:
        if not tracks:
            return
        mean = np.stack([t.mean for t in tracks])
        cov = np.stack([t.cov for t in tracks])
        # a lost track stops growing or shrinking (as the reference does)
        lost = np.array([t.state != TRACKED for t in tracks])
        mean[lost, 7] = 0.0
        mean, cov = kalman.predict(mean, cov)
        for k, t in enumerate(tracks):
            t.mean, t.cov = mean[k], cov[k]

    def _correct(self, updates: list[tuple[Track, int]], measurements: np.ndarray) -> None:
        if not updates:
            return
        mean = np.stack([t.mean for t, _ in updates])
        cov = np.stack([t.cov for t, _ in updates])
        mean, cov = kalman.update(mean, cov, measurements[[d for _, d in updates]])
        for k, (t, _) in enumerate(updates):
            t.mean, t.cov = mean[k], cov[k]
            t.state = TRACKED
            t.last_frame = self.frame
            t.hits += 1
