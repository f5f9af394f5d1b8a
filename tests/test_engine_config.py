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
