"""``train.late_freeze``: the stem and first stage stop training late in the run (FreezeOut).

Frozen, a 28 px ResNet-20 step skips the first stage's backward pass (0.64x the time on a
2-core AVX2 CPU), which buys a time-budgeted run more steps (issue 25).
"""

from __future__ import annotations

import pytest
import torch

from helpers import NUM_CLASSES, CrashAfter, SeededLoader, blobs, small_net
from helpers import loop_config as config
from helpers import loop_run as run
from resnetlab.engine.plan import make_plan
from resnetlab.engine.schedules import late_freeze_schedule, run_phases
from resnetlab.engine.task import Classification
from resnetlab.models.registry import create_model
from resnetlab.utils.errors import ConfigError


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("resnet20", num_classes=NUM_CLASSES, in_chans=2, width_mult=0.25)


def _state(model: torch.nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def test_the_schedule_freezes_from_its_fraction_of_the_steps():
    frozen = late_freeze_schedule(0.5, 16)
    assert [frozen(step) for step in (0, 7, 8, 15)] == [False, False, True, True]
    assert not any(late_freeze_schedule(None, 16)(step) for step in range(16))
    # the 28 px third of a 2043-step main job trains frozen from its first step
    assert run_phases([20, 24, 28], 0.667, 2043)[-1] == (1362, 2043, (28, True))


def test_stem_and_first_stage_stop_training_and_their_bn_follows_the_data(tmp_path):
    model = _net()
    at_freeze = {}

    def snapshot(row):  # epoch 1 ends at step 8, where the freeze begins
        if row["epoch"] == 1:
            at_freeze.update(_state(model, ""))

    _, result = run(tmp_path, config(epochs=2, late_freeze=0.5), model=model, on_epoch_end=snapshot)
    assert result.steps == 16
    after = _state(model, "")
    for key in at_freeze:
        same = torch.equal(at_freeze[key], after[key])
        if key.startswith(("conv1.", "bn1.", "layer1.")) and not key.endswith(
                ("running_mean", "running_var", "num_batches_tracked")):
            assert same, f"{key} trained while frozen"
        elif key.startswith(("layer2.", "layer3.", "fc.")) and key.endswith("weight"):
            assert not same, f"{key} stopped training"
    # frozen stages keep BatchNorm in training mode: their statistics follow the data
    assert not torch.equal(at_freeze["layer1.0.bn1.running_mean"], after["layer1.0.bn1.running_mean"])
    assert all(p.requires_grad for p in model.parameters())  # handed back whole


def test_a_run_resumed_inside_the_frozen_part_is_bit_identical(tmp_path):
    cfg = config(epochs=2, checkpoint_every=5, deterministic=True, late_freeze=0.5)
    x, y = blobs(256)
    straight, _ = run(tmp_path, cfg, train=SeededLoader(x, y, 32), model=_net(), name="a")
    with pytest.raises(KeyboardInterrupt):  # killed at step 12: checkpoint at 10, frozen from 8
        run(tmp_path, cfg, train=CrashAfter(SeededLoader(x, y, 32), 13), model=_net(), name="b")
    resumed, result = run(tmp_path, cfg, train=SeededLoader(x, y, 32), model=_net(), name="b",
                          resume=True)
    assert result.steps == 16
    a, b = _state(straight, ""), _state(resumed, "")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_model_without_stages_to_freeze_is_a_one_line_error():
    cfg = config(late_freeze=0.67)
    x, y = blobs(64)
    with pytest.raises(ConfigError, match=r"--late-freeze 0.67: Sequential needs a stem, a first "
                                          r"stage and a later one .*pass --late-freeze none"):
        make_plan(cfg, SeededLoader(x, y, 32), task=Classification(NUM_CLASSES), has_val=True,
                  model=small_net())
    mlp = create_model("mlp_resnet", num_classes=NUM_CLASSES, in_features=8)
    with pytest.raises(ConfigError, match=r"its stages are stem, layer1, fc"):
        make_plan(cfg, SeededLoader(x, y, 32), task=Classification(NUM_CLASSES), has_val=True,
                  model=mlp)
