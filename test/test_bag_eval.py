"""bag eval on bags made from CamVid frames: agreement with `evaluate segmentation` and
with the detection evaluator, re-scoring the predictions bag as a live run, drops, the
report and the CLI.  Models are small random-initialised ones written to a temp dir."""
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from factories import DET_CLASSES, write_random_weights

from fcn_perception.bag import typestore as T
from fcn_perception.bag.eval import DET_TOPIC, DIAG_TOPIC, SEG_TOPIC, evaluate_bag
from fcn_perception.bag.make import make_bag
from fcn_perception.bag.read import Bag
from fcn_perception.errors import BagError

SAMPLE = Path(__file__).resolve().parent.parent / "fcn_perception" / "data" / "camvid_sample"
FRAMES = 4


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_random_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def predictors(weights):
    from fcn_perception import load_predictor

    return {task: load_predictor(task, backend="torch-cpu", weights=path)
            for task, path in weights.items()}


@pytest.fixture(scope="module")
def split_file(tmp_path_factory):
    lines = (SAMPLE / "val.txt").read_text().splitlines()[:FRAMES]
    path = tmp_path_factory.mktemp("split") / "first4.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def bags(tmp_path_factory, split_file):
    root = tmp_path_factory.mktemp("bags")
    return {st: make_bag(SAMPLE, split_file, root / st, rate=5.0, storage=st).path
            for st in ("mcap", "sqlite3")}


@pytest.fixture(scope="module")
def offline(tmp_path_factory, bags, predictors):
    out = {}
    for st, bag in bags.items():
        d = tmp_path_factory.mktemp(f"eval_{st}")
        out[st] = evaluate_bag(bag, d / "metrics.json", d / "report",
                               segmenter=predictors["segmentation"],
                               detector=predictors["detection"], progress=False)
    return out


def _comparable(scores: dict) -> dict:
    return {k: v for k, v in scores.items()
            if not k.endswith("_png") and k not in ("latency_ms_p50",)}


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_offline_segmentation_agrees_with_evaluate(offline, predictors, split_file, storage):
    from fcn_perception.evaluation.camvid import CamVid
    from fcn_perception.training.evaluate_segmentation import evaluate_segmentation

    seg = predictors["segmentation"]
    scores, conf = evaluate_segmentation(seg, CamVid(SAMPLE, split_file), progress=False)
    result = offline[storage]
    assert result["frames"]["scored"] == FRAMES and result["frames"]["images"] == FRAMES
    assert set(result["segmentation"]) == set(scores) | {"confusion_matrix", "confusion_png",
                                                        "iou_png"}
    assert _comparable(result["segmentation"]) == _comparable(
        {**scores, "confusion_matrix": conf.matrix.tolist()})
    assert result["segmentation"]["pixels"] > 0


def test_mcap_and_sqlite3_bags_score_the_same(offline):
    a, b = offline["mcap"], offline["sqlite3"]
    assert _comparable(a["segmentation"]) == _comparable(b["segmentation"])
    assert a["detection"] == b["detection"] and a["frames"] == b["frames"]


def test_offline_detection_agrees_with_the_evaluator(offline, predictors, split_file):
    from fcn_perception.evaluation.detection import DetectionEvaluator
    from fcn_perception.training.det_data import open_detection_split

    det = predictors["detection"]
    source = open_detection_split(SAMPLE, split_file, DET_CLASSES, 100, 8)
    ev = DetectionEvaluator(DET_CLASSES)
    for i in range(len(source)):
        r = det(source.load_image(i))
        ev.add(r.boxes, r.scores, r.class_ids, *source.boxes(i))
    result = offline["mcap"]["detection"]
    expected = ev.summary()
    assert {k: result[k] for k in expected} == expected
    assert sum(result["num_gt"].values()) > 0
    assert result["box_rule"]["label_ids"] == [8, 9, 10]


def test_predictions_bag_holds_every_frame_with_input_headers(offline, bags):
    result = offline["mcap"]
    with Bag(result["predictions_bag"]) as pred, Bag(bags["mcap"]) as src:
        assert pred.topics == {SEG_TOPIC: (T.IMAGE, FRAMES),
                               DET_TOPIC: (T.DETECTION_2D_ARRAY, FRAMES),
                               DIAG_TOPIC: (T.DIAGNOSTIC_ARRAY, 1)}
        in_stamps = [m.stamp_ns for m in src.messages(["/camera/image_raw"])]
        for topic in (SEG_TOPIC, DET_TOPIC):
            msgs = list(pred.messages([topic]))
            assert [m.stamp_ns for m in msgs] == in_stamps
            assert all(m.msg.header.frame_id == "camera" for m in msgs)
        labels = [pred.decode_label(m) for m in pred.messages([SEG_TOPIC])]
        assert labels[0].shape == (360, 480) and labels[0].max() < 11


