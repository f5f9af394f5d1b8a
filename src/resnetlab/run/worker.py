"""One rank of a run started by :mod:`resnetlab.run.launch` (what torchrun runs in each process).

Not imported by ``resnetlab.run`` itself, so ``python -m resnetlab.run.worker`` runs it cleanly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from resnetlab.engine.config import RunConfig
from resnetlab.utils.errors import UserError

__all__ = ["main", "lost_peer"]


def main(argv: list[str] | None = None) -> None:
    """One rank of a launched run (what torchrun starts): train the config or resume the run."""
    from resnetlab.run.experiment import resume, train

    parser = argparse.ArgumentParser(prog="python -m resnetlab.run.worker")
    parser.add_argument("config", nargs="?")
    parser.add_argument("--resume")
    parser.add_argument("--overrides", default="{}", help="JSON of dotted config keys (resume)")
    parser.add_argument("--test-on", default="best")
    parser.add_argument("--progress", choices=("auto", "yes", "no"), default="auto")
    args = parser.parse_args(argv)
    progress = {"auto": None, "yes": True, "no": False}[args.progress]
    try:
        if args.resume:
            resume(args.resume, json.loads(args.overrides), test_on=args.test_on, progress=progress)
        else:
            train(RunConfig.from_yaml(args.config), test_on=args.test_on, progress=progress)
    except UserError as err:
        print(f"resnetlab (rank {os.environ.get('RANK', '0')}): {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except RuntimeError as err:
        if not lost_peer(err):
            raise  # a bug: keep the traceback
        first = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        print(f"resnetlab (rank {os.environ.get('RANK', '0')}): lost contact with another rank "
              f"({first}); torchrun's report names the rank that failed", file=sys.stderr, flush=True)
        raise SystemExit(1) from None


def lost_peer(err: RuntimeError) -> bool:
    """Whether ``err`` is a collective that failed because a peer died or timed out (gloo and
    NCCL raise plain RuntimeErrors for it), not a bug in this rank."""
    import torch.distributed as dist

    text = str(err)
    return isinstance(err, dist.DistError) or any(
        word in text for word in ("gloo", "Gloo", "NCCL", "Connection reset", "Connection closed",
                                  "monitoredBarrier", "Timed out", "timed out"))


if __name__ == "__main__":
    main()
