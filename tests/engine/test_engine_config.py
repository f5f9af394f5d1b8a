"""RunConfig <-> YAML, type checks and dotted overrides."""

from __future__ import annotations

import pytest

from resnetlab.engine import RunConfig, apply_overrides
from resnetlab.utils.errors import ConfigError


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig()
    cfg.model.kwargs = {"width_mult": 0.5, "drop_path": 0.1}
    cfg.optim.betas = (0.8, 0.9)
    cfg.schedule.milestones = [30.0, 45.5]
    cfg.train.ema_decay = 0.999
    cfg.name = "exp1"
    cfg.to_yaml(tmp_path / "c.yaml")
    back = RunConfig.from_yaml(tmp_path / "c.yaml")
    assert back == cfg and isinstance(back.optim.betas, tuple)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_partial_file_keeps_defaults_and_reads_yaml11_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 1e-3\n  name: adamw\ntrain:\n  epochs: 3\n")
    cfg = RunConfig.from_yaml(path)
    assert cfg.optim.lr == 0.001 and cfg.optim.name == "adamw" and cfg.train.epochs == 3
    assert cfg.data == RunConfig().data
    (tmp_path / "empty.yaml").write_text("")
    assert RunConfig.from_yaml(tmp_path / "empty.yaml") == RunConfig()


@pytest.mark.parametrize("text, match", [
    ("optim:\n  lrr: 0.1\n", r"c\.yaml: unknown key optim\.lrr \(did you mean lr\?\)"),
    ("trian:\n  epochs: 1\n", r"unknown key trian \(did you mean train\?\)"),
    ("train:\n  epochs: many\n", r"train\.epochs must be int, got 'many'"),
    ("train:\n  channels_last: 1\n", r"train\.channels_last must be bool"),
    ("optim:\n  betas: [0.9]\n", r"optim\.betas needs 2 values"),
    ("optim: 3\n", r"optim must be a mapping"),
    ("- a\n- b\n", r"expected a mapping"),
    ("train: [\n", r"c\.yaml line \d+: not valid YAML"),
])
def test_bad_files_name_key_and_file(tmp_path, text, match):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        RunConfig.from_yaml(path)
    assert "\n" not in str(info.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.from_yaml("/nonexistent/config.yaml")


def test_overrides_are_typed_and_parsed():
    cfg = apply_overrides(RunConfig(), {
        "optim.lr": "0.05", "train.epochs": 3, "train.ema_decay": "null", "data.name": "123",
        "schedule.milestones": "[30, 45]", "train.deterministic": "true", "model.kwargs.width_mult": "0.25",
        "data.data_dir": "/data",
    })
    assert cfg.optim.lr == 0.05 and cfg.train.epochs == 3 and cfg.train.ema_decay is None
    assert cfg.data.name == "123" and cfg.schedule.milestones == [30.0, 45.0]
    assert cfg.train.deterministic is True and cfg.model.kwargs == {"width_mult": 0.25}
    assert cfg.data.data_dir == "/data"
    assert RunConfig().optim.lr == 0.1  # the input is not modified


@pytest.mark.parametrize("key, value, match", [
    ("optim.lrr", 0.1, r"unknown key optim\.lrr \(did you mean lr\?\)"),
    ("train.epochs", "ten", r"train\.epochs must be int"),
    ("optim", 1, r"optim is a section"),
    ("optim.lr.x", 1, r"lr is not a section"),
    ("bogus", 1, r"unknown key bogus"),
])
def test_bad_overrides(key, value, match):
    with pytest.raises(ConfigError, match=match):
        apply_overrides(RunConfig(), {key: value}, source="--set")


@pytest.mark.parametrize("key, value, flag", [
    ("optim.lr", "nan", "--lr"), ("optim.lr", "inf", "--lr"), ("optim.lr", -1, "--lr"),
    ("optim.lr", 0, "--lr"), ("optim.weight_decay", "nan", "--weight-decay"),
    ("optim.weight_decay", -0.1, "--weight-decay"), ("optim.momentum", 1.0, "--momentum"),
    ("optim.momentum", -0.5, "--momentum"), ("optim.eps", 0, "--eps"),
    ("train.epochs", 0, "--epochs"), ("train.epochs", -3, "--epochs"),
    ("train.label_smoothing", "nan", "--label-smoothing"), ("train.ema_decay", 1.0, "--ema"),
    ("train.clip_grad_norm", "inf", "--clip-grad"), ("train.max_steps", 0, "--max-steps"),
    ("train.max_nonfinite_steps", 0, "--max-nonfinite-steps"),
    ("schedule.gamma", "nan", "--gamma"), ("schedule.warmup_frac", 1.5, "--warmup-frac"),
    ("schedule.milestones", "[10, .nan]", "--milestones"), ("data.batch_size", 0, "--batch-size"),
    ("data.val_size", 1.5, "--val-size"), ("data.val_size", -2, "--val-size"),
    ("data.on_bad_image", "ignore", "--on-bad-image"),
])
def test_non_finite_and_out_of_range_values_are_refused(key, value, flag):
    """A NaN/inf or out-of-range hyper-parameter never reaches training (issue 8: a NaN lr
    used to train to a NaN "best" checkpoint with exit status 0)."""
    with pytest.raises(ConfigError, match=flag):
        apply_overrides(RunConfig(), {key: value}, source="flags")


def test_yaml_with_a_nan_learning_rate_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr: .nan\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: optim\.lr"):
        RunConfig.from_yaml(path)


def test_val_size_is_a_count_or_a_fraction():
    assert apply_overrides(RunConfig(), {"data.val_size": 500.0}).data.val_size == 500
    assert apply_overrides(RunConfig(), {"data.val_size": "0.1"}).data.val_size == 0.1
    assert RunConfig().data.val_size is None and RunConfig().data.augment is None
