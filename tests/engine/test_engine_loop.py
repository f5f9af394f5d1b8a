"""fit / evaluate on tiny synthetic data: learning, exact resume, NaN handling, early stopping."""

from __future__ import annotations

import csv
import importlib.util
import json

import pytest
import safetensors.torch
import torch
from torch import nn

from helpers import NUM_CLASSES, CrashAfter, NaNAfter, SeededLoader, blobs, small_net
from helpers import loop_config as config
from helpers import loop_run as run
from resnetlab.checkpoint import load_checkpoint
from resnetlab.engine import (
    EPOCH_COLUMNS,
    STEP_COLUMNS,
    RunConfig,
    TrainingDiverged,
    epoch_batches,
    evaluate,
    new_run_dir,
)
from resnetlab.engine.loop import folded_for_eval
from resnetlab.utils.errors import ConfigError


def test_loss_decreases_and_separable_set_is_learned(tmp_path):
    model, result = run(tmp_path, config(epochs=4))
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.history[-1]["val_top1"] > 0.9
    test = evaluate(model, [blobs(128, seed=2)], device="cpu", num_classes=NUM_CLASSES)
    assert test.top1 > 0.9 and test.num_samples == 128
    assert len(test.per_class) == NUM_CLASSES and sum(map(sum, test.confusion)) == 128


def test_run_directory_files(tmp_path):
    _, result = run(tmp_path, config(epochs=2, checkpoint_every=3))
    rd = result.run_dir
    rows = list(csv.DictReader(open(rd / "metrics.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and list(rows[0]) == list(EPOCH_COLUMNS)
    steps = list(csv.DictReader(open(rd / "steps.csv")))
    assert [int(r["step"]) for r in steps] == [5, 10, 15] and list(steps[0]) == list(STEP_COLUMNS)
    assert len((rd / "metrics.jsonl").read_text().splitlines()) == 2
    assert RunConfig.from_yaml(rd / "config.yaml") == config(epochs=2, checkpoint_every=3)
    ckpt = load_checkpoint(rd)  # a run dir gives checkpoints/best
    assert ckpt.path == rd / "checkpoints" / "best" and ckpt.meta["classes"] == list("abcd")
    assert ckpt.meta["model"] == {"name": "small"} and ckpt.meta["step"] == result.best_epoch * 8
    fresh = small_net()
    fresh.load_state_dict(safetensors.torch.load_file(rd / "checkpoints/last/model.safetensors"))
    last = load_checkpoint(rd / "checkpoints" / "last")
    assert last.train_state["progress"]["step"] == 16 and last.train_state["progress"]["epoch"] == 2
    if importlib.util.find_spec("tensorboard") is not None:  # optional dependency
        assert list((rd / "tb").glob("events.out.tfevents.*"))


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("ema", [None, 0.9])
def test_resume_mid_epoch_is_bit_identical(tmp_path, ema):
    """Straight run vs. a run 'killed' after 11 steps (checkpoint at 10), then resumed."""
    cfg = config(epochs=2, checkpoint_every=5, deterministic=True, ema_decay=ema)
    x, y = blobs(256)
    straight, r1 = run(tmp_path, cfg, train=SeededLoader(x, y, 32), model=small_net(0.2), name="a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, cfg, train=CrashAfter(SeededLoader(x, y, 32), 11), model=small_net(0.2), name="b")
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last").meta["step"] == 10
    torch.manual_seed(123)  # the resumed run must not depend on the global RNG it starts with
    resumed, r2 = run(tmp_path, cfg, train=SeededLoader(x, y, 32), model=small_net(0.2), name="b",
                      resume=True)
    for key, value in _weights(straight).items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert r2.steps == r1.steps == 16
    drop = ("images_per_s", "epoch_time_s", "elapsed_s")
    strip = [{k: v for k, v in row.items() if k not in drop} for row in r1.history]
    assert [{k: v for k, v in row.items() if k not in drop} for row in r2.history] == strip
    steps_b = [json.loads(line)["step"] for line in open(tmp_path / "b" / "steps.jsonl")]
    assert steps_b == [5, 10, 15]  # the row logged before the kill at step 10 is not duplicated
    if ema:
        best_a = load_checkpoint(tmp_path / "a").model_state
        best_b = load_checkpoint(tmp_path / "b").model_state
        assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)


def test_resume_plain_iterable_skips_batches(tmp_path):
    x, y = blobs(128)
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 128, 32)]
    cfg = config(epochs=2, checkpoint_every=2, deterministic=True)
    straight, _ = run(tmp_path, cfg, train=batches, name="a")

    def crashing():
        yield from batches[:3]
        raise KeyboardInterrupt

    class Once:
        def __len__(self):
            return 4

        def __iter__(self):
            return crashing()

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, cfg, train=Once(), name="b")
    resumed, _ = run(tmp_path, cfg, train=batches, name="b", resume=True)
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in _weights(straight).items())


def test_nan_loss_stops_run_and_keeps_last_good_checkpoint(tmp_path):
    model = NaNAfter(small_net(), start=12)
    cfg = config(epochs=3, checkpoint_every=4, max_nonfinite_steps=3)
    with pytest.raises(TrainingDiverged) as info:
        run(tmp_path, cfg, model=model)
    message = str(info.value)
    assert "\n" not in message
    assert "at step 15 " in message and "lr " in message and "last finite loss" in message
    assert "checkpoints/last" in message
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last")
    assert ckpt.meta["step"] == 12  # saved before the streak; the run never overwrote it
    assert all(torch.isfinite(t).all() for t in ckpt.model_state.values())
    # skipped steps left the parameters (and momentum) alone: they are still the step-12 ones
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), ckpt.model_state[name]), name


