"""Helpers of the serving tests: the guide's commands, and a real `resnetlab serve` process
on a free 127.0.0.1 port (bounded in time)."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guide" / "serve.md"
# The guide trains with the default recipe; tests run the same command for 30 steps on 1000
# images with a quarter-width network (about a minute on two shared cores, most of it the
# final 10,000-image test evaluation).
SHRINK = ["--width-mult", "0.25", "--max-steps", "30", "--train-size", "1000", "--val-size",
          "200", "--batch-size", "64", "--device", "cpu", "--precision", "fp32", "--no-tta",
          "--no-progress"]
IMAGES = 32  # held-in test images written as PNG files


def guide_commands() -> list[tuple[str, str | None]]:
    """(command, the output the guide shows for it or None) for each ```bash block line."""
    lines, out, block, kind = GUIDE.read_text().splitlines(), [], [], None
    for line in lines:
        if line.startswith("```") and kind is None:
            kind, block = line[3:].strip(), []
        elif line.startswith("```"):
            if kind == "bash":
                text = "\n".join(block).replace("\\\n", " ")
                out += [(cmd.strip(), None) for cmd in text.splitlines() if cmd.strip()]
            elif kind == "text" and out and out[-1][1] is None:
                out[-1] = (out[-1][0], "\n".join(block))
            kind = None
        else:
            block.append(line)
    return out


def guide_command(prefix: str) -> str:
    return next(cmd for cmd, _ in guide_commands() if cmd.startswith(prefix))


def shell(command: str) -> str:
    """A guide command as this test machine runs it: this interpreter for `python` and
    `resnetlab` (the worktree's sources through PYTHONPATH)."""
    words = shlex.split(command, posix=True)
    if words[0] == "resnetlab":
        command = f"{shlex.quote(sys.executable)} -m resnetlab" + command[len("resnetlab"):]
    elif words[0] == "python":
        command = shlex.quote(sys.executable) + command[len("python"):]
    return command.replace("| python ", f"| {shlex.quote(sys.executable)} ")


def env() -> dict[str, str]:
    src = str(ROOT / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    """Poll /readyz (bounded in time) until 200; fail with the server's log if it died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited {proc.returncode}: {log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise AssertionError(f"server not ready in time: {log.read_text()[-3000:]}")


@contextlib.contextmanager
def serving(args: list[str], log: Path, cwd: Path | None = None):
    """A real `resnetlab serve ARGS --port FREE` process on 127.0.0.1, its output in ``log``:
    yields (url, port, process); SIGTERM (then kill, bounded) when the block ends, unless the
    block ended it itself."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "resnetlab", "serve", *args, "--port",
                                 str(port)], cwd=cwd, env=env(), stdout=out,
                                stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, proc, log)
        yield url, port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
