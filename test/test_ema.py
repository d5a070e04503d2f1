"""The weight moving average the trainers keep (``--ema-decay``: torch's AveragedModel with
a ramped decay): its update rule against the closed form, its checkpoint round trip and
exact resume, and which weights a checkpoint ships."""
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


def test_average_is_the_closed_form_of_the_ramped_decay():
    """After T updates the average is sum_t c_t * w_t over the model's states w_t, with
    c_t = (1 - d_(t-1)) * prod_(s=t..T-1) d_s and d_n = decay * (1 - exp(-n / h)), h =
    1 / (1 - decay): computed here without the recursion.  Parameters and BatchNorm's
    running statistics alike; the integer step count is the model's."""
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    ema = ModelEMA(net, decay=0.9)
    d = [0.9 * (1 - math.exp(-n / 10.0)) for n in range(8)]  # horizon 1 / (1 - 0.9) = 10
    assert [ema.decay_at(n) for n in range(8)] == pytest.approx(d)
    assert d[0] == 0 and all(a < b < 0.9 for a, b in zip(d, d[1:]))
    states = []
    for _ in range(7):
        _step(net, opt)
        ema.update(net)
        states.append({k: v.clone() for k, v in net.state_dict().items()})
    T = len(states)
    coef = [(1 - d[t - 1]) * math.prod(d[t:T]) for t in range(1, T + 1)]
    assert sum(coef) == pytest.approx(1.0)
    got, averaged = ema.module.state_dict(), set()
    for k, v in got.items():
        if v.dtype.is_floating_point:
            expected = sum(c * s[k].double() for c, s in zip(coef, states)).float()
            torch.testing.assert_close(v, expected, rtol=1e-5, atol=1e-6, msg=k)
            if not torch.allclose(states[0][k], states[-1][k]):  # conv bias before BN: ~no grad
                # a real average: neither the first nor the last state
                assert not torch.allclose(v, states[-1][k]), k
                assert not torch.allclose(v, states[0][k]), k
                averaged.add(k)
        else:
            assert torch.equal(v, states[-1][k]), k
    assert int(got["1.num_batches_tracked"]) == 7 and ema.updates == 7
    assert {"0.weight", "1.weight", "1.running_mean", "1.running_var"} <= averaged
    assert not ema.module.training
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_first_update_copies_the_model():
    net = _net()
    ema = ModelEMA(net, decay=0.998)
    with torch.no_grad():
        net[0].weight.add_(1.0)
    ema.update(net)
    for k, v in net.state_dict().items():  # d_0 = 0: the random start is forgotten
        torch.testing.assert_close(ema.module.state_dict()[k], v, rtol=0, atol=0, msg=k)


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
    # the resumed run goes on exactly as the first: same steps, same averages
    for n, o, e in ((net, opt, ema), (net2, opt2, ema2)):
        torch.manual_seed(1)
        for _ in range(2):
            _step(n, o)
            e.update(n)
    assert ema2.updates == 5
    for k, v in ema.module.state_dict().items():
        torch.testing.assert_close(ema2.module.state_dict()[k], v, rtol=0, atol=0, msg=k)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(net2.state_dict()[k], v, rtol=0, atol=0, msg=k)


def test_checkpoints_of_the_earlier_average_still_ship_and_resume():
    """Runs started before the average was an AveragedModel wrote the same block:
    ``{"updates": n, "module": state dict}`` (the keys of the model itself)."""
    net = _net()
    before = {"epoch": 3, "model": {k: v + 1 for k, v in net.state_dict().items()},
              "ema": {"updates": 40, "module": net.state_dict()}}
    assert selected_weights(before) is before["ema"]["module"]
    ema = ModelEMA(_net(), decay=0.9)
    ema.load_state_dict(before["ema"])
    assert ema.updates == 40 and ema.state_dict()["updates"] == 40
    for k, v in net.state_dict().items():
        assert torch.equal(ema.module.state_dict()[k], v), k
    assert set(ema.state_dict()["module"]) == set(net.state_dict())


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
