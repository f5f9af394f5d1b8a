"""The degradation experiment (He et al. 2015, Fig. 1 and Fig. 6): many runs, one report.

:func:`compare` trains the residual net and its plain twin (``resnetN`` / ``plainN``, the same
class with ``residual=False``, so a pair differs in the skips only) at each depth, for each seed
and each training-set size, with one recipe and one budget.  Every member is an ordinary run
directory under ``COMPARISON/runs/`` trained through :func:`~resnetlab.run.train`, so
``resnetlab eval`` works on it.  :func:`resume_comparison` continues an interrupted comparison:
finished members are read back, a member cut off mid-run resumes from its checkpoint.

::

    from resnetlab.run import compare, load_recipe

    result = compare(load_recipe("compare-quick"), depths=[20, 56], seeds=3)
    print("\\n".join(result.findings))     # "plain-56 ends with a higher training error ..."
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from resnetlab.checkpoint import resolve_checkpoint_dir
from resnetlab.engine.config import RunConfig, validate
from resnetlab.engine.rundir import default_run_name, lock_run_dir
from resnetlab.models import list_models
from resnetlab.run.compare_jobs import auto_jobs, train_in_workers
from resnetlab.run.compare_results import DENSE_MODELS, FAMILIES, member_record, write_artefacts
from resnetlab.run.experiment import TEST_ON, Run, resume, train
from resnetlab.utils.device import threads_per_process
from resnetlab.utils.errors import ConfigError
from resnetlab.utils.notices import say

__all__ = ["ComparePlan", "Comparison", "compare", "resume_comparison", "read_comparison", "FAMILIES",
           "PLAN_FILE"]

PLAN_FILE = "compare.yaml"      # what was asked for: read back by resume_comparison


@dataclass
class ComparePlan:
    """What a comparison trains: every family x depth x seed x training-set size.

    ``train_sizes`` ``[None]`` is the whole training split; ``seeds`` are seed values.
    """

    depths: list[int]
    seeds: list[int]
    train_sizes: list[int | None] = field(default_factory=lambda: [None])
    families: list[str] = field(default_factory=lambda: list(FAMILIES))
    test_on: str = "best"
    # the dense-block sweep (tables): a depth is num_blocks of mlp_resnet / its twin plain_mlp
    dense: bool = False

    def count(self) -> int:
        """How many member runs the plan holds."""
        return len(self.train_sizes) * len(self.seeds) * len(self.depths) * len(self.families)

    def grid(self) -> list[tuple[int | None, int, int, str]]:
        """``(train size, seed, depth, family)`` of each member, in the report's order."""
        return [(size, seed, depth, family) for size in self.train_sizes for seed in self.seeds
                for depth in self.depths for family in self.families]

    def members(self, base: RunConfig, runs_dir: Path) -> list[RunConfig]:
        """One run config per member: ``base`` with the model, seed and subset changed only."""
        out = []
        for size, seed, depth, family in self.grid():
            cfg = RunConfig.from_dict(base.to_dict())
            cfg.model.name, cfg.train.seed = f"{family}{depth}", seed
            if self.dense:
                cfg.model.name = DENSE_MODELS[family]
                cfg.model.kwargs = {**cfg.model.kwargs, "num_blocks": depth}
            cfg.data.train_size = size
            cfg.runs_dir = str(runs_dir)
            cfg.name = f"{family}{depth}-s{seed}" + (f"-n{size}" if size else "")
            out.append(cfg)
        return out

    def longest_first(self) -> list[int]:
        """Member indices, the deepest (and largest-subset) ones first: the order for
        ``--jobs``, so that the last member left running alone is a short one."""
        grid = self.grid()
        return sorted(range(len(grid)), key=lambda i: (-grid[i][2], -(grid[i][0] or 0)))


@dataclass
class Comparison:
    """A comparison directory: its member runs, the summary table, the findings in words."""

    out_dir: Path
    members: list[Run]
    rows: list[dict[str, Any]]
    findings: list[str]
    files: dict[str, Path]


