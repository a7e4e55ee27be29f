import math

import pytest
import torch

from ovdense.engine import WarmupCosine, WarmupStep, build_lr_scheduler


def test_warmup_cosine_hand_values():
    s = WarmupCosine(max_iter=110, warmup_iters=10, warmup_factor=0.1, min_factor=0.0)
    assert s(0) == pytest.approx(0.1)
    assert s(5) == pytest.approx(0.1 + 0.9 * 0.5)  # 0.55
    assert s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.5)  # halfway through the cosine
    assert s(35) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))  # 0.853553...
    assert s(110) == pytest.approx(0.0, abs=1e-12)
    assert s(500) == pytest.approx(0.0, abs=1e-12)
    s2 = WarmupCosine(max_iter=100, min_factor=0.1)
    assert s2(0) == pytest.approx(1.0)
    assert s2(50) == pytest.approx(0.55)
    assert s2(100) == pytest.approx(0.1)


def test_warmup_step_hand_values():
    s = WarmupStep(steps=[30, 60], gamma=0.1, warmup_iters=10, warmup_factor=0.5)
    assert s(0) == pytest.approx(0.5)
    assert s(4) == pytest.approx(0.7)
    assert s(10) == pytest.approx(1.0)
    assert s(29) == pytest.approx(1.0)
    assert s(30) == pytest.approx(0.1)
    assert s(59) == pytest.approx(0.1)
    assert s(60) == pytest.approx(0.01)


def test_lambda_lr_state_is_weights_only_loadable(tmp_path):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = build_lr_scheduler(opt, WarmupStep(steps=[2], gamma=0.5))
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([2.0, 2.0, 1.0, 1.0])
    torch.save(sched.state_dict(), tmp_path / "s.pt")
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    assert state["last_epoch"] == 4


@pytest.mark.parametrize(
    "kwargs", [dict(max_iter=10, warmup_iters=10), dict(max_iter=10, warmup_factor=2.0)]
)
def test_invalid_schedule_args(kwargs):
    with pytest.raises(ValueError):
        WarmupCosine(**kwargs)
    with pytest.raises(ValueError, match="increasing"):
        WarmupStep(steps=[5, 2])
