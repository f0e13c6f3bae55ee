import math

import pytest
import torch

from osum_echat.train.scheduler import WarmupLR, build_scheduler


def lrs_over(sched, opt, n):
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmuplr_rises_linearly_peaks_at_base_lr_then_inverse_sqrt():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    lrs = lrs_over(WarmupLR(opt, warmup_steps=10), opt, 40)
    # linear warmup: lr_k = base * k / warmup for update k = 1..warmup
    for k in range(1, 11):
        assert lrs[k - 1] == pytest.approx(2.0 * k / 10)
    # then base * sqrt(warmup / k)
    for k in (11, 20, 40):
        assert lrs[k - 1] == pytest.approx(2.0 * math.sqrt(10 / k))
    assert max(lrs) == pytest.approx(2.0)


def test_set_step_matches_stepping():
    opt_a = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    a = WarmupLR(opt_a, warmup_steps=5)
    lrs_over(a, opt_a, 17)
    opt_b = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    b = WarmupLR(opt_b, warmup_steps=5)
    b.set_step(17)
    assert opt_b.param_groups[0]["lr"] == pytest.approx(opt_a.param_groups[0]["lr"])


def test_unknown_scheduler_is_named():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="cosine"):
        build_scheduler("cosine", opt, {})
