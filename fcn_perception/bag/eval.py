"""``bag eval``: score segmentation and detection on a bag with ground-truth labels.

Offline (:func:`evaluate_offline`): every image of the bag goes through the predictors
(no drops); the predictions are written to an output bag (``/segmentation/labels``
mono8 and ``/detections`` Detection2DArray, with the input headers, as the nodes
publish them).

Live (:func:`evaluate_live`): the predictions are those the nodes published during
``bag play``, recorded with ``bag record``; each is matched to its input frame by
header stamp.  Frames without an answer are *dropped*: in ``segmentation`` their
labelled pixels count as misses (false negatives of their class), in ``detection``
their boxes count as missed; ``segmentation_answered`` scores the answered frames only.

In both modes the ground truth is the bag's label topic (``/camera/labels``), matched to
the images by header stamp; detection targets are boxes derived from it by the rule in
the detector's model card (:class:`fcn_perception.evaluation.boxes.BoxRule`).

Each bag is opened once (the CLI opens it, checks its CRCs and passes the open
:class:`~fcn_perception.bag.read.Bag`); the metrics are computed first and written after
(:func:`write_results`: the metrics JSON, the pictures and the report, nothing else).
"""
from __future__ import annotations

import contextlib
import json
import shutil
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from tqdm import tqdm

from fcn_perception.bag import typestore as T
from fcn_perception.bag.read import Bag
from fcn_perception.bag.report import write_report
from fcn_perception.errors import BagError
from fcn_perception.evaluation.boxes import BoxRule
from fcn_perception.evaluation.camvid import PALETTE
from fcn_perception.evaluation.detection import DetectionEvaluator
from fcn_perception.evaluation.plots import plot_pr_curves
from fcn_perception.evaluation.segmentation import (
    ConfusionMatrix,
    draw_pictures,
    segmentation_scores,
)
from fcn_perception.inference.backends import device_of
from fcn_perception.inference.results import DetectionResult

SEG_TOPIC = "/segmentation/labels"
DET_TOPIC = "/detections"
DIAG_TOPIC = "/diagnostics"  # the nodes' backend, device and precision (DiagnosticArray)


@dataclass
class Frame:
    index: int  # position of the image on its topic
    stamp: int
    image: np.ndarray
    label: np.ndarray | None  # None: no ground truth with this stamp
    frame_id: str = ""


@dataclass
class Prediction:
    labels: np.ndarray | None = None  # None: no segmentation for this frame (dropped)
    detections: DetectionResult | None = None  # None: no detections (dropped)
    seg_ms: float | None = None
    det_ms: float | None = None


class FramePairer:
    """Pairs a bag's images with its labels by header stamp, in one pass.

    Yields every image once, with its label or (at the end, for images whose stamp no
    label carries) with ``None``.  Only frames still waiting for their partner are held.
    """

    def __init__(self, bag: Bag, image_topic: str, label_topic: str) -> None:
        self.bag, self.image_topic, self.label_topic = bag, image_topic, label_topic
        self.labels_without_image = 0
        self.duplicate_stamps = 0

    def __iter__(self) -> Iterator[Frame]:
        images: dict[int, object] = {}
        labels: dict[int, np.ndarray] = {}
        seen: set[int] = set()
        for m in self.bag.messages([self.image_topic, self.label_topic]):
            s = m.stamp_ns
            if m.topic == self.image_topic:
                if s in seen:
                    self.duplicate_stamps += 1  # e.g. a looped recording: first one counts
                    continue
                seen.add(s)
                if s in labels:
                    yield self._frame(m, labels.pop(s))
                else:
                    images[s] = m
            else:
                label = self.bag.decode_label(m)
                if s in images:
                    yield self._frame(images.pop(s), label)
                elif s not in seen:
                    labels[s] = label
        for s in sorted(images):
            yield self._frame(images[s], None)
        self.labels_without_image = len(labels)

    def _frame(self, m, label) -> Frame:
        return Frame(m.index, m.stamp_ns, self.bag.decode_image(m), label,
                     m.msg.header.frame_id)


