"""benchmarks/serve.py, tiny: both servers answer every level, the ratio line is printed, the
soak checks every answer (class of the good ones, 4xx of the malformed ones) with 0 errors,
and both servers exit 0 on SIGTERM."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from serve_helpers import ROOT, env

from helpers import needs_fmnist


@pytest.mark.slow
@needs_fmnist
def test_serve_benchmark_and_soak_tiny():
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "serve.py"), "--backend", "torch",
         "--width-mult", "0.25", "--clients", "1,4", "--requests", "24", "--seconds", "20",
         "--soak", "60", "--soak-clients", "4", "--images", "16"],
        env=env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"^CPU: .*; backend torch; load average", out, re.M), out
    rows = re.findall(r"^\s+(\d+) \|.*\| +([\d.]+)x$", out, re.M)
    assert [r[0] for r in rows] == ["1", "4"] and all(float(r[1]) > 0 for r in rows), out
    assert "failed requests: 0; servers exited 0 and 0 on SIGTERM" in out, out
    assert re.search(r"soak: 60 requests \(6 malformed\), errors 0; server RSS [\d.]+ MB at the "
                     r"start, [\d.]+ MB at the end", out), out
