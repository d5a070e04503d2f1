"""The weight moving average the detection trainers keep (``--ema-decay``): its update
rule, its checkpoint round trip, and which weights a checkpoint ships."""
import math

import pytest
import torch
from torch import nn

from fcn_perception.errors import CheckpointError
from fcn_perception.training.engine import Checkpointer, ModelEMA, selected_weights


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())


def _step(net: nn.Module, opt: torch.optim.Optimizer) -> None:
    net.train()
    loss = net(torch.randn(2, 3, 8, 8)).square().mean()  # also moves BatchNorm's running stats
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_average_follows_the_ramped_decay_and_copies_integer_buffers():
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    ema = ModelEMA(net, decay=0.9)
    expected = {k: v.clone() for k, v in net.state_dict().items()}
    for t in range(1, 6):
        _step(net, opt)
        ema.update(net)
        d = 0.9 * (1 - math.exp(-t / 10.0))  # horizon 1 / (1 - 0.9) = 10 steps
        assert ema.decay_at(t) == pytest.approx(d)
        for k, v in net.state_dict().items():
            expected[k] = expected[k] * d + v * (1 - d) if v.dtype.is_floating_point else v
    got = ema.module.state_dict()
    current = net.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v, msg=k)
    assert int(got["1.num_batches_tracked"]) == int(current["1.num_batches_tracked"]) == 5
    # a real average: neither the first nor the last weights
    assert not torch.equal(got["0.weight"], current["0.weight"])
    assert not ema.module.training
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_first_update_follows_the_model():
    net = _net()
    ema = ModelEMA(net, decay=0.998)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    ema.update(net)
    # d_1 = 0.998 * (1 - exp(-1/500)) ~ 0.002: the random start is nearly forgotten
    torch.testing.assert_close(ema.module[0].weight, net[0].weight, atol=0.01, rtol=0)


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5, 1.5])
def test_decay_outside_the_open_interval_is_refused(decay):
    with pytest.raises(ValueError, match=r"EMA decay must be in \(0, 1\)"):
        ModelEMA(_net(), decay)


def test_checkpoint_round_trip_and_shipped_weights(tmp_path):
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    ema = ModelEMA(net, decay=0.9)
    for _ in range(3):
        _step(net, opt)
        ema.update(net)
    Checkpointer(tmp_path).save(0, net, opt, sched, best=0.5, is_best=True, ema=ema)
    state = torch.load(tmp_path / "best.pt", weights_only=True)
    shipped = selected_weights(state)
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(shipped[k], v, rtol=0, atol=0, msg=k)
    assert not torch.equal(shipped["0.weight"], state["model"]["0.weight"])

    net2 = _net()
    opt2 = torch.optim.SGD(net2.parameters(), lr=0.5)
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, 1)
    ema2 = ModelEMA(net2, decay=0.9)
    assert Checkpointer(tmp_path).resume(net2, opt2, sched2, ema=ema2) == (1, 0.5)
    assert ema2.updates == 3
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(ema2.module.state_dict()[k], v, rtol=0, atol=0, msg=k)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(net2.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_without_an_average_the_trained_weights_ship_and_resume_asks_for_one(tmp_path):
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    _step(net, opt)
    Checkpointer(tmp_path).save(0, net, opt, sched, best=0.1, is_best=True)
    state = torch.load(tmp_path / "best.pt", weights_only=True)
    assert "ema" not in state and selected_weights(state) is state["model"]
    with pytest.raises(CheckpointError, match=r"lacks \['ema'\].*without --ema-decay"):
        Checkpointer(tmp_path).resume(net, opt, sched, ema=ModelEMA(net, 0.9))