def _check_jobs(jobs: int | None, world_size: int) -> None:
    if jobs is None:  # auto_jobs decides, and never mixes the two
        return
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: give at least 1")
    if jobs > 1 and world_size > 1:
        raise ConfigError(f"--jobs {jobs} with --nproc {world_size}: choose one (members side "
                          "by side, or each member on several processes)")


def _check_plan(plan: ComparePlan) -> None:
    known = set(list_models())
    if not plan.depths:
        raise ConfigError("--depths: give at least one depth, e.g. --depths 20,56")
    for depth in plan.depths:
        if plan.dense:
            if depth < 1:
                raise ConfigError(f"--blocks {depth}: block counts must be at least 1")
            continue
        missing = [f"{f}{depth}" for f in plan.families if f"{f}{depth}" not in known]
        if missing:
            raise ConfigError(f"--depths {depth}: no {', '.join(missing)} in the registry (CIFAR "
                              "depths are 6n+2: 20, 32, 44, 56, 110, 1202; see `resnetlab models`)")
    if not plan.seeds:
        raise ConfigError("--seeds: must be at least 1")
    for size in plan.train_sizes:
        if size is not None and size < 1:
            raise ConfigError(f"--train-sizes {size}: sizes must be positive image counts")
    if plan.test_on not in TEST_ON:
        raise ConfigError(f"--test-on {plan.test_on!r}: choose last or best")


def compare(base: RunConfig, depths: list[int], *, seeds: int | list[int] = 1,
            train_sizes: list[int | None] | None = None, name: str | None = None,
            test_on: str = "best", progress: bool | None = None,
            world_size: int = 1, dense: bool = False, jobs: int | None = None) -> Comparison:
    """Train plain and residual nets at ``depths`` with the recipe ``base``; write the report.

    ``dense=True`` is the dense-block sweep for tables: ``depths`` are ``num_blocks`` of
    ``mlp_resnet`` and its plain twin ``plain_mlp`` (other model arguments from ``base``).

    ``world_size`` > 1 trains each member data-parallel on that many local processes (see
    :func:`resnetlab.run.train`), so a comparison can use every core of a bigger machine.
    ``jobs``: members trained at a time, each in its own process on ``cpu_count // jobs``
    threads (None: two on a CPU with at least two cores, else one; see
    :mod:`resnetlab.run.compare_jobs`).  A member's numbers can differ in the last digits
    between thread counts (float sums in another order); each setting is deterministic.

    ``seeds``: a count (``base.train.seed``, +1, ...) or the seed values.  The comparison lives
    in ``base.runs_dir/name`` (default ``compare-<data>-<time>``); an existing ``name`` is an
    error (continue it with :func:`resume_comparison`).  ``base.model.name`` is ignored: the
    depths choose the models, and every other key is the same for all members.
    """
    validate(base)
    seed_list = list(range(base.train.seed, base.train.seed + seeds)) if isinstance(seeds, int) else list(seeds)
    sizes = list(train_sizes or [base.data.train_size])  # default: the recipe's own
    plan = ComparePlan(list(depths), seed_list, sizes, test_on=test_on, dense=dense)
    _check_plan(plan)
    _check_jobs(jobs, world_size)
    out_dir = Path(base.runs_dir) / (name or default_run_name("compare", base.data.name))
    if out_dir.exists():
        raise ConfigError(f"comparison {out_dir} already exists; continue it with "
                          f"`resnetlab compare --resume {out_dir}` or pick another --name")
    out_dir.mkdir(parents=True)
    spec = {"plan": plan.__dict__, "base": base.to_dict()}
    (out_dir / PLAN_FILE).write_text(yaml.safe_dump(spec, sort_keys=False))
    return _execute(out_dir, plan, base, progress, world_size, jobs)


def resume_comparison(out_dir: str | os.PathLike, *, progress: bool | None = None,
                      world_size: int = 1, jobs: int | None = None) -> Comparison:
    """Continue the comparison in ``out_dir``: finished members are kept as they are, a member
    cut off mid-run resumes from its last checkpoint, the rest are trained."""
    _check_jobs(jobs, world_size)
    out_dir = Path(out_dir)
    plan_file = out_dir / PLAN_FILE
    if not plan_file.is_file():
        raise ConfigError(f"--resume {out_dir}: no {PLAN_FILE} there (not a comparison directory)")
    try:
        spec = yaml.safe_load(plan_file.read_text())
        plan, base = ComparePlan(**spec["plan"]), RunConfig.from_dict(spec["base"], str(plan_file))
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise ConfigError(f"{plan_file}: not a comparison plan ({err})") from None
    _check_plan(plan)
    return _execute(out_dir, plan, base, progress, world_size, jobs)