@dataclass
class Scorer:
    """Accumulates segmentation and detection scores frame by frame."""

    seg_classes: list[str] | None
    ignore_index: int | None
    det_classes: list[str] | None
    box_rule: BoxRule | None
    sample_at: set[int] = field(default_factory=set)
    frames: int = 0
    seg_dropped: int = 0
    det_dropped: int = 0
    without_gt: int = 0

    def __post_init__(self) -> None:
        k = len(self.seg_classes) if self.seg_classes else 0
        self.conf = ConfusionMatrix(k, self.ignore_index) if k else None
        self.missed = np.zeros(k, np.int64)  # labelled pixels of dropped frames, per class
        self.det_eval = None
        if self.det_classes:
            self.det_eval = DetectionEvaluator(self.det_classes)
        self.latency: dict[str, list[float]] = {"segmentation": [], "detection": []}
        self.samples: list[dict] = []

    def add(self, frame: Frame, pred: Prediction) -> None:
        if frame.label is None:
            self.without_gt += 1
            return
        self.frames += 1
        gt = frame.label
        if self.conf is not None:
            if pred.labels is None:
                self.seg_dropped += 1
                keep = gt < len(self.missed)
                if self.ignore_index is not None:
                    keep &= gt != self.ignore_index
                self.missed += np.bincount(gt[keep], minlength=len(self.missed))
            else:
                if pred.labels.shape != gt.shape:
                    raise BagError(
                        f"frame {frame.index} (stamp {frame.stamp} ns): segmentation "
                        f"{pred.labels.shape} and ground truth {gt.shape} differ in size")
                self.conf.update(gt, pred.labels)
            if pred.seg_ms is not None:
                self.latency["segmentation"].append(pred.seg_ms)
        gt_boxes = None
        if self.det_eval is not None:
            gt_boxes = self.box_rule.derive(gt)
            det = DetectionResult() if pred.detections is None else pred.detections
            self.det_dropped += pred.detections is None
            self.det_eval.add(det.boxes, det.scores, det.class_ids, *gt_boxes)
            if pred.det_ms is not None:
                self.latency["detection"].append(pred.det_ms)
        if frame.index in self.sample_at:
            self.samples.append({"index": frame.index, "stamp": frame.stamp,
                                 "image": frame.image, "label": gt, "pred": pred,
                                 "gt_boxes": gt_boxes})

    # -- results --------------------------------------------------------------------
    def segmentation(self) -> dict:
        """Scores with dropped frames' labelled pixels counted as misses of their class
        (the same as ``conf.scores`` when nothing was dropped)."""
        if not self.missed.any():
            return self.conf.scores(self.seg_classes)
        k = len(self.seg_classes)
        ext = np.zeros((k + 1, k + 1), np.int64)  # column k: "no output"
        ext[:k, :k] = self.conf.matrix
        ext[:k, k] = self.missed
        scores = segmentation_scores(ext, [*self.seg_classes, "(no output)"])
        for key in ("per_class_iou", "per_class_accuracy"):
            scores[key].pop("(no output)")
        valid = [v for v in scores["per_class_iou"].values() if v is not None]
        scores["mean_iou"] = float(np.mean(valid)) if valid else 0.0
        return scores

    def detection(self) -> dict:
        return self.det_eval.summary()


@dataclass
class Tasks:
    """What is scored, from the models' cards: classes (None: the task is not scored),
    the palette, the label map's ignore index and the box rule of the detector."""

    seg_classes: list[str] | None
    det_classes: list[str] | None
    palette: list
    ignore_index: int
    box_rule: BoxRule | None

    @classmethod
    def from_cards(cls, seg_card: dict | None, det_card: dict | None) -> Tasks:
        seg_card, det_card = seg_card or {}, det_card or {}
        det_classes = det_card.get("classes") or None
        return cls(seg_card.get("classes") or None, det_classes,
                   seg_card.get("palette") or [list(c) for c in PALETTE],
                   seg_card.get("ignore_index", 11),
                   BoxRule.from_card(det_card) if det_classes else None)


def _opened(bag: str | Path | Bag):
    """``bag`` itself when it is an open :class:`Bag` (the caller closes it), else the
    bag at that path, opened here."""
    return contextlib.nullcontext(bag) if isinstance(bag, Bag) else Bag(bag)


