"""Fine-tuning as a run: :func:`finetune` is :func:`~resnetlab.run.train` with a pretrained
source, so it writes the same run directory and resumes with :func:`~resnetlab.run.resume`.

::

    from resnetlab.run import config_with, finetune
    cfg = config_with("default", {"data.name": "csv:new.csv", "finetune.freeze": "backbone"})
    run = finetune(cfg, "runs/pretrained")       # or a weights file (.pth, .th, .safetensors)
"""

from __future__ import annotations

import copy
import os

from resnetlab.engine.config import RunConfig
from resnetlab.run.experiment import Run, train
from resnetlab.run.pretrained import DATA_ARGS, read_source
from resnetlab.transfer.finetune import parse_freeze
from resnetlab.utils.errors import ConfigError

__all__ = ["finetune"]

# model arguments a fine-tune may change: they regularise training, the weights do not depend on them
_REGULARISERS = ("drop_rate", "drop_path_rate")


def finetune(config: RunConfig, source: str | os.PathLike | None = None, *,
             model: str | None = None, test_on: str = "best",
             progress: bool | None = None) -> Run:
    """Fine-tune the network in ``source`` (default ``config.finetune.source``) on
    ``config.data`` with the policies of ``config.finetune``.

    The architecture and its arguments come from the source (``model`` names it for weights
    files that cannot say); the class count and input channels come from the new data.
    """
    cfg = copy.deepcopy(config)
    if source is not None:
        cfg.finetune.source = os.fspath(source)
    if not cfg.finetune.source:
        raise ConfigError("resnetlab finetune needs --from RUN_OR_WEIGHTS (a run directory, "
                          "checkpoint or weights file)")
    parse_freeze(cfg.finetune.freeze)
    src = read_source(cfg.finetune.source, model)
    kept = {k: v for k, v in cfg.model.kwargs.items() if k in _REGULARISERS}
    cfg.model.name = src.build_args["name"]
    cfg.model.kwargs = {**{k: v for k, v in src.build_args.items() if k not in DATA_ARGS}, **kept}
    return train(cfg, test_on=test_on, progress=progress)