def _execute(out_dir: Path, plan: ComparePlan, base: RunConfig, progress: bool | None,
             world_size: int = 1, jobs: int | None = None) -> Comparison:
    """Train (or read back) every member, rewriting the report after each one, so an
    interrupted comparison already shows what it has.  ``jobs``: members at a time (None:
    :func:`~resnetlab.run.compare_jobs.auto_jobs`)."""
    configs = plan.members(base, out_dir / "runs")
    if jobs is None:
        jobs = auto_jobs(len(configs), world_size, base.train.device)
    with lock_run_dir(out_dir):
        if jobs == 1:
            return _one_at_a_time(out_dir, plan, configs, progress, world_size)
        return _side_by_side(out_dir, plan, configs, jobs)


def _one_at_a_time(out_dir: Path, plan: ComparePlan, configs: list[RunConfig],
                   progress: bool | None, world_size: int) -> Comparison:
    runs, records = [], []
    for i, cfg in enumerate(configs, 1):
        say(f"[{i}/{len(configs)}] {cfg.name}")
        run = _run_member(cfg, plan.test_on, progress, world_size)
        runs.append(run)
        records.append(member_record(run))
        rows, findings, files = write_artefacts(out_dir, plan, records)
    return Comparison(out_dir, runs, rows, findings, files)


def _side_by_side(out_dir: Path, plan: ComparePlan, configs: list[RunConfig], jobs: int) -> Comparison:
    """``jobs`` members at a time in worker processes, longest first; the report keeps the
    plan's order whatever order they finish in."""
    done: dict[int, tuple[Run, dict[str, Any]]] = {}

    def report(i: int, run: Run) -> tuple:
        done[i] = run, member_record(run)
        return write_artefacts(out_dir, plan, [done[j][1] for j in sorted(done)])

    finished = [i for i, cfg in enumerate(configs) if _finished(cfg)]
    artefacts = None
    for i in finished:
        artefacts = report(i, _run_member(configs[i], plan.test_on, progress=False))
    todo = [i for i in plan.longest_first() if i not in done]

    def on_done(i: int, run_dir: Path) -> None:
        nonlocal artefacts
        artefacts = report(i, Run.open(run_dir))

    if todo:  # none left when a finished comparison is resumed: no workers to start
        jobs = min(jobs, len(todo))
        say(f"{len(todo)} members to train, {jobs} at a time on {threads_per_process(jobs)} "
            "thread(s) each, longest first (--jobs 1: one at a time)")
        train_in_workers(configs, todo, jobs, plan.test_on, on_done)
    rows, findings, files = artefacts
    return Comparison(out_dir, [done[i][0] for i in sorted(done)], rows, findings, files)


def _finished(cfg: RunConfig) -> bool:
    return (Path(cfg.runs_dir) / str(cfg.name) / "results.json").is_file()


def _run_member(cfg: RunConfig, test_on: str, progress: bool | None, world_size: int = 1) -> Run:
    """A finished member is read back; one with a checkpoint resumes; one cut off before its
    first checkpoint holds nothing worth keeping and starts again."""
    path = Path(cfg.runs_dir) / str(cfg.name)
    if _finished(cfg):
        found = Run.open(path)
        found.already_finished = True
        return found
    if path.is_dir():
        if resolve_checkpoint_dir(path / "checkpoints" / "last") is not None:
            return resume(path, test_on=test_on, progress=progress, world_size=world_size)
        shutil.rmtree(path)
    return train(cfg, test_on=test_on, progress=progress, world_size=world_size)



def read_comparison(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``comparison.json`` a comparison wrote (rows, findings, figures)."""
    path = Path(out_dir) / "comparison.json"
    if not path.is_file():
        raise ConfigError(f"{out_dir}: no comparison.json (not a comparison, or no member finished)")
    return json.loads(path.read_text())
