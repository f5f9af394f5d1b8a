"""Issue 23: the lesion report explains an essential block from the model's structure, and a
lesion that raises accuracy reads "improves by", never "costs at most -3.00 points"."""

from __future__ import annotations

import pytest
import torch

from resnetlab.analysis.lesion import (
    ESSENTIAL_DROP,
    LesionStudy,
    block_paths,
    describe_lesions,
    lesion_study,
)
from resnetlab.models import create_model


def _model(name="resnet20", **kw):
    torch.manual_seed(0)
    return create_model(name, in_chans=1, num_classes=4, width_mult=0.5, **kw).eval()


@pytest.mark.parametrize("shortcut, kind", [("A", "identity"), ("B", "identity"), ("C", "projection")])
def test_layer1_0_follows_the_stem_and_its_skip_is_an_identity_unless_option_c(shortcut, kind):
    model = create_model("resnet56", in_chans=1, shortcut=shortcut)
    names = {id(m): n for n, m in model.named_modules()}
    assert names[id(model.blocks()[0])] == "layer1.0"
    paths = block_paths(model, torch.randn(2, 1, 28, 28))
    assert paths[0]["skip"] == kind and paths[0]["stride"] == 1
    down = {"A": "zero-pad", "B": "projection", "C": "projection"}[shortcut]
    assert paths[9]["skip"] == down  # layer2.0: 16 -> 32 channels, stride 2
    assert block_paths(create_model("plain20", in_chans=1), torch.randn(2, 1, 28, 28))[0]["skip"] == "none"


def test_branch_to_skip_ratio_is_measured_on_the_images():
    model = _model()
    x = torch.randn(4, 1, 16, 16)
    block, seen = model.blocks()[0], {}
    h1 = block.drop_path.register_forward_hook(lambda m, a, o: seen.update(branch=o.norm()))
    h2 = block.downsample.register_forward_hook(lambda m, a, o: seen.update(skip=o.norm()))
    with torch.no_grad():
        model(x)
    h1.remove(), h2.remove()
    ratio = block_paths(model, x)[0]["branch_to_skip"]
    assert ratio == pytest.approx(float(seen["branch"] / seen["skip"]), rel=1e-5)


def _study_with_drop(shortcut: str, drop: float) -> LesionStudy:
    model = _model(shortcut=shortcut)
    torch.manual_seed(1)
    batches = [(torch.randn(8, 1, 16, 16), torch.randint(0, 4, (8,)))]
    study = lesion_study(model, batches, label="r20", max_k=1, draws=1)
    for row in study.single:  # as if layer1.0 were the one block the trained net relies on
        row["drop"] = drop if row["index"] == 0 else 0.0
    return study


def test_essential_block_note_is_computed_from_the_structure():
    lines = describe_lesions(_study_with_drop("B", 0.6))
    note = next(line for line in lines if line.startswith("layer1.0 is essential"))
    assert "costs 60.00 points" in note and "first block after the stem" in note
    assert "keeps the shape 8x16x16" in note  # width_mult 0.5: 8 channels
    assert "identity" in note and "not the only path" in note
    assert "x the norm of its skip's" in note
    projected = describe_lesions(_study_with_drop("C", 0.6))
    note = next(line for line in projected if line.startswith("layer1.0 is essential"))
    assert "learned projection" in note and "no identity to lean on" in note
    small = describe_lesions(_study_with_drop("B", ESSENTIAL_DROP / 2))
    assert not any("essential" in line for line in small)


def test_a_lesion_that_raises_accuracy_reads_improves():
    rows = [{"index": i, "block": f"layer1.{i}", "downsampling": False, "accuracy": 0.9,
             "drop": d} for i, d in enumerate((-0.03, -0.01))]
    lines = describe_lesions(LesionStudy("m", 0.87, single=rows))
    text = " ".join(lines)
    assert "costs at most -" not in text and "-3.00" not in text
    assert "improves accuracy, by 1.00 points to 3.00 points" in text
    assert "removing layer1.0 improves accuracy by 3.00 points" in text
    mixed = [dict(rows[0]), {**rows[1], "drop": 0.02}]
    text = " ".join(describe_lesions(LesionStudy("m", 0.87, single=mixed)))
    assert "costs at most 2.00 points" in text and "layer1.0 improves accuracy by 3.00 points" in text
