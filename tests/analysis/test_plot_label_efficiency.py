"""The label-efficiency figure (issue 23): one panel per target, both arms with error bars."""

from __future__ import annotations

from PIL import Image

from resnetlab.analysis.plots import plot_label_efficiency


def _rows(gain: float):
    sizes = [(1, 10), (10, 100), (100, 1000), ("all", 1097)]
    return [{"per_class": n, "images": images, "scratch": 0.3 + 0.1 * i, "scratch_std": 0.05,
             "finetune": 0.3 + 0.1 * i + gain / (i + 1), "finetune_std": 0.02, "seeds": 3}
            for i, (n, images) in enumerate(sizes)]


def test_label_efficiency_figure_has_a_panel_per_target(tmp_path):
    one = plot_label_efficiency({"digits": _rows(0.2)}, tmp_path / "one.png")
    two = plot_label_efficiency({"digits": _rows(0.2), "fashion-hard": _rows(0.05)}, tmp_path / "two.png")
    w1, h1 = Image.open(one).size
    w2, h2 = Image.open(two).size
    assert h1 == h2 and w2 > 1.8 * w1  # panels side by side


def test_error_bars_follow_the_spread(tmp_path):
    wide = [{**r, "scratch_std": 0.15, "finetune_std": 0.15} for r in _rows(0.2)]
    flat = [{**r, "scratch_std": 0.0, "finetune_std": 0.0} for r in _rows(0.2)]
    pixels = [Image.open(plot_label_efficiency({"d": rows}, tmp_path / f"{i}.png")).convert("L")
              for i, rows in enumerate((wide, flat))]
    assert pixels[0].tobytes() != pixels[1].tobytes()


def test_missing_sizes_and_nan_std_do_not_break_the_figure(tmp_path):
    rows = _rows(0.1)[:2]
    rows[0]["scratch_std"] = float("nan")
    assert plot_label_efficiency({"d": rows}, tmp_path / "x.png").stat().st_size > 0