def test_rescoring_the_predictions_bag_as_a_live_run_gives_the_same_numbers(
        offline, bags, predictors, tmp_path):
    result = offline["mcap"]
    live = evaluate_bag(bags["mcap"], tmp_path / "m.json", tmp_path / "r",
                        predictions=result["predictions_bag"],
                        seg_card=predictors["segmentation"].card,
                        det_card=predictors["detection"].card, progress=False)
    assert live["mode"] == "live"
    assert live["frames"]["segmentation_dropped"] == live["frames"]["detection_dropped"] == 0
    assert _comparable(live["segmentation"]) == _comparable(result["segmentation"])
    assert _comparable(live["segmentation_answered"]) == {
        k: v for k, v in _comparable(result["segmentation"]).items() if k != "confusion_matrix"}
    assert live["detection"] == result["detection"]
    assert live["unmatched_predictions"] == 0


def _drop_frames(src: Path, dst: Path, drop: set[int], skip: tuple[str, ...] = ()) -> None:
    """Copy a predictions bag without the messages of frames ``drop`` (by position) and
    without the topics ``skip``."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = T.get_typestore()
    with Bag(src) as bag, Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        topics = sorted(t for t in bag.topics if t not in skip)
        conns = {t: w.add_connection(t, bag.topics[t][0], typestore=store) for t in topics}
        for topic, _, index, log_ns, raw in bag.raw_messages(topics):
            if index not in drop:
                w.write(conns[topic], log_ns, raw)


def test_dropped_frames_count_as_misses(offline, bags, predictors, tmp_path):
    _drop_frames(Path(offline["mcap"]["predictions_bag"]), tmp_path / "partial", {1, 2})
    live = evaluate_bag(bags["mcap"], tmp_path / "m.json", tmp_path / "r",
                        predictions=tmp_path / "partial",
                        seg_card=predictors["segmentation"].card,
                        det_card=predictors["detection"].card, progress=False)
    fr = live["frames"]
    assert fr["scored"] == FRAMES
    assert (fr["segmentation_answered"], fr["segmentation_dropped"]) == (2, 2)
    assert (fr["detection_answered"], fr["detection_dropped"]) == (2, 2)
    seg, answered = live["segmentation"], live["segmentation_answered"]
    full = offline["mcap"]["segmentation"]
    assert seg["pixels"] == full["pixels"] and answered["pixels"] < full["pixels"]
    assert fr["segmentation_missed_pixels"] == full["pixels"] - answered["pixels"]
    assert seg["pixel_accuracy"] < answered["pixel_accuracy"]
    assert seg["pixel_accuracy"] == pytest.approx(
        answered["pixel_accuracy"] * answered["pixels"] / full["pixels"])
    assert set(seg["per_class_iou"]) == set(full["per_class_iou"])
    assert live["detection"]["num_gt"] == offline["mcap"]["detection"]["num_gt"]


def test_report_has_every_section_with_embedded_pictures(offline):
    result = offline["sqlite3"]
    page = Path(result["report"]).read_text()
    for text in ("Summary", "Per-class IoU", "Confusion matrix", "Latency", "Sample overlays",
                 "Detection examples", "mAP@0.5"):
        assert text in page, text
    assert page.count("data:image/png;base64,") >= 5  # IoU, confusion, 2 latency, PR curve
    assert page.count("data:image/jpeg;base64,") == 2 * 4  # 4 samples x (overlay, boxes)
    assert "src=\"/" not in page and "src=\"samples" not in page  # self-contained
    folder = Path(result["report"]).parent
    assert not (folder / "segmentation.json").exists()  # the metrics go to --json only
    assert Path(result["segmentation"]["iou_png"]).parent == folder


class _Page(HTMLParser):
    """The report's summary rows, figure captions and picture alt texts."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows, self.captions, self.alts = [], [], []
        self._cells, self._in = None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self._cells = []
        elif tag in ("td", "figcaption"):
            self._in = tag
            if tag == "td":
                self._cells.append("")
            else:
                self.captions.append("")
        elif tag == "img":
            self.alts.append(dict(attrs).get("alt", ""))

    def handle_endtag(self, tag):
        if tag == "tr" and self._cells:
            self.rows.append(tuple(self._cells))
        if tag in ("td", "figcaption"):
            self._in = None

    def handle_data(self, data):
        if self._in == "td":
            self._cells[-1] += data
        elif self._in == "figcaption":
            self.captions[-1] += data


