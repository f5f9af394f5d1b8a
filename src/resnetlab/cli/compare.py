"""``resnetlab compare``: the degradation experiment (plain vs residual at several depths).

Every ``resnetlab train`` flag is accepted and applies to every member: the option list is
train's own (read off its signature below), so the two commands cannot drift apart.  Only
``--model`` (the depths choose it), ``--train-size`` (``--train-sizes``) and ``--resume`` (a
comparison directory here) are replaced.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from resnetlab.cli.options import flag_overrides, options_for, with_options
from resnetlab.cli.train import train_extras
from resnetlab.utils.errors import ConfigError

Opt = typer.Option


def _own(ctx: typer.Context,
         depths: Annotated[str | None, Opt(help="Depths to compare, e.g. 20,56 (resnetN and its plain twin plainN).", rich_help_panel="Comparison")] = None,
         seeds: Annotated[int, Opt(help="Seeds per model (--seed, +1, ...); the table gives mean ± std.", rich_help_panel="Comparison")] = 1,
         blocks: Annotated[str | None, Opt(help="Instead of --depths, for csv: tables: dense-block counts of mlp_resnet and its twin plain_mlp, e.g. 2,8,32 (the table's own split).", rich_help_panel="Comparison")] = None,
         train_sizes: Annotated[str | None, Opt(help="Training-set sizes to sweep, e.g. 500,5000,55000 (default: the recipe's).", rich_help_panel="Comparison")] = None,
         resume: Annotated[Path | None, Opt(help="Continue this comparison directory (finished members are kept).", rich_help_panel="Comparison")] = None,
         jobs: Annotated[int | None, Opt(help="Members trained at a time, each in its own process on cores/N threads (default: 2 on a CPU with 2+ cores, else 1).", rich_help_panel="Comparison")] = None,
         name: Annotated[str | None, Opt(help="Comparison directory name under --runs-dir.", rich_help_panel="Comparison")] = None,
         config: Annotated[str, Opt(help="Recipe for every member (name or YAML file).", rich_help_panel="Comparison")] = "compare-quick",
         test_on: Annotated[str, Opt(help="Weights for each member's test evaluation: best or last.", rich_help_panel="Run")] = "best",
         progress: Annotated[bool | None, Opt("--progress/--no-progress", help="Progress bars (default: when stderr is a terminal).", rich_help_panel="Run")] = None,
         ) -> None: ...


# compare's own options, then every train option but --model and --train-size (replaced above)
@with_options(_own, options_for("compare", exclude=("model.name", "data.train_size"), recipe="compare-quick"),
              train_extras)
def command(ctx: typer.Context, **params: Any) -> None:
    """Train residual nets and their plain twins at each depth with one recipe; write the
    table, the paper's figure (He et al. 2015, Fig. 1) and a markdown + HTML report."""
    from resnetlab import run
    from resnetlab.cli.common import print_table
    from resnetlab.run.compare_results import COLUMNS

    try:
        result = _run(params)
    except run.Interrupted as stop:  # stop.run_dir is a member: COMPARISON/runs/<member>
        print(f"interrupted; continue with: resnetlab compare --resume {stop.run_dir.parent.parent}",
              file=sys.stderr)
        raise SystemExit(130) from None
    print_table("comparison", COLUMNS, [[r[c] for c in COLUMNS] for r in result.rows])
    for line in result.findings:
        print(f"- {line}")
    print(f"comparison directory: {result.out_dir} (report.md, report.html, table.csv)")


def _run(params: dict[str, Any]):
    from resnetlab import run
    from resnetlab.cli.common import parse_number_list

    world_size = params.get("nproc") or 1  # --nproc: each member on N processes
    if params["resume"] is not None:
        return run.resume_comparison(params["resume"], progress=params["progress"],
                                     world_size=world_size, jobs=params["jobs"])
    flag = "--blocks" if params.get("blocks") else "--depths"
    if not (params["depths"] or params.get("blocks")):
        raise ConfigError("--depths: give the depths to compare (e.g. --depths 20,56), --blocks "
                          "for a table (e.g. --blocks 2,8,32), or --resume DIR")
    if params["depths"] and params.get("blocks"):
        raise ConfigError("--depths and --blocks: choose one (--blocks sweeps the dense blocks "
                          "of mlp_resnet on a table)")
    depths = parse_number_list(params["depths"] or params["blocks"], flag)
    if any(d != int(d) for d in depths):
        raise ConfigError(f"{flag} {params['depths'] or params['blocks']}: whole numbers, e.g. 20,56")
    depths = [int(d) for d in depths]
    sizes = parse_number_list(params["train_sizes"], "--train-sizes")
    overrides = flag_overrides(params, params["set_"])
    if flag == "--blocks":  # the recipe's image subset sizes do not fit a table
        overrides.setdefault("data.train_size", None)
        overrides.setdefault("data.val_size", None)
    base = run.config_with(params["config"], overrides)
    return run.compare(base, depths, seeds=params["seeds"], name=params["name"],
                       train_sizes=[int(n) for n in sizes] if sizes else None,
                       test_on=params["test_on"], progress=params["progress"], world_size=world_size,
                       dense=flag == "--blocks", jobs=params["jobs"])
