"""Progressive resizing (``--progressive-sizes``): the size schedule, the resize, a fit that
trains small then full size while evaluating at full size, the budget's timing, the flag."""

from __future__ import annotations

import types

import pytest
import torch

from helpers import FLAGS, cli, one_line_error, small_net, write_folder
from helpers import loop_config as config
from helpers import loop_run as run
from resnetlab.engine import budget as engine_budget
from resnetlab.engine.schedules import input_size_schedule, resize_batch
from resnetlab.utils.errors import ConfigError


def test_schedule_splits_the_steps_into_equal_phases():
    size = input_size_schedule([16, 20, 28], total_steps=9)
    assert [size(step) for step in range(11)] == [16] * 3 + [20] * 3 + [28] * 5
    assert input_size_schedule([], 9)(0) is None


def test_resize_keeps_aspect_and_layout():
    x = torch.rand(3, 2, 24, 32).contiguous(memory_format=torch.channels_last)
    out = resize_batch(x, 16)
    assert out.shape == (3, 2, 12, 16)
    assert out.is_contiguous(memory_format=torch.channels_last)
    # antialiased: a constant image stays that constant
    assert torch.allclose(resize_batch(torch.full((1, 1, 28, 28), 0.7), 20), torch.tensor(0.7))
    assert resize_batch(x, None) is x and resize_batch(x, 32) is x
    with pytest.raises(ConfigError, match="--progressive-sizes resizes images"):
        resize_batch(torch.rand(4, 10), 8)


def test_fit_trains_at_the_phase_sizes_and_evaluates_at_full_size(tmp_path):
    cfg = config(epochs=2)
    cfg.data.progressive_sizes = [4, 6]
    seen: list[tuple[bool, int]] = []
    model = small_net()
    model[0].register_forward_pre_hook(lambda m, args: seen.append((m.training, args[0].shape[-1])))
    _, result = run(tmp_path, cfg, model=model)
    trained = [size for training, size in seen if training]
    assert trained == [4] * 8 + [6] * 8  # 256 images / 32 = 8 steps per epoch, 2 phases
    assert {size for training, size in seen if not training} == {6}
    assert result.history[-1]["val_top1"] > 0.8  # the blobs are still learned


def _phase_session(sizes, late_freeze=None):
    cfg = types.SimpleNamespace(data=types.SimpleNamespace(progressive_sizes=sizes),
                                train=types.SimpleNamespace(late_freeze=late_freeze))
    return types.SimpleNamespace(cfg=cfg)


def _timed(costs):
    return lambda s, phases, steps, warmup, deadline=None: ({k: costs[k] for k in phases}, 0.75, 20)


def test_budget_weights_each_size_by_its_phases(monkeypatch):
    monkeypatch.setattr(engine_budget, "_time_sizes", _timed({(4, False): 1.0, (6, False): 2.0}))
    step_s, startup_s, measured, by_phase = engine_budget._time_schedule(_phase_session([4, 4, 6]), 10, 2)
    assert step_s == pytest.approx(4 / 3) and startup_s == pytest.approx(0.75)
    assert measured == 20
    # what the run's re-plan scales for the later sizes
    assert by_phase == (((4, False), 1.0), ((6, False), 2.0))


def test_budget_weights_the_frozen_phase_by_its_share(monkeypatch):
    # frozen from a quarter of the run: the second half of the 4 px phase and all of the 6 px one
    costs = {(4, False): 1.0, (4, True): 0.5, (6, True): 1.5}
    monkeypatch.setattr(engine_budget, "_time_sizes", _timed(costs))
    step_s, _, _, by_phase = engine_budget._time_schedule(_phase_session([4, 6], 0.25), 10, 2)
    assert step_s == pytest.approx(0.25 * 1.0 + 0.25 * 0.5 + 0.5 * 1.5)
    assert [phase for phase, _ in by_phase] == [(4, False), (4, True), (6, True)]


