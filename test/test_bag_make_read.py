"""bag make / read on real CamVid frames (mcap and sqlite3), the typestore's agreement
with rclpy, and clear errors for bad bags."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn_perception.bag import typestore as T
from fcn_perception.bag.make import COMPRESSED_TOPIC, IMAGE_TOPIC, LABEL_TOPIC, make_bag
from fcn_perception.bag.read import Bag
from fcn_perception.errors import BagError

SAMPLE = Path(__file__).resolve().parent.parent / "fcn_perception" / "data" / "camvid_sample"


def sample_pairs():
    lines = (SAMPLE / "val.txt").read_text().split("\n")
    return [tuple(SAMPLE / p for p in line.split()) for line in lines if line.strip()]


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    return {st: make_bag(SAMPLE, "val.txt", root / st, rate=4.0, compressed=True, storage=st)
            for st in ("mcap", "sqlite3")}


def test_bundled_sample_is_small_and_credited():
    files = [p for p in SAMPLE.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 3_000_000
    readme = (SAMPLE / "README.md").read_text()
    assert "Brostow" in readme and "Fauqueur" in readme and "Cipolla" in readme
    assert len(sample_pairs()) == 10


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_make_writes_frames_labels_and_monotonic_stamps(bags, storage):
    made = bags[storage]
    pairs = sample_pairs()
    assert made.frames == len(pairs)
    assert made.period_ns == 250_000_000
    with Bag(made.path) as bag:
        assert bag.topics == {IMAGE_TOPIC: (T.IMAGE, 10), COMPRESSED_TOPIC: (T.COMPRESSED_IMAGE, 10),
                              LABEL_TOPIC: (T.IMAGE, 10)}
        assert bag.image_topic() == IMAGE_TOPIC and bag.label_topic() == LABEL_TOPIC
        assert json.loads(bag.custom_data["fcn_perception.classes"])[0] == "Sky"
        stamps = {t: [] for t in bag.topics}
        for m in bag.messages(sorted(bag.topics)):
            stamps[m.topic].append(m.stamp_ns)
            assert m.log_ns == m.stamp_ns
            img, lab = (np.asarray(Image.open(p)) for p in pairs[m.index])
            if m.topic == IMAGE_TOPIC:
                assert m.msg.encoding == "rgb8" and m.msg.header.frame_id == "camera"
                np.testing.assert_array_equal(bag.decode_image(m), img)
            elif m.topic == LABEL_TOPIC:
                assert m.msg.encoding == "mono8"
                np.testing.assert_array_equal(bag.decode_label(m), lab)
            else:
                assert m.msg.format == "jpeg"
                diff = np.abs(bag.decode_image(m).astype(int) - img.astype(int)).mean()
                assert diff < 6  # JPEG quality 90
    for values in stamps.values():
        assert values == sorted(values) and len(set(values)) == 10
        assert np.all(np.diff(values) == 250_000_000)
    assert stamps[IMAGE_TOPIC] == stamps[LABEL_TOPIC] == stamps[COMPRESSED_TOPIC]


def test_make_from_the_camvid_val_split(camvid_dir, tmp_path):
    made = make_bag(camvid_dir, "val.txt", tmp_path / "val", limit=3, storage="sqlite3")
    assert made.frames == 3 and made.topics == {IMAGE_TOPIC: 3, LABEL_TOPIC: 3}
    assert (tmp_path / "val" / "metadata.yaml").is_file()


def test_make_refuses_bad_input_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="split file"):
        make_bag(SAMPLE, "nope.txt", tmp_path / "a")
    assert not (tmp_path / "a").exists()
    (tmp_path / "b").mkdir()
    with pytest.raises(BagError, match="exists already"):
        make_bag(SAMPLE, "val.txt", tmp_path / "b")
    with pytest.raises(BagError, match="rate"):
        make_bag(SAMPLE, "val.txt", tmp_path / "c", rate=0)


def test_vision_msgs_definitions_match_the_interface_package(repo_root):
    folder = repo_root / "interfaces" / "vision_msgs" / "msg"
    files = sorted(folder.glob("*.msg"))
    assert {f.stem for f in files} == set(T.VISION_MSGS)
    for f in files:
        fields = [ln.strip() for ln in f.read_text().splitlines()
                  if ln.strip() and not ln.strip().startswith("#")]
        assert fields == T.VISION_MSGS[f.stem].splitlines(), f.name


def test_type_hashes_and_bytes_agree_with_rclpy():
    rclpy_serialization = pytest.importorskip("rclpy.serialization")
    vision = pytest.importorskip("vision_msgs.msg")
    from sensor_msgs.msg import Image as RosImage

    from fcn_perception.inference.results import DetectionResult

    store = T.get_typestore()
    rng = np.random.default_rng(0)
    image = T.image_msg(rng.integers(0, 255, (7, 5, 3), dtype=np.uint8), 1_700_000_000_5, "cam")
    det = T.detections_msg(DetectionResult(np.array([[1, 2, 30, 40.5]], np.float32),
                                           np.array([0.75], np.float32), np.array([2])),
                           123_456_789, "cam")
    for msg, typename, cls in ((image, T.IMAGE, RosImage),
                               (det, T.DETECTION_2D_ARRAY, vision.Detection2DArray)):
        raw = bytes(store.serialize_cdr(msg, typename))
        ros = rclpy_serialization.deserialize_message(raw, cls)
        again = bytes(rclpy_serialization.serialize_message(ros))
        assert len(again) == len(raw)
        # equal up to CDR alignment padding, which Fast CDR leaves uninitialised
        assert bytes(store.serialize_cdr(store.deserialize_cdr(again, typename), typename)) == raw
    ros = rclpy_serialization.deserialize_message(
        bytes(store.serialize_cdr(det, T.DETECTION_2D_ARRAY)), vision.Detection2DArray)
    assert ros.header.stamp.nanosec == 123_456_789
    assert ros.detections[0].results[0].hypothesis.class_id == "2"
    assert ros.detections[0].bbox.size_y == pytest.approx(38.5)
    # rclpy's own serialization of a message it built reads back here
    from fcn_perception.ros import messages

    built = messages.detections_msg(ros.header, np.array([[1.0, 2.0, 30.0, 40.5]]),
                                    np.array([0.75]), np.array([2]))
    back = store.deserialize_cdr(rclpy_serialization.serialize_message(built),
                                 T.DETECTION_2D_ARRAY)
    boxes, scores, ids = T.detections_from_msg(back)
    np.testing.assert_allclose(boxes, [[1, 2, 30, 40.5]])
    assert ids.tolist() == [2] and scores.tolist() == [0.75]


def test_type_hashes_equal_the_generated_interfaces():
    import os
    import sys

    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(":") if p]
    store = T.get_typestore()
    checked = 0
    for pkg, pattern in (("vision_msgs", "*.json"), ("sensor_msgs", "Image.json")):
        shares = [p / "share" / pkg / "msg" for p in [*prefixes, Path(sys.prefix)]]
        share = next((s for s in shares if s.is_dir()), None)
        if share is None:
            continue
        for path in sorted(share.glob(pattern)):
            for h in json.loads(path.read_text())["type_hashes"]:
                if h["type_name"] in store.types:
                    assert store.hash_rihs01(h["type_name"]) == h["hash_string"], h["type_name"]
                    checked += 1
    if not checked:
        pytest.skip("no generated type descriptions of vision_msgs / sensor_msgs found")
    assert checked >= 10


# ---------------------------------------------------------------- bad input
def _writer(path, storage="mcap"):
    from rosbags.rosbag2 import StoragePlugin, Writer

    return Writer(path, version=9, storage_plugin=StoragePlugin.MCAP if storage == "mcap"
                  else StoragePlugin.SQLITE3)


def test_missing_bag(tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        Bag(tmp_path / "nothing")


def test_folder_without_metadata(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(BagError, match="no metadata.yaml"):
        Bag(tmp_path)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_corrupt_bag_says_so(bags, tmp_path, storage):
    bag = tmp_path / "bag"
    shutil.copytree(bags[storage].path, bag)
    data = next(p for p in bag.iterdir() if p.suffix in (".mcap", ".db3"))
    raw = data.read_bytes()
    data.write_bytes(raw[:64] + b"\0garbage" * 100)
    with pytest.raises(BagError, match=str(bag)) as err:
        with Bag(bag) as b:
            list(b.messages([IMAGE_TOPIC]))
    assert "could not be read as a rosbag2 (mcap or sqlite3): ReaderError" in str(err.value)
    assert "/camera/image_raw (sensor_msgs/msg/Image, 10 messages)" in str(err.value)


def test_truncated_recording_says_so(bags, tmp_path):
    bag = tmp_path / "bag"
    shutil.copytree(bags["mcap"].path, bag)
    data = next(bag.glob("*.mcap"))
    data.write_bytes(data.read_bytes()[:100_000])  # a recorder killed mid-write
    with pytest.raises(BagError, match="truncated") as err:
        Bag(bag)
    assert "/camera/labels (sensor_msgs/msg/Image, 10 messages)" in str(err.value)


def test_broken_metadata(bags, tmp_path):
    bag = tmp_path / "bag"
    shutil.copytree(bags["mcap"].path, bag)
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [1, 2\n")
    with pytest.raises(BagError, match="could not be read as a rosbag2"):
        Bag(bag)


def test_no_image_topic_lists_what_is_there(tmp_path):
    store = T.get_typestore()
    with _writer(tmp_path / "b") as w:
        conn = w.add_connection("/chatter", "std_msgs/msg/String", typestore=store)
        msg = store.types["std_msgs/msg/String"](data="hello")
        w.write(conn, 1, store.serialize_cdr(msg, "std_msgs/msg/String"))
    with Bag(tmp_path / "b") as bag, pytest.raises(BagError) as err:
        bag.image_topic()
    text = str(err.value)
    assert "no image topic" in text and "/chatter (std_msgs/msg/String, 1 messages)" in text


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_unknown_encoding_names_the_message(tmp_path, storage):
    store = T.get_typestore()
    with _writer(tmp_path / "b", storage) as w:
        conn = w.add_connection(IMAGE_TOPIC, T.IMAGE, typestore=store)
        for i, enc in enumerate(("rgb8", "rgb8", "32FC1")):
            msg = T.image_msg(np.zeros((2, 2, 3), np.uint8), 1000 + i, "cam")
            msg.encoding = enc
            w.write(conn, 1000 + i, store.serialize_cdr(msg, T.IMAGE))
    with Bag(tmp_path / "b") as bag, pytest.raises(BagError) as err:
        for m in bag.messages([IMAGE_TOPIC]):
            bag.decode_image(m)
    text = str(err.value)
    assert "message 2 on /camera/image_raw" in text and "'32FC1'" in text
    assert "stamp 1002 ns" in text and "Topics in the bag" in text


def test_label_topic_must_be_mono8(tmp_path):
    store = T.get_typestore()
    with _writer(tmp_path / "b") as w:
        conn = w.add_connection(LABEL_TOPIC, T.IMAGE, typestore=store)
        msg = T.image_msg(np.zeros((2, 2, 3), np.uint8), 5, "cam")
        w.write(conn, 5, store.serialize_cdr(msg, T.IMAGE))
    with Bag(tmp_path / "b") as bag, pytest.raises(BagError, match="must be mono8"):
        for m in bag.messages([LABEL_TOPIC]):
            bag.decode_label(m)


def test_cli_make_and_errors(tmp_path, capsys):
    from fcn_perception.cli import main

    assert main(["bag", "make", "--data", str(SAMPLE), "--split", "val.txt", "--out",
                 str(tmp_path / "b"), "--rate", "2", "--storage", "sqlite3", "--limit", "2"]) == 0
    assert "2 frames at 2 Hz" in capsys.readouterr().out
    assert main(["bag", "eval", str(tmp_path / "missing"), "--json", str(tmp_path / "m.json"),
                 "--report", str(tmp_path / "r"), "--predictions", str(tmp_path / "b")]) == 2
    assert "does not exist" in capsys.readouterr().err