def evaluate_bag(bag_path: str | Path | Bag, json_path: str | Path, report_dir: str | Path, *,
                 segmenter=None, detector=None, seg_card: dict | None = None,
                 det_card: dict | None = None, predictions: str | Path | None = None,
                 image_topic: str | None = None, label_topic: str | None = None,
                 output_bag: str | Path | None = None, samples: int = 4,
                 progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Score a bag: :func:`evaluate_live` with ``predictions`` (a recorded bag and the
    cards of the models the nodes ran), else :func:`evaluate_offline` with
    ``segmenter``/``detector``.  ``bag_path`` and ``predictions`` may be open bags.
    Returns the metrics dict written to ``json_path``."""
    common = dict(image_topic=image_topic, label_topic=label_topic, samples=samples,
                  progress=progress)
    if predictions is None:
        return evaluate_offline(bag_path, json_path, report_dir, segmenter, detector,
                                output_bag=output_bag, **common)
    return evaluate_live(bag_path, predictions, json_path, report_dir, seg_card, det_card,
                         log=log, **common)


def evaluate_offline(bag_path: str | Path | Bag, json_path: str | Path, report_dir: str | Path,
                     segmenter=None, detector=None, *, image_topic: str | None = None,
                     label_topic: str | None = None, output_bag: str | Path | None = None,
                     samples: int = 4, progress: bool = True) -> dict:
    """Run ``segmenter``/``detector`` (Predictors; either may be None) on every image of
    the bag, write their outputs to ``output_bag`` (default ``report_dir/predictions_bag``)
    and score them; write ``json_path`` and the report in ``report_dir``."""
    if segmenter is None and detector is None:
        raise BagError("bag eval: nothing to evaluate (no segmentation or detection model)")
    report_dir = Path(report_dir)
    tasks = Tasks.from_cards(segmenter and segmenter.card, detector and detector.card)
    report_dir.mkdir(parents=True, exist_ok=True)
    if output_bag is None:
        output_bag = report_dir / "predictions_bag"
        shutil.rmtree(output_bag, ignore_errors=True)
    predictors = {"segmentation": segmenter, "detection": detector}
    backends = {task: {"backend": p.backend_name, "device": device_of(p.backend_name),
                       "precision": p.precision}
                for task, p in predictors.items() if getattr(p, "backend_name", None)}
    with _opened(bag_path) as bag:
        image_topic, label_topic = bag.image_topic(image_topic), bag.label_topic(label_topic)
        with PredictionWriter(output_bag, segmenter is not None, detector is not None,
                              backends) as out:
            def predict(frame: Frame) -> Prediction:
                pred = _predict(segmenter, detector, frame, bag, image_topic)
                out.write(frame.stamp, pred, frame.frame_id)
                return pred

            scored = score_frames(bag, image_topic, label_topic, tasks, predict, samples,
                                  progress)
    result = _result(bag.path, "offline", image_topic, label_topic, scored, tasks)
    result["latency_kind"] = "predictor call (preprocess + model + postprocess)"
    result["models"] = _models(tasks, segmenter and segmenter.card, detector and detector.card,
                               backends)
    result["predictions_bag"] = str(output_bag)
    return write_results(result, json_path, report_dir, scored.scorer, tasks)


def evaluate_live(bag_path: str | Path | Bag, predictions: str | Path | Bag, json_path: str | Path,
                  report_dir: str | Path, seg_card: dict | None = None,
                  det_card: dict | None = None, *, image_topic: str | None = None,
                  label_topic: str | None = None, samples: int = 4, progress: bool = True,
                  log: Callable[[str], None] = print) -> dict:
    """Score the outputs the nodes published during ``bag play``, recorded in
    ``predictions`` (``seg_card``: classes, palette, ignore_index; ``det_card``: classes
    and the box rule); write ``json_path`` and the report in ``report_dir``."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    with _opened(bag_path) as bag:
        image_topic, label_topic = bag.image_topic(image_topic), bag.label_topic(label_topic)
        recorded = RecordedPredictions(predictions, bag, image_topic,
                                       want_seg=bool((seg_card or {}).get("classes")),
                                       want_det=bool((det_card or {}).get("classes")), log=log)
        tasks = Tasks.from_cards(seg_card if recorded.seg_topic else None,
                                 det_card if recorded.det_topic else None)
        scored = score_frames(bag, image_topic, label_topic, tasks, recorded.lookup, samples,
                              progress)
    result = _result(bag.path, "live", image_topic, label_topic, scored, tasks)
    if tasks.seg_classes:
        answered = scored.scorer.conf.scores(tasks.seg_classes)
        answered["frames"] = scored.scorer.frames - scored.scorer.seg_dropped
        result["segmentation_answered"] = answered
    result["latency_kind"] = "end to end: output received - input received by the recorder"
    result["models"] = _models(tasks, seg_card, det_card, recorded.backends)
    result["predictions_bag"] = str(recorded.path)
    result["prediction_topics"] = {"segmentation": recorded.seg_topic,
                                   "detection": recorded.det_topic}
    result["unmatched_predictions"] = recorded.unmatched()
    return write_results(result, json_path, report_dir, scored.scorer, tasks)


@dataclass
class Scored:
    scorer: Scorer
    pairer: FramePairer
    seconds: float


def score_frames(bag: Bag, image_topic: str, label_topic: str, tasks: Tasks,
                 predict: Callable[[Frame], Prediction], samples: int = 4,
                 progress: bool = True) -> Scored:
    """Pair the bag's images with their labels and score ``predict(frame)`` on each."""
    count = bag.topics[image_topic][1]
    scorer = Scorer(tasks.seg_classes, tasks.ignore_index, tasks.det_classes, tasks.box_rule,
                    _sample_indices(count, samples))
    pairer = FramePairer(bag, image_topic, label_topic)
    t0 = time.perf_counter()
    with tqdm(total=count, desc="bag eval", unit="frame", disable=not progress) as bar:
        for frame in pairer:
            scorer.add(frame, predict(frame))
            bar.update(1)
    if scorer.frames == 0:
        raise bag.error(f"no image on {image_topic} has a label on {label_topic} with the "
                        "same header stamp; nothing to score")
    return Scored(scorer, pairer, time.perf_counter() - t0)


def _result(bag_path, mode: str, image_topic: str, label_topic: str, scored: Scored,
            tasks: Tasks) -> dict:
    """The metrics both modes report (computed only: :func:`write_results` writes)."""
    scorer, pairer = scored.scorer, scored.pairer
    frames = {"images": scorer.frames + scorer.without_gt, "scored": scorer.frames,
              "without_ground_truth": scorer.without_gt,
              "labels_without_image": pairer.labels_without_image,
              "duplicate_stamps": pairer.duplicate_stamps}
    result: dict = {"bag": str(bag_path), "mode": mode, "image_topic": image_topic,
                    "label_topic": label_topic}
    if tasks.seg_classes:
        seg_scores = scorer.segmentation()
        seg_scores["frames"] = scorer.frames
        lat = scorer.latency["segmentation"]
        seg_scores["latency_ms_p50"] = float(np.percentile(lat, 50)) if lat else 0.0
        # the confusion matrix covers the answered frames
        result["segmentation"] = {**seg_scores,
                                  "confusion_matrix": scorer.conf.matrix.tolist()}
        frames["segmentation_answered"] = scorer.frames - scorer.seg_dropped
        frames["segmentation_dropped"] = scorer.seg_dropped
        frames["segmentation_missed_pixels"] = int(scorer.missed.sum())
    if tasks.det_classes:
        result["detection"] = scorer.detection()
        result["detection"]["box_rule"] = tasks.box_rule.record(tasks.det_classes)
        frames["detection_answered"] = scorer.frames - scorer.det_dropped
        frames["detection_dropped"] = scorer.det_dropped
    result["frames"] = frames
    result["latency_ms"] = {task: _latency_summary(v) for task, v in scorer.latency.items()
                            if v}
    result["seconds"] = scored.seconds
    return result


def _models(tasks: Tasks, seg_card: dict | None, det_card: dict | None,
            backends: dict[str, dict[str, str]]) -> dict:
    """Each scored task's weights, architecture and where it ran (``backend``, ``device``,
    ``precision``: None where a live run's recording has no diagnostics)."""
    cards = {"segmentation": (seg_card or {}, tasks.seg_classes),
             "detection": (det_card or {}, tasks.det_classes)}
    return {task: {"weights": card.get("weights"), "architecture": card.get("architecture"),
                   **{k: backends.get(task, {}).get(k) for k in T.BACKEND_KEYS}}
            for task, (card, on) in cards.items() if on}


def write_results(result: dict, json_path, report_dir: Path, scorer: Scorer,
                  tasks: Tasks) -> dict:
    """Draw the pictures (IoU bars, confusion matrix, PR curves) into ``report_dir``, write
    the HTML report there and the metrics to ``json_path``; return ``result`` with the
    pictures' and the report's paths."""
    pictures = {}
    if "segmentation" in result:
        seg = result["segmentation"]
        seg.update(draw_pictures(seg, scorer.conf.matrix, tasks.seg_classes, tasks.palette,
                                 report_dir / "segmentation"))
        pictures["iou"], pictures["confusion"] = seg["iou_png"], seg["confusion_png"]
    if "detection" in result:
        pictures["pr"] = plot_pr_curves(
            scorer.det_eval, report_dir / "detection_pr.png",
            palette=[tasks.palette[i] for i in tasks.box_rule.label_ids])
    result["report"] = str(write_report(report_dir, result, scorer, tasks.palette, pictures))
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _latency_summary(values: list[float]) -> dict:
    if not values:
        return {"frames": 0}
    a = np.asarray(values, np.float64)
    return {"frames": int(a.size), "mean": float(a.mean()),
            "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max())}


def _sample_indices(count: int, n: int) -> set[int]:
    if count <= 0 or n <= 0:
        return set()
    return {int(round(i)) for i in np.linspace(0, count - 1, min(n, count))}


def _predict(segmenter, detector, frame: Frame, bag: Bag, topic: str) -> Prediction:
    pred = Prediction()
    try:
        if segmenter is not None:
            r = segmenter(frame.image)
            pred.labels, pred.seg_ms = r.labels, float(r.latency_ms)
        if detector is not None:
            pred.detections = detector(frame.image)
            pred.det_ms = float(pred.detections.latency_ms)
    except Exception as exc:
        raise bag.error(f"the predictor failed on message {frame.index} of {topic} "
                        f"(stamp {frame.stamp} ns): {type(exc).__name__}: {exc}") from exc
    return pred


class PredictionWriter:
    """The output bag: predictions with the input headers, on the nodes' topics, and
    (with ``backends``, ``{task: {backend, device, precision}}``) one ``/diagnostics``
    message naming them as the nodes do, so the bag re-scored as a live run names them."""

    def __init__(self, path, seg: bool, det: bool,
                 backends: dict[str, dict[str, str]] | None = None) -> None:
        self.store = T.get_typestore()
        self.writer = Writer(path, version=Writer.VERSION_LATEST,
                             storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.backends = backends or {}
        self.diag = self.writer.add_connection(DIAG_TOPIC, T.DIAGNOSTIC_ARRAY,
                                               typestore=self.store) if self.backends else None
        self.seg = self.writer.add_connection(SEG_TOPIC, T.IMAGE, typestore=self.store) \
            if seg else None
        self.det = self.writer.add_connection(DET_TOPIC, T.DETECTION_2D_ARRAY,
                                              typestore=self.store) if det else None

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.writer.close()

    def write(self, stamp: int, pred: Prediction, frame_id: str) -> None:
        if self.diag is not None:  # once, with the first frame
            msg = T.diagnostics_msg(stamp, {f"bag eval: {task}": values
                                            for task, values in self.backends.items()})
            self.writer.write(self.diag, stamp, self.store.serialize_cdr(msg, T.DIAGNOSTIC_ARRAY))
            self.diag = None
        if self.seg is not None:
            msg = T.image_msg(pred.labels, stamp, frame_id)
            self.writer.write(self.seg, stamp, self.store.serialize_cdr(msg, T.IMAGE))
        if self.det is not None:
            msg = T.detections_msg(pred.detections, stamp, frame_id)
            self.writer.write(self.det, stamp,
                              self.store.serialize_cdr(msg, T.DETECTION_2D_ARRAY))


class RecordedPredictions:
    """Predictions of a live run, read from a recorded bag and indexed by stamp.

    Label maps are held zlib-compressed (about 1/30 of their size on CamVid), so long
    recordings fit in memory.
    """

    def __init__(self, path, gt_bag: Bag, image_topic: str, want_seg: bool, want_det: bool,
                 log) -> None:
        self.seg: dict[int, tuple[bytes, tuple[int, int], int]] = {}
        self.det: dict[int, tuple[tuple, int]] = {}
        self.inputs: dict[int, int] = {}
        self.backends: dict[str, dict[str, str]] = {}  # from the nodes' diagnostics
        with _opened(path) as rec:
            self.path = rec.path
            self.seg_topic = _pick(rec, "segmentation/labels", T.IMAGE) if want_seg else None
            self.det_topic = (_pick(rec, "detections", T.DETECTION_2D_ARRAY)
                              if want_det else None)
            if not self.seg_topic and not self.det_topic:
                raise rec.error("no prediction topic (*/segmentation/labels, sensor_msgs/msg/"
                                "Image mono8, or */detections, vision_msgs/msg/"
                                "Detection2DArray); record the nodes' outputs with "
                                "fcn-perception bag record")
            input_topic = image_topic if image_topic in rec.topics else None
            diag_topic = DIAG_TOPIC if DIAG_TOPIC in rec.topics_of_type(T.DIAGNOSTIC_ARRAY) \
                else None
            topics = [t for t in (self.seg_topic, self.det_topic, input_topic, diag_topic) if t]
            for m in rec.messages(topics):
                s = m.stamp_ns
                if m.topic == diag_topic:
                    self.backends.update(T.backends_from_diagnostics(m.msg))
                elif m.topic == self.seg_topic:
                    if s not in self.seg:
                        labels = rec.decode_label(m)
                        self.seg[s] = (zlib.compress(labels.tobytes(), 1), labels.shape,
                                       m.log_ns)
                elif m.topic == self.det_topic:
                    if s not in self.det:
                        try:
                            self.det[s] = (DetectionResult(*T.detections_from_msg(m.msg)),
                                           m.log_ns)
                        except ValueError as exc:
                            raise rec.error(f"{m.where()}: {exc}") from exc
                elif s not in self.inputs:
                    self.inputs[s] = m.log_ns
        for task, want, topic in (("segmentation", want_seg, self.seg_topic),
                                  ("detection", want_det, self.det_topic)):
            if want and not topic:
                log(f"bag eval: {self.path} has no {task} topic; {task} is not scored")
        log(f"bag eval: {len(self.seg)} segmentation and {len(self.det)} detection outputs "
            f"in {self.path}" + (f", {len(self.inputs)} inputs" if self.inputs else ""))
        self._seen: set[int] = set()

    def lookup(self, frame: Frame) -> Prediction:
        """The recorded outputs of ``frame`` (by its stamp; None where there is none)."""
        stamp = frame.stamp
        self._seen.add(stamp)
        pred = Prediction()
        t_in = self.inputs.get(stamp)
        if stamp in self.seg:
            packed, shape, t_out = self.seg[stamp]
            pred.labels = np.frombuffer(zlib.decompress(packed), np.uint8).reshape(shape)
            if t_in is not None:
                pred.seg_ms = (t_out - t_in) / 1e6
        if stamp in self.det:
            pred.detections, t_out = self.det[stamp]
            if t_in is not None:
                pred.det_ms = (t_out - t_in) / 1e6
        return pred

    def unmatched(self) -> int:
        """Predictions whose stamp is not one of the bag's frames."""
        return len((set(self.seg) | set(self.det)) - self._seen)


def _pick(bag: Bag, suffix: str, typ: str) -> str | None:
    cands = [t for t in bag.topics_of_type(typ) if t.endswith(suffix)]
    if len(cands) > 1:
        raise bag.error(f"several topics end in {suffix}: {cands}")
    return cands[0] if cands else None