def test_isolated_nan_steps_are_skipped_and_counted(tmp_path):
    class OneBad(NaNAfter):
        def forward(self, x):
            out = self.model(x)
            if self.training:
                self.calls += 1
                if self.calls in (3, 9):
                    out = out * float("nan")
            return out

    _, result = run(tmp_path, config(epochs=2, max_nonfinite_steps=2), model=OneBad(small_net(), 0))
    assert [row["nonfinite_steps"] for row in result.history] == [1, 2]
    assert all(row["train_loss"] == row["train_loss"] for row in result.history)  # not NaN


def test_early_stopping(tmp_path):
    calls = []
    cfg = config(epochs=10, early_stop_patience=2, early_stop_metric="val_loss")
    cfg.optim.lr = 1e-9  # nothing improves after the first epoch
    _, result = run(tmp_path, cfg, on_epoch_end=calls.append)
    assert result.stopped_early and result.epochs_run == 3 and len(calls) == 3
    assert result.best_epoch == 1


def test_on_epoch_end_can_stop(tmp_path):
    _, result = run(tmp_path, config(epochs=5), on_epoch_end=lambda row: row["epoch"] >= 2)
    assert result.epochs_run == 2 and result.stopped_early


def test_max_steps_and_resume_without_checkpoint(tmp_path):
    _, result = run(tmp_path, config(epochs=5, max_steps=6))
    assert result.steps == 6 and result.history[-1]["epoch"] == 0.75
    with pytest.raises(ConfigError, match="no checkpoints/last"):
        run(tmp_path, config(), name="never-ran", resume=True)


def test_evaluate_tta_and_label_smoothing():
    model = small_net().eval()
    data = [blobs(64, seed=3)]
    plain = evaluate(model, data, device="cpu", num_classes=NUM_CLASSES)
    same = evaluate(model, data, device="cpu", num_classes=NUM_CLASSES, tta=lambda x: [x, x])
    assert same.top1 == plain.top1 and same.loss == pytest.approx(plain.loss, rel=1e-5)
    smooth = evaluate(model, data, device="cpu", num_classes=NUM_CLASSES, label_smoothing=0.1)
    x, y = data[0]
    ref = nn.functional.cross_entropy(model(x), y, label_smoothing=0.1).item()
    assert smooth.loss == pytest.approx(ref, rel=1e-5)
    flipped = evaluate(model, data, device="cpu", num_classes=NUM_CLASSES,
                       tta=lambda x: [x, x.flip(-1)])
    assert flipped.num_samples == 64 and flipped.loss != plain.loss


def test_evaluate_with_folded_batch_norm_matches_and_leaves_the_model_alone():
    model = small_net()
    with torch.no_grad():  # running statistics far from the initial 0 / 1, so folding matters
        model.train()(blobs(64, seed=4)[0] * 3 + 1)
    data = [blobs(64, seed=3), blobs(32, seed=5)]
    plain = evaluate(model, data, device="cpu", num_classes=NUM_CLASSES)
    folded = evaluate(model, data, device="cpu", num_classes=NUM_CLASSES, fold_bn=True)
    assert folded.num_samples == plain.num_samples == 96
    assert folded.top1 == plain.top1 and folded.loss == pytest.approx(plain.loss, rel=1e-5)
    assert model.training and isinstance(model[1], nn.BatchNorm2d)  # the copy was folded
    assert folded_for_eval(model, data[0][0][:1])[1].__class__ is nn.Identity
    no_bn = nn.Sequential(nn.Flatten(), nn.Linear(2 * 8 * 8, NUM_CLASSES))
    assert folded_for_eval(no_bn, data[0][0][:1]) is no_bn  # nothing to fold: no copy


def test_epoch_batches_sharding():
    loader = [(torch.full((1,), float(i)), torch.zeros(1, dtype=torch.long)) for i in range(10)]
    picked = [int(x) for x, _ in epoch_batches(loader, 0, start=1, steps=5, rank=1, world_size=2)]
    assert picked == [3, 5, 7, 9]


def test_new_run_dir_never_overwrites(tmp_path):
    first = new_run_dir(tmp_path, model="resnet20", data="folder:/data/pets/")
    assert first.name.startswith("resnet20-pets-")
    second = new_run_dir(tmp_path, model="resnet20", data="folder:/data/pets/")
    assert second != first and second.is_dir()
    new_run_dir(tmp_path, "mine")
    with pytest.raises(ConfigError, match="--resume"):
        new_run_dir(tmp_path, "mine")


def test_bf16_autocast_channels_last_trains(tmp_path):
    cfg = config(epochs=1, channels_last=True)
    cfg.train.precision = "bf16"
    model, result = run(tmp_path, cfg)
    assert result.history[-1]["train_loss"] < 1.4
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("key, value, match", [
    ("log_every", 0, "train.log_every"), ("ema_decay", 1.5, "train.ema_decay"),
    ("label_smoothing", 1.0, "train.label_smoothing"), ("early_stop_metric", "acc", "early_stop_metric"),
])
def test_bad_train_settings_are_config_errors(tmp_path, key, value, match):
    """Checked once, before any work (engine.config.validate), not again by fit."""
    from resnetlab.engine.config import validate

    with pytest.raises(ConfigError, match=match):
        validate(config(**{key: value}))


def test_loader_shorter_than_its_len_is_an_error_not_a_hang(tmp_path):
    x, y = blobs(64)

    class Liar:
        def __len__(self):
            return 3

        def __iter__(self):
            return iter([(x[:32], y[:32])])

    with pytest.raises(ConfigError, match="gave 1 batches in epoch 1 but its len"):
        run(tmp_path, config(), train=Liar())