def test_report_names_the_backend_formats_stamps_and_labels_ground_truth_without_scores(
        offline, bags, predictors, tmp_path):
    page = _Page(Path(offline["mcap"]["report"]).read_text())
    summary = dict(r for r in page.rows if len(r) == 2)
    for task, model in (("segmentation", "FCN-8s ResNet-18"), ("detection", "R-FCN ResNet-18")):
        assert summary[f"{task} backend"] == "torch-cpu (cpu, fp32)", summary
        assert summary[f"{task} model"] == f"{model} ({task}.safetensors)", summary
    # stamps as seconds with milliseconds and as UTC time (bag make starts at 1.7e9 s)
    assert len(page.captions) == 2 * 4
    for caption in page.captions:
        assert re.search(r"stamp 1700000000\.\d{3} s \(2023-11-14 22:13:2\d\.\d{3} UTC\)",
                         caption), caption
        assert not re.search(r"\d{12}", caption), caption  # no raw nanoseconds
    # detection examples: ground truth named only, predictions with their score
    examples = [a for a in page.alts if a.startswith("ground truth: ")]
    assert len(examples) == 4
    names = set(DET_CLASSES)
    gt_seen = 0
    for alt in examples:
        gt, _, predicted = alt.removeprefix("ground truth: ").partition("; predicted: ")
        for label in gt.split(", "):
            assert label in names, alt  # "Car", never "Car 1.00"
            gt_seen += 1
        for label in filter(None, predicted.split(", ")):
            if label != "none":
                name, score = label.rsplit(" ", 1)
                assert name in names and re.fullmatch(r"[01]\.\d\d", score), alt
    assert gt_seen > 0
    # a live run's recording names the backend when it holds the nodes' /diagnostics
    # (the offline predictions bag has one, as the nodes publish it) and says so if not
    with Bag(offline["mcap"]["predictions_bag"]) as pred:
        assert pred.topics[DIAG_TOPIC] == (T.DIAGNOSTIC_ARRAY, 1)
    without = tmp_path / "without_diagnostics"
    _drop_frames(Path(offline["mcap"]["predictions_bag"]), without, set(), skip=(DIAG_TOPIC,))
    for predictions, expected in ((offline["mcap"]["predictions_bag"], "torch-cpu (cpu, fp32)"),
                                  (without, "not recorded")):
        logs = []
        with Bag(predictions) as opened:  # open, as the CLI passes it
            live = evaluate_bag(bags["mcap"], tmp_path / "m.json", tmp_path / "r",
                                predictions=opened, seg_card=predictors["segmentation"].card,
                                det_card=predictors["detection"].card, progress=False,
                                log=logs.append)
        assert any(f"outputs in {predictions}" in line for line in logs), logs
        summary = dict(r for r in _Page(Path(live["report"]).read_text()).rows if len(r) == 2)
        assert summary["detection backend"].startswith(expected), summary


