"""Item 3 of issue 22: a torch zip whose entries inflate far beyond its size is refused before
torch.load, with one line, on every path that reads torch files."""

from __future__ import annotations

import io
import zipfile

import pytest
import torch

from helpers import cli, one_line_error
from resnetlab.checkpoint import load_checkpoint
from resnetlab.transfer.weights import read_state_dict
from resnetlab.utils.errors import DataError
from resnetlab.utils.safeload import load_torch_file, size_cap


def _bomb(path, mib=100):
    """A real torch.save file re-zipped with DEFLATE: ~0.5 MB on disk, ``mib`` MiB unpacked."""
    buf = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(mib << 18)}, buf)  # 4 bytes per float32
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info.filename),
                         compress_type=zipfile.ZIP_DEFLATED, compresslevel=1)
    return path


@pytest.mark.parametrize("reader", [load_torch_file, read_state_dict, load_checkpoint])
def test_zip_bomb_refused_before_torch_load(tmp_path, monkeypatch, reader):
    bomb = _bomb(tmp_path / "bomb.pth")
    assert bomb.stat().st_size < 2 << 20
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was reached"))
    with pytest.raises(DataError, match="unpack to 100 MiB") as info:
        reader(bomb)
    assert "\n" not in str(info.value) and str(bomb) in str(info.value)


def test_zip_bomb_one_line_in_cli(tmp_path, capsys):
    bomb = _bomb(tmp_path / "bomb.pt")
    code, _, err = cli(capsys, "convert", bomb, tmp_path / "out.safetensors")
    assert code == 2 and "refused" in one_line_error(err)


def test_ordinary_torch_file_still_loads(tmp_path, monkeypatch):
    path = tmp_path / "ok.pt"
    torch.save({"w": torch.arange(6.0)}, path)
    assert torch.equal(load_torch_file(path)["w"], torch.arange(6.0))
    monkeypatch.setenv("RESNETLAB_MAX_UNPACKED", str(1 << 40))  # the user's override
    assert torch.equal(load_torch_file(_bomb(tmp_path / "b.pt", mib=8))["fc.weight"],
                       torch.zeros(8 << 18))
    monkeypatch.delenv("RESNETLAB_MAX_UNPACKED")
    assert size_cap(10) >= 64 << 20
