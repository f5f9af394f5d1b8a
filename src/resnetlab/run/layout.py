"""How a run was laid out over processes and machines: recorded in ``config.yaml`` (the
``distributed`` section) and ``results.json``, and compared when a saved config is run again.

The global batch of a data-parallel run is ``world_size x data.batch_size``, so the same
config.yaml on another number of processes trains a different run; resnetlab says so in one
line instead of silently training something else.
"""

from __future__ import annotations

import dataclasses
import os

from resnetlab.engine.config import DistributedRecord, RunConfig

__all__ = ["current_layout", "describe_layout", "record_layout"]


def current_layout(world_size: int, batch_size: int) -> DistributedRecord:
    """This process's layout.  torchrun sets ``GROUP_WORLD_SIZE`` (the number of agents, one per
    node) and ``LOCAL_WORLD_SIZE``; outside torchrun it is one process on one node."""
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world_size) or world_size)
    nodes = int(os.environ.get("GROUP_WORLD_SIZE", 0) or 0) or max(1, world_size // max(local, 1))
    return DistributedRecord(world_size=world_size, nodes=nodes, procs_per_node=local,
                             global_batch=world_size * batch_size)


def describe_layout(rec: DistributedRecord) -> str:
    """E.g. ``2 processes on 2 nodes (global batch 32)``."""
    procs = f"{rec.world_size} process{'es' if rec.world_size != 1 else ''}"
    nodes = f"{rec.nodes} node{'s' if rec.nodes != 1 else ''}"
    return f"{procs} on {nodes} (global batch {rec.global_batch})"


def _how(rec: DistributedRecord) -> str:
    if (rec.nodes or 1) == 1:
        return f"resnetlab train --config CONFIG --nproc {rec.world_size}"
    return (f"torchrun --nnodes {rec.nodes} --nproc-per-node {rec.procs_per_node} on each node "
            "(docs/guide/distributed.md)")


def record_layout(cfg: RunConfig, world_size: int) -> tuple[RunConfig, str | None]:
    """``cfg`` with its ``distributed`` section set to what runs now, and a one-line note when
    the config recorded another layout (a saved config.yaml run on another world size or batch)."""
    old, new = cfg.distributed, current_layout(world_size, cfg.data.batch_size)
    note = None
    if old.world_size is not None and (old.world_size, old.global_batch) != (
            new.world_size, new.global_batch):
        note = (f"note: this config ran on {describe_layout(old)}; this run is "
                f"{describe_layout(new)}, so it will differ (to reproduce it: {_how(old)})")
    return dataclasses.replace(cfg, distributed=new), note
