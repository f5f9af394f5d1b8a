"""The cluster recipes shipped in examples/cluster/: the SLURM script runs (on one node, with
``srun`` and ``scontrol`` faked on localhost), and the PyTorchJob manifest parses, names the
image the Dockerfile builds and a command the train CLI accepts."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml

from helpers import write_table

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "examples" / "cluster"



def fake_slurm(bin_dir: Path) -> Path:
    """``scontrol show hostnames`` prints localhost; ``srun [options] CMD`` runs CMD once (one
    task: one node)."""
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\necho localhost\n")
    (bin_dir / "srun").write_text('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\n'
                                  'exec "$@"\n')
    for name in ("scontrol", "srun"):
        (bin_dir / name).chmod(0o755)
    return bin_dir


@pytest.mark.slow
def test_the_slurm_script_trains_on_one_faked_node(tmp_path):
    table, runs = write_table(tmp_path / "t.csv", rows=96), tmp_path / "runs"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = f"{fake_slurm(tmp_path / 'bin')}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "SLURM_JOB_NODELIST": "localhost", "SLURM_NNODES": "1",
           "SLURM_JOB_ID": "4242", "NPROC_PER_NODE": "2", "RDZV_PORT": str(port),
           "RUNS_DIR": str(runs), "RESNETLAB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    flags = ["--data", f"csv:{table}", "--target", "label", "--model", "mlp_resnet",
             "--width-mult", "0.0625", "--set", "num_blocks=1", "--val-size", "16",
             "--batch-size", "8", "--epochs", "1", "--device", "cpu", "--no-progress"]
    done = subprocess.run(["bash", str(CLUSTER / "slurm.sbatch"), *flags], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads((runs / "slurm-4242" / "results.json").read_text())
    assert results["distributed"] == {"world_size": 2, "nodes": 1, "procs_per_node": 2,
                                      "global_batch": 16}


def test_the_pytorchjob_manifest_names_the_image_and_a_valid_train_command():
    job = yaml.safe_load((CLUSTER / "pytorchjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert set(specs) == {"Master", "Worker"} and specs["Master"]["replicas"] == 1
    built = next(line.split("-t ", 1)[1].split()[0]
                 for line in (CLUSTER / "Dockerfile").read_text().splitlines() if "docker build" in line)
    for spec in specs.values():
        (container,) = spec["template"]["spec"]["containers"]
        assert container["name"] == "pytorch" and container["image"] == built
        command = [str(c) for c in container["command"]]
        assert command[:1] == ["torchrun"] and command[2:5] == ["-m", "resnetlab", "train"]
        nproc = int(command[1].split("=")[1])
        assert nproc == int(job["spec"]["nprocPerNode"]) == container["resources"]["limits"]["nvidia.com/gpu"]
        from resnetlab.cli.app import app

        train = typer.main.get_command(app).commands["train"]
        ctx = train.make_context("train", command[5:])  # parses every flag, trains nothing
        assert ctx.params["runs_dir"] == "/runs" and ctx.params["epochs"] == 30
