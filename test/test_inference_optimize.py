"""The exact speed rewrites: sub-pixel transposed convolutions, the FCN phase argmax and
the upsampled argmax of reduced-size scores."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcn_perception.inference.optimize import (
    FCNLabels,
    SubpixelConvTranspose2d,
    replace_transposed_convs,
)
from fcn_perception.inference.postprocess import argmax_channels, upsampled_argmax
from fcn_perception.models import build_model
from fcn_perception.models.upsample import BilinearUpsample


@pytest.mark.parametrize("deconv", [
    BilinearUpsample(11, 8, "corner"), BilinearUpsample(11, 2, "corner"),
    BilinearUpsample(5, 8, "center"), BilinearUpsample(5, 32, "center"),
    nn.ConvTranspose2d(4, 6, 3, 2, 1, 1), nn.ConvTranspose2d(4, 6, 5, 3, 2, 1),
    nn.ConvTranspose2d(4, 6, 2, 2), nn.ConvTranspose2d(4, 6, 7, 2, 3, 1, bias=False),
    nn.ConvTranspose2d(4, 6, 1, 1),
], ids=lambda m: f"k{m.kernel_size[0]}s{m.stride[0]}p{m.padding[0]}op{m.output_padding[0]}")
def test_subpixel_form_equals_the_transposed_convolution(deconv):
    torch.manual_seed(0)
    with torch.no_grad():
        deconv.weight.normal_()
    sub = SubpixelConvTranspose2d(deconv)
    for hw in ((1, 1), (5, 7), (45, 60), (13, 2)):
        x = torch.randn(2, deconv.in_channels, *hw)
        with torch.no_grad():
            ref, out = deconv(x), sub(x)
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))


def test_rewritten_fcn_and_phase_argmax_agree_with_the_original():
    torch.manual_seed(0)
    model = build_model({"name": "fcn8s", "backbone": "resnet18", "num_classes": 11}).eval()
    with torch.no_grad():
        for layer in (model.score_s16, model.score_s8):
            layer.weight.normal_(std=0.05)
    fast = build_model({"name": "fcn8s", "backbone": "resnet18", "num_classes": 11}).eval()
    fast.load_state_dict(model.state_dict())
    assert replace_transposed_convs(fast) == 3
    labels = FCNLabels(fast).eval()
    for hw in ((97, 131), (64, 64), (1, 1)):
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            ref = model(x)
            torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-4)
            agree = (labels(x) == ref.argmax(1).to(torch.uint8)).float().mean()
        assert labels(x).dtype == torch.uint8 and agree >= 0.999


@pytest.mark.parametrize("shape, out_hw", [
    ((11, 180, 240), (360, 480)), ((5, 7, 9), (13, 31)), ((3, 1, 1), (4, 5)),
    ((11, 45, 60), (361, 479)), ((4, 10, 10), (7, 7)), ((4, 10, 10), (10, 10)),
])
def test_upsampled_argmax_equals_interpolate_then_argmax(shape, out_hw):
    rng = np.random.default_rng(0)
    for scores in (rng.standard_normal(shape).astype(np.float32),  # boundaries everywhere
                   np.cumsum(rng.standard_normal(shape), axis=1).astype(np.float32)):
        ref = F.interpolate(torch.from_numpy(scores)[None], size=out_hw, mode="bilinear",
                            align_corners=False).argmax(1)[0].numpy()
        out = upsampled_argmax(scores, out_hw)
        assert out.dtype == np.uint8 and out.shape == out_hw
        assert (out == ref).mean() >= 0.9999


def test_argmax_channels_breaks_ties_like_argmax():
    scores = np.zeros((4, 2, 3), np.float32)
    scores[2, 0, 0] = scores[3, 0, 0] = 1.0
    assert argmax_channels(scores).tolist() == np.argmax(scores, axis=0).tolist()
