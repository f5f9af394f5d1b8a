"""Every shell command in README.md runs as written (issue 19, item 9): the ```bash blocks are
extracted and each command is run in a fresh folder, in order (later commands use the runs of
earlier ones).  Commands that train are shrunk: tiny image folders stand in for the data sets
(their names are checked to exist), and small --max-steps/--train-size values are appended.
A README command that fails as written fails this test."""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import cli, write_folder
from serve_helpers import serving

ROOT = Path(__file__).resolve().parents[2]
TRAINS = ("train", "finetune", "compare")
NAMED_DATA = ("fashion-mnist", "mnist", "kmnist", "cifar10", "cifar100")
SHRINK = ["--max-steps", "2", "--val-size", "6", "--batch-size", "8", "--device", "cpu", "--no-progress"]

pytestmark = pytest.mark.slow


def readme_commands(text: str) -> list[str]:
    """The commands of every ```bash block: one per line, continuations joined, comments cut."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                out.append(line)
    return out


def _shrunk(argv: list[str], data: dict[str, str]) -> list[str]:
    """``resnetlab train|finetune|compare ...`` on the tiny folders, a few steps long."""
    from resnetlab.models import list_models

    command, args = argv[0], list(argv[1:])
    for i, arg in enumerate(args[:-1]):
        if arg == "--model":
            assert args[i + 1] in list_models(), f"unknown model in the README: {args[i + 1]}"
    if "--data" in args:
        i = args.index("--data") + 1
        args[i] = data.get(args[i], args[i])
    else:
        args += ["--data", data["fashion-mnist"]]
    sizes = ["--train-sizes", "24"] if command == "compare" else ["--train-size", "24", "--no-tta"]
    return [command, *args, *sizes, *SHRINK]


def _serve_or_curl(argv: list[str], command: str, servers: contextlib.ExitStack) -> bool:
    """``resnetlab serve ARGS`` starts a real server (on a free port, stopped at the end);
    ``curl`` lines are sent to it.  False for any other command."""
    if argv[:2] == ["resnetlab", "serve"]:
        _, port, _ = servers.enter_context(serving(argv[2:], Path("serve.log")))
        servers.port = port
        return True
    if argv[0] != "curl":
        return False
    port = getattr(servers, "port", None)
    assert port, f"{command}: the README runs curl before resnetlab serve"
    done = subprocess.run(command.replace("127.0.0.1:8000", f"127.0.0.1:{port}"), shell=True,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip(), f"{command}\n{done.stderr}"
    assert '"error"' not in done.stdout, f"{command}\n{done.stdout}"
    return True


def _sweep(args: list[str], data: dict[str, str]) -> list[str]:
    """``resnetlab sweep SPACE ...``: the README's space (its ```yaml block naming SPACE),
    one trial, shrunk like a training (its trials never draw a progress bar)."""
    space = Path(args[1])
    if not space.exists():
        found = [b for b in re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
                 if b.startswith(f"# {space.name}")]
        assert found, f"README: no ```yaml block starting '# {space.name}' for {' '.join(args)}"
        space.write_text(found[0])
    args = list(args)
    if "--trials" in args:
        args[args.index("--trials") + 1] = "1"
    return [a for a in _shrunk(args, data) if a != "--no-progress"]


def _run(command: str, data: dict[str, str], capsys, servers: contextlib.ExitStack) -> None:
    argv = shlex.split(command)
    if _serve_or_curl(argv, command, servers):
        return
    if argv[0] == "make":  # the Makefile target exists and runs; demo's training is shrunk here
        done = subprocess.run(["make", "-n", *argv[1:]], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        if argv[1] == "demo":
            assert "resnetlab train" in done.stdout
            _run("resnetlab train", data, capsys, servers)
        return
    if argv[0] == "torchrun":
        at = argv.index("resnetlab")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", *argv[1:at - 1],
               "-m", "resnetlab", *_shrunk(argv[at + 1:], data)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        return
    assert argv[0] == "resnetlab", command
    args = argv[1:]
    if args[0] in TRAINS:
        args = _shrunk(args, data)
    elif args[0] == "sweep":
        args = _sweep(args, data)
    elif args[:2] == ["analyze", "gradflow"]:
        args += ["--data", data["fashion-mnist"], "--images", "12"]
    for arg in args:  # input files a user brings: a small image
        if arg.endswith(".png") and not Path(arg).exists():
            from PIL import Image

            Image.new("L", (8, 8), 128).save(arg)
    code, out, err = cli(capsys, *args)
    assert code == 0, f"{command}\n(ran: resnetlab {' '.join(map(str, args))})\n{out[-2000:]}\n{err[-2000:]}"


def test_every_readme_command_runs(tmp_path, monkeypatch, capsys):
    commands = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(commands) >= 10
    images = tmp_path / "data"
    write_folder(images / "clothes" / "test", per_class=4, seed=1)  # like the data sets: a test split
    clothes = f"folder:{write_folder(images / 'clothes' / 'train').parent}"
    data = dict.fromkeys(NAMED_DATA, clothes)
    data["folder:my_photos"] = f"folder:{write_folder(images / 'photos', ('cat', 'dog', 'fox'))}"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    with contextlib.ExitStack() as servers:
        for command in commands:
            _run(command, data, capsys, servers)
    assert (work / "runs" / "quick" / "export" / "model.onnx").is_file()


def test_commands_are_extracted_with_continuations_and_without_comments():
    text = "x\n```bash\n# a comment\nresnetlab train \\\n  --epochs 2   # two\n```\n```\nnot bash\n```\n"
    assert readme_commands(text) == ["resnetlab train    --epochs 2"]


def test_the_python_api_section_runs(tmp_path, monkeypatch, capsys):
    """The README's ```python block, with the run shrunk through ``run.config_with``."""
    from resnetlab import run

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1 and len(blocks[0].strip().splitlines()) <= 10
    write_folder(tmp_path / "clothes" / "test", per_class=4, seed=1)
    data = write_folder(tmp_path / "clothes" / "train").parent
    real = run.config_with
    small = {"data.name": f"folder:{data}", "data.train_size": 24, "data.val_size": 6,
             "data.batch_size": 8, "train.max_steps": 2, "train.device": "cpu",
             "train.tta": False, "train.precision": "fp32", "runs_dir": str(tmp_path / "runs")}
    monkeypatch.setattr(run, "config_with", lambda base, overrides: real(base, {**overrides, **small}))
    exec(compile(blocks[0], "README.md", "exec"), {})  # noqa: S102 - our own README
    assert (tmp_path / "runs" / "api" / "results.json").is_file()
    assert "runs/api" in capsys.readouterr().out
