"""Block lesions: a lesioned block is its shortcut, and the model comes back bit-identical."""

import pytest
import torch

from resnetlab.analysis.lesion import accuracy, block_shapes, lesion_study, lesioned
from resnetlab.models import create_model


def _tiny(name: str, **kw):
    torch.manual_seed(0)
    return create_model(name, in_chans=1, num_classes=4, width_mult=0.5, **kw).eval()


def _block_io(model, index, x):
    seen = {}
    block = model.blocks()[index]
    h = block.register_forward_hook(lambda m, i, o: seen.update(inp=i[0].clone(), out=o.clone()))
    with torch.no_grad():
        model(x)
    h.remove()
    return block, seen["inp"], seen["out"]


@pytest.mark.parametrize("name,index", [("resnet20", 1), ("resnet20", 3), ("preact_resnet20", 1),
                                        ("resnet20", 6)])
def test_lesioned_block_output_equals_its_shortcut(name, index):
    model = _tiny(name)
    x = torch.randn(3, 1, 16, 16)
    block, _, intact = _block_io(model, index, x)
    with lesioned(model, [index], block_shapes(model, x)):
        _, inp, out = _block_io(model, index, x)
        with torch.no_grad():
            skip = block.downsample(inp)
    # post-activation blocks apply ReLU after the addition; their input is post-ReLU, so for the
    # parameter-free option-A skip relu(skip(x)) == skip(x)
    assert torch.equal(out, skip)
    assert not torch.equal(out, intact)


def test_plain_block_becomes_option_a_skip():
    model = _tiny("plain20")
    x = torch.randn(2, 1, 16, 16)
    shapes = block_shapes(model, x)
    down = next(i for i, (a, b) in enumerate(shapes) if a != b)
    with lesioned(model, [0, down], shapes):
        _, inp, out = _block_io(model, down, x)
        _, inp0, out0 = _block_io(model, 0, x)
    assert torch.equal(out0, inp0)  # same shape: identity
    assert out.shape[1:] == shapes[down][1]
    c = inp.shape[1]
    assert torch.equal(out[:, :c], inp[:, :, ::2, ::2]) and not out[:, c:].any()


@pytest.mark.parametrize("name", ["resnet20", "plain20"])
def test_restore_is_bit_identical_even_after_an_error(name):
    model = _tiny(name)
    x = torch.randn(4, 1, 16, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model(x)
    with pytest.raises(RuntimeError), lesioned(model, range(len(model.blocks())), block_shapes(model, x)):
        with torch.no_grad():
            assert not torch.equal(model(x), ref)
        raise RuntimeError("interrupted")
    with torch.no_grad():
        assert torch.equal(model(x), ref)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all("forward" not in vars(b) for b in model.blocks())
    assert all(not b.drop_path._forward_hooks for b in model.blocks() if hasattr(b, "drop_path"))


def test_lesion_study_rows_and_restore():
    model = _tiny("resnet20")
    torch.manual_seed(1)
    batches = [(torch.randn(8, 1, 16, 16), torch.randint(0, 4, (8,))) for _ in range(2)]
    base = accuracy(model, batches)
    study = lesion_study(model, batches, label="r20", max_k=3, draws=2)
    assert study.baseline == base == accuracy(model, batches)
    assert len(study.single) == 9 and len(study.multi) == 6
    assert [r["downsampling"] for r in study.single].count(True) == 2  # first block of stages 2, 3
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in study.single + study.multi)
    assert {r["k"] for r in study.multi} == {1, 2, 3}
