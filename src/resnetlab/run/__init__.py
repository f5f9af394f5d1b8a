"""Whole runs: what the CLI, the benchmarks and notebooks call to train and score networks.

::

    from resnetlab.run import RunConfig, load_recipe, train, resume, evaluate

    cfg = load_recipe("default")            # or RunConfig() and set fields
    cfg.train.epochs = 2
    run = train(cfg)                          # a new run directory under cfg.runs_dir
    run.results["top1"], run.best             # test top-1, best checkpoint
    report, _ = evaluate(run, split="test", tta=True)
    run = resume("runs/NAME")                 # continue an interrupted run

``train(cfg)`` writes the same run directory as ``resnetlab train`` with the same config.
"""

from resnetlab.engine.config import (
    DataConfig,
    FinetuneConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
    apply_overrides,
)
from resnetlab.run.compare import Comparison, compare, resume_comparison
from resnetlab.run.evaluation import SPLITS, EvalReport, evaluate
from resnetlab.run.experiment import TEST_ON, Interrupted, Run, resume, train
from resnetlab.run.finetune import finetune
from resnetlab.run.recipes import (
    config_with,
    fresh_name,
    load_recipe,
    locate_recipe,
    recipe_names,
    resume_config,
)

__all__ = [
    "train", "resume", "evaluate", "finetune", "Run", "Interrupted", "EvalReport", "RunConfig",
    "ModelConfig", "DataConfig", "FinetuneConfig", "OptimConfig", "ScheduleConfig", "TrainConfig",
    "apply_overrides", "load_recipe", "locate_recipe", "recipe_names", "config_with", "SPLITS",
    "fresh_name", "resume_config",
    "TEST_ON", "compare", "resume_comparison", "Comparison",
]