def test_labels_stay_inside_the_picture():
    """A label wider than its box at the right edge is moved left, at the top edge it
    goes inside the box: the whole tab of the box in the middle of the picture is found,
    pixel for pixel, in the pictures of boxes at the edges."""
    import cv2

    from fcn_perception.imaging.drawing import draw_detections, palette_lut, tab_origin

    assert tab_origin(470, 50, 60, 12, 480, 360) == (420, 38)  # right edge: moved left
    assert tab_origin(100, 5, 60, 12, 480, 360) == (100, 5)  # top edge: inside the box
    assert tab_origin(100, 50, 60, 12, 480, 360) == (100, 38)  # else above the box
    lut = palette_lut([(255, 255, 0)])
    black = np.zeros((120, 200, 3), np.uint8)

    def drawn(box):
        return draw_detections(black, np.array([box], np.float32), np.array([0.97]),
                               np.array([0]), ["Bicyclist"], lut)

    middle = drawn([80, 60, 100, 90])
    ys, xs = np.nonzero(middle[:60].any(axis=2))  # above the box: only its tab
    tab = middle[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    assert tab.shape[0] >= 10 and tab.shape[1] > 3 * 20  # wider than the box
    for box in ([179, 60, 199, 90], [0, 0, 20, 30], [179, 0, 199, 30]):
        found = cv2.minMaxLoc(cv2.matchTemplate(drawn(box), tab, cv2.TM_SQDIFF))[0]
        assert found == 0, box


def test_report_renders_in_a_browser(offline, tmp_path):
    """Headless Chromium shows the report's detection example at its own size (the
    picture found pixel for pixel in the screenshot).  Skipped without Chromium; the
    HTML-level test above checks the content either way."""
    import subprocess

    import cv2

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on PATH")
    report = Path(offline["mcap"]["report"])
    shot = tmp_path / "report.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1400,9000", report.as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if not shot.is_file():
        pytest.skip(f"chromium did not render here: {done.stderr[-300:]}")
    screen = cv2.imread(str(shot))
    example = cv2.imread(str(sorted((report.parent / "samples").glob("*_det.jpg"))[0]))
    score = cv2.minMaxLoc(cv2.matchTemplate(screen, example, cv2.TM_CCOEFF_NORMED))[1]
    assert score > 0.95, score


def test_cli_eval_agrees_with_cli_evaluate_and_writes_report(bags, weights, split_file, tmp_path,
                                                            capsys):
    from fcn_perception.cli import main

    assert main(["evaluate", "segmentation", "--data", str(SAMPLE), "--split", str(split_file),
                 "--weights", str(weights["segmentation"]), "--backend", "torch-cpu",
                 "--json", str(tmp_path / "evaluate.json")]) == 0
    rc = main(["bag", "eval", str(bags["sqlite3"]), "--json", str(tmp_path / "m.json"),
               "--report", str(tmp_path / "rep"), "--seg-weights", str(weights["segmentation"]),
               "--det-weights", str(weights["detection"]), "--backend", "torch-cpu",
               "--tasks", "segmentation", "--quiet", "--samples", "2"])
    out = capsys.readouterr().out
    assert rc == 0, out
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert "detection" not in metrics and metrics["segmentation"]["frames"] == FRAMES
    evaluate = json.loads((tmp_path / "evaluate.json").read_text())
    assert set(metrics["segmentation"]) == set(evaluate)
    assert _comparable(metrics["segmentation"]) == _comparable(evaluate)
    assert f"report: {tmp_path / 'rep' / 'index.html'}" in out
    assert (tmp_path / "rep" / "predictions_bag" / "metadata.yaml").is_file()


def test_eval_without_labels_or_images_says_what_is_there(bags, predictors, tmp_path):
    store = T.get_typestore()
    from rosbags.rosbag2 import StoragePlugin, Writer

    with Bag(bags["mcap"]) as src, Writer(tmp_path / "nolabels", version=9,
                                          storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection("/camera/image_raw", T.IMAGE, typestore=store)
        for _, _, _, log_ns, raw in src.raw_messages(["/camera/image_raw"]):
            w.write(conn, log_ns, raw)
    with pytest.raises(BagError) as err:
        evaluate_bag(tmp_path / "nolabels", tmp_path / "m.json", tmp_path / "r",
                     segmenter=predictors["segmentation"], progress=False)
    assert "no ground-truth label topic" in str(err.value)
    assert "/camera/image_raw (sensor_msgs/msg/Image, 4 messages)" in str(err.value)
    with pytest.raises(BagError, match="no prediction topic"):
        evaluate_bag(bags["mcap"], tmp_path / "m.json", tmp_path / "r",
                     predictions=bags["sqlite3"], seg_card=predictors["segmentation"].card,
                     progress=False)


def test_predictor_failure_names_the_frame(bags, tmp_path):
    class Broken:
        classes = ["a", "b"]
        card = {"classes": ["a", "b"], "ignore_index": 11}

        def __call__(self, image):
            raise RuntimeError("out of memory")

    with pytest.raises(BagError, match=r"message 0 of /camera/image_raw \(stamp 1700000000000000000"):
        evaluate_bag(bags["mcap"], tmp_path / "m.json", tmp_path / "r", segmenter=Broken(),
                     progress=False)
    shutil.rmtree(tmp_path / "r", ignore_errors=True)


def test_shipped_detector_scores_the_same_offline_and_from_its_messages(tmp_path):
    """The demo's case: the shipped R-FCN on the bundled frames.  Its published
    hypotheses start with the detected class and then list the rest of the class
    distribution, where another class may score higher (a box kept by per-class NMS for
    one class); the evaluator reads the first, so re-scoring the predictions bag as a
    live run gives the offline numbers exactly."""
    from fcn_perception import load_predictor

    det = load_predictor("detection", backend="torch-cpu")
    bag = make_bag(SAMPLE, SAMPLE / "val.txt", tmp_path / "bag", rate=5.0).path
    offline = evaluate_bag(bag, tmp_path / "off.json", tmp_path / "off", detector=det,
                           progress=False, samples=0)
    outranked = 0
    with Bag(offline["predictions_bag"]) as pred:
        for m in pred.messages([DET_TOPIC]):
            for d in m.msg.detections:
                first = d.results[0].hypothesis.score
                outranked += any(r.hypothesis.score > first for r in d.results[1:])
    assert outranked > 0  # the case the first-hypothesis rule decides occurs here
    live = evaluate_bag(bag, tmp_path / "live.json", tmp_path / "live",
                        predictions=offline["predictions_bag"], det_card=det.card,
                        progress=False, samples=0, log=lambda s: None)
    assert live["detection"] == offline["detection"]
    assert live["detection"]["map50"] > 0.5
