"""FCN / U-Net shapes on odd sizes and the bilinear initialisation of the upsampling."""

import pytest
import torch
from torch.nn import functional as F

from fcn_perception.models import build_model
from fcn_perception.models.upsample import BilinearUpsample

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("variant", ["fcn32s", "fcn16s", "fcn8s"])
@pytest.mark.parametrize("size", [(37, 53), (1, 1), (64, 96), (71, 33)])
def test_fcn_resnet_output_is_input_size(variant, size):
    model = build_model({"name": variant, "backbone": "resnet18", "num_classes": 11}).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *size))
    assert out.shape == (1, 11, *size)


def test_fcn8s_vgg16_and_resnet50_output_is_input_size():
    for backbone in ("vgg16", "resnet50"):
        model = build_model({"name": "fcn8s", "backbone": backbone, "num_classes": 5}).eval()
        with torch.no_grad():
            out = model(torch.randn(1, 3, 45, 61))
        assert out.shape == (1, 5, 45, 61), backbone


def test_vgg16_fc6_fc7_are_convolutions():
    model = build_model({"name": "fcn8s", "backbone": "vgg16", "num_classes": 11})
    assert model.backbone.fc6.kernel_size == (7, 7) and model.backbone.fc6.out_channels == 4096
    assert model.backbone.fc7.kernel_size == (1, 1) and model.backbone.fc7.out_channels == 4096
    assert model.score_s32.kernel_size == (1, 1)


@pytest.mark.parametrize("size", [(29, 47), (8, 8), (3, 2)])
def test_unet_output_is_input_size(size):
    model = build_model({"name": "unet", "num_classes": 4, "width": 8}).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 4, *size)


@pytest.mark.parametrize("factor", [2, 8, 16, 32])
def test_corner_grid_upsampling_equals_bilinear_interpolation(factor):
    x = torch.randn(1, 3, 5, 7, dtype=torch.float64)
    up = BilinearUpsample(3, factor, "corner").double()
    h, w = factor * 4 + 1, factor * 6 + 1  # the span between the first and last cell centre
    expected = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=True)
    with torch.no_grad():
        out = up(x)
    assert out.shape[-2:] == (5 * factor, 7 * factor)
    torch.testing.assert_close(out[..., :h, :w], expected)


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_center_grid_upsampling_equals_bilinear_interpolation(factor):
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64)
    up = BilinearUpsample(2, factor, "center").double()
    expected = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    with torch.no_grad():
        out = up(x)
    assert out.shape == expected.shape
    m = factor  # away from the border, where interpolate clamps and the convolution zero-pads
    torch.testing.assert_close(out[..., m:-m, m:-m], expected[..., m:-m, m:-m])


def test_upsampling_is_learnable_and_skip_scores_start_at_zero():
    model = build_model({"name": "fcn8s", "backbone": "resnet18", "num_classes": 11})
    assert model.up_final.weight.requires_grad
    assert torch.count_nonzero(model.score_s16.weight) == 0
    assert torch.count_nonzero(model.score_s8.weight) == 0


def test_fcn8s_prediction_is_spatially_aligned():
    """A single bright column in the stride-8 scores lands on the matching input columns."""
    model = build_model({"name": "fcn8s", "backbone": "resnet18", "num_classes": 1}).eval()
    scores = torch.zeros(1, 1, 6, 8)
    scores[..., 3] = 1.0  # stride-8 cell 3 is centred on input column 24 ("corner" grid)
    with torch.no_grad():
        up = model.up_final(scores)[0, 0, 20]
    assert int(up.argmax()) == 24
    assert up[24 - 4] == pytest.approx(0.5) and up[24 + 4] == pytest.approx(0.5)


def test_unknown_architecture_says_what_is_expected():
    with pytest.raises(ValueError, match="expected one of"):
        build_model({"name": "fcn4s", "num_classes": 3})
    with pytest.raises(ValueError, match="unknown backbone"):
        build_model({"name": "fcn8s", "backbone": "vgg19", "num_classes": 3})