def test_budget_times_only_the_phases_not_timed_before(monkeypatch):
    # the run timed frozen from a half first; every layer training adds only the 6 px phase
    asked = []

    def timed(s, phases, steps, warmup, deadline=None):
        asked.append(phases)
        return {k: 2.0 for k in phases}, 0.5, 10 * len(phases)

    monkeypatch.setattr(engine_budget, "_time_sizes", timed)
    known = {(4, False): 1.0, (6, True): 1.5}
    step_s, _, measured, by_phase = engine_budget._time_schedule(_phase_session([4, 6]), 10, 1,
                                                                 known=known)
    assert asked == [[(6, False)]] and measured == 10
    assert dict(by_phase) == {(4, False): 1.0, (6, True): 1.5, (6, False): 2.0}
    assert step_s == pytest.approx(0.5 * 1.0 + 0.5 * 2.0)  # the unfrozen run's mean


def _fake_session(n: int = 64):
    x, y = torch.zeros(n, 1, 8, 8), torch.zeros(n, dtype=torch.long)
    loader = [(x[i:i + 4], y[i:i + 4]) for i in range(0, n, 4)]
    frozen = []
    return types.SimpleNamespace(train_loader=loader, state=types.SimpleNamespace(step=0),
                                 recorder=types.SimpleNamespace(drain=lambda: []),
                                 freeze_late=frozen.append, frozen=frozen)


def test_budget_times_the_sizes_in_turn(monkeypatch):
    # a fake clock: 28 px steps cost 2x the 20 px ones, and the machine is 3x slower for the
    # middle rounds; timed in turn, every size sees the slow rounds alike
    clock, order = {"now": 0.0}, []

    def step(s, x, y, size):
        order.append((size, s.frozen[-1]))
        rounds = (len(order) - 5) // 3  # 2 warm-up steps per phase come first
        clock["now"] += {20: 1.0, 28: 2.0}[size] * (0.5 if s.frozen[-1] else 1.0) * (
            3.0 if 2 <= rounds < 5 else 1.0)

    monkeypatch.setattr(engine_budget, "train_batch", step)
    monkeypatch.setattr(engine_budget, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    phases = [(20, False), (28, False), (28, True)]
    s = _fake_session(96)
    by_phase, extra, measured = engine_budget._time_sizes(s, phases, 8, 2)
    assert order == [p for p in phases for _ in range(2)] + phases * 8  # warm-ups, then in turn
    assert measured == 24 and by_phase[(28, False)] / by_phase[(20, False)] == pytest.approx(2.0)
    assert by_phase[(28, True)] / by_phase[(28, False)] == pytest.approx(0.5)
    assert extra == pytest.approx(0.0)  # these warm-ups cost what a timed step does


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("data") / "animals")


CONV = ["--model", "resnet20", "--width-mult", "0.25", "--batch-size", "8", "--epochs", "1",
        "--device", "cpu", "--precision", "fp32", "--no-progress", "--no-tta"]


def test_flag_reaches_the_saved_config_as_pixels(folder, tmp_path, capsys):
    code, out, err = cli(capsys, "train", f"--data=folder:{folder}", *CONV, "--progressive-sizes",
                         "6,8", "--runs-dir", tmp_path, "--name", "prog")
    assert code == 0, err
    assert "6 px -> 8 px" in out  # the summary says how it trained
    saved = (tmp_path / "prog" / "config.yaml").read_text()
    assert "progressive_sizes:\n  - 6\n  - 8\n" in saved


@pytest.mark.parametrize("value, says", [
    ("2", "--progressive-sizes 2: must be whole pixel sizes >= 4"),
    ("20.5", "--progressive-sizes 20.5: must be whole pixel sizes >= 4"),
    ("a", "--progressive-sizes 'a': expected comma-separated numbers")])
def test_bad_sizes_are_one_line_errors(folder, tmp_path, capsys, value, says):
    code, _, err = cli(capsys, "train", f"--data=folder:{folder}", *CONV, "--progressive-sizes",
                       value, "--runs-dir", tmp_path)
    assert code == 2 and one_line_error(err).startswith("error: " + says)
    assert not any(tmp_path.iterdir())  # refused before a run directory exists


def test_vector_models_refuse_resizing(folder, tmp_path, capsys):
    code, _, err = cli(capsys, "train", f"--data=folder:{folder}", *FLAGS, "--progressive-sizes",
                       "6,8", "--runs-dir", tmp_path)
    assert code == 2 and "reads flattened vectors" in one_line_error(err)
