"""Optimiser parameter groups, the fused skip of non-finite steps, and the weight EMA."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnetlab.engine import ModelEma, OptimConfig, ScheduleConfig, build_optimizer, lr_schedule
from resnetlab.engine.guard import NonFiniteGuard
from resnetlab.engine.metrics import StepStat
from resnetlab.utils.errors import ConfigError


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.LayerNorm(4 * 2 * 2), nn.Linear(16, 2))


def names(model: nn.Module, params) -> set[str]:
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_weight_decay_skips_norm_and_bias():
    model = net()
    opt = build_optimizer(model, OptimConfig(weight_decay=5e-4))
    decay, no_decay = opt.param_groups
    assert names(model, decay["params"]) == {"0.weight", "5.weight"}
    assert names(model, no_decay["params"]) == {"0.bias", "1.weight", "1.bias", "4.weight", "4.bias", "5.bias"}
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(g["lr_scale"] == 1.0 for g in opt.param_groups)


def test_decay_norm_and_bias_on_request_and_frozen_params_left_out():
    model = net()
    model[0].requires_grad_(False)
    opt = build_optimizer(model, OptimConfig(decay_norm_and_bias=True))
    assert len(opt.param_groups) == 1
    assert names(model, opt.param_groups[0]["params"]) == {
        "1.weight", "1.bias", "4.weight", "4.bias", "5.weight", "5.bias"}


def test_sgd_is_the_paper_recipe_and_adamw_builds():
    model = net()
    sgd = build_optimizer(model, OptimConfig(lr=0.1, momentum=0.9, nesterov=True))
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["fused"]
    adamw = build_optimizer(model, OptimConfig(name="adamw", lr=1e-3, betas=(0.9, 0.95)))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.9, 0.95)
    # checked once, with the whole config (engine.config.validate), not by build_optimizer
    from resnetlab.engine.config import RunConfig, validate

    with pytest.raises(ConfigError, match="nesterov"):
        validate(RunConfig(optim=OptimConfig(momentum=0.0, nesterov=True)))
    with pytest.raises(ConfigError, match="optim.name"):
        validate(RunConfig(optim=OptimConfig(name="lamb")))


def reference_step(model: nn.Module, cfg: OptimConfig, x: torch.Tensor) -> dict[str, torch.Tensor]:
    ref = net()
    ref.load_state_dict(model.state_dict())
    opt = torch.optim.SGD([{"params": [p for p in ref.parameters() if p.ndim > 1], "weight_decay": cfg.weight_decay},
                           {"params": [p for p in ref.parameters() if p.ndim <= 1], "weight_decay": 0.0}],
                          lr=cfg.lr, momentum=cfg.momentum, nesterov=True, foreach=False)
    ref(x).square().mean().backward()
    opt.step()
    return dict(ref.named_parameters())


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_non_finite_first_step_is_skipped_on_device(name):
    model, cfg = net(), OptimConfig(name=name, lr=0.1)
    opt = build_optimizer(model, cfg)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    guard = NonFiniteGuard(model, opt, scaler, limit=5, lr_fn=lr_schedule(ScheduleConfig(), 0.1, 10, 10))
    assert guard.device_gate
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = torch.randn(2, 3, 4, 4)
    (model(x).sum() * float("nan")).backward()
    guard.step(model(x).sum() * float("nan"))
    opt.zero_grad()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    guard.observe([StepStat(1, 2, float("nan"), 0.0)], None)
    assert guard.total == 1
    if name == "sgd":  # the skipped first step must leave the momentum buffer at zero
        assert all(torch.equal(opt.state[p]["momentum_buffer"], torch.zeros_like(p)) for p in model.parameters())
        expected = reference_step(model, cfg, x)
        model(x).square().mean().backward()
        guard.step(torch.tensor(1.0))
        for n, p in model.named_parameters():
            torch.testing.assert_close(p, expected[n])


def test_ema_tracks_weights_and_copies_buffers():
    model = net()
    ema = ModelEma(model, decay=0.5)
    start = {n: p.detach().clone() for n, p in ema.module.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        model[1].running_mean.fill_(3.0)
    ema.update()  # first update: decay min(0.5, 1/10) = 0.1
    for n, p in ema.module.named_parameters():
        torch.testing.assert_close(p, start[n] + 0.9)
    assert torch.equal(ema.module[1].running_mean, torch.full((4,), 3.0))
    assert not any(p.requires_grad for p in ema.module.parameters()) and not ema.module.training
    for _ in range(200):
        ema.update()
    assert ema.current_decay() == 0.5
    for p_ema, p in zip(ema.module.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(p_ema, p)
    restored = ModelEma(net(), decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.updates == 201
    assert all(torch.equal(a, b) for a, b in zip(restored.module.state_dict().values(),
                                                  ema.module.state_dict().values(), strict=True))
