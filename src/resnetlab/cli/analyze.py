"""``resnetlab analyze``: gradient flow, block lesions, Grad-CAM and saliency.

Each command parses its flags, calls :mod:`resnetlab.analysis.studies` and prints the findings
(sentences computed from the measured numbers) and where the files went.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option
Arg = typer.Argument
app = typer.Typer(name="analyze", no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure why skip connections work: gradflow, lesion, gradcam, saliency.")


def _print(result: dict, out: Path) -> None:
    for line in result["findings"]:
        print(f"- {line}")
    print(f"wrote {out}/")


@app.command("gradflow")
def gradflow(
    sources: Annotated[list[str], Arg(help="Run directories or model names (e.g. resnet56 plain56; a,b,c works too).", show_default=False)],
    compare_plain: Annotated[bool, Opt("--compare-plain", help="Also measure each model's plain twin.")] = False,
    norm: Annotated[str, Opt(help="batch (the model's own) or none (no normalisation layers).")] = "batch",
    data: Annotated[str | None, Opt(help="Data set (default: the run's; fashion-mnist for names).")] = None,
    data_dir: Annotated[str | None, Opt(help="Where the data set's files are.")] = None,
    images: Annotated[int, Opt(help="Training images to measure on.")] = 256,
    batch_size: Annotated[int, Opt(help="Images per forward/backward pass.")] = 128,
    seed: Annotated[int, Opt(help="Seed of the initialisation.")] = 0,
    out: Annotated[Path | None, Opt(help="Output folder (default: RUN/analysis or analysis/gradflow).")] = None,
) -> None:
    """Gradient norms per layer, activation scales and branch/skip ratios, plain vs residual."""
    from resnetlab.analysis.runs import data_batches, is_run_dir, load_run
    from resnetlab.analysis.studies import default_out, gradflow_targets, run_batches, run_gradflow

    names = [s for item in sources for s in item.split(",") if s]
    run_dir = next((s for s in names if is_run_dir(s)), None)
    if run_dir:
        batches, classes = run_batches(load_run(run_dir, weights=False), run_dir, data, data_dir,
                                       "train", images, batch_size)
    else:
        batches, classes = data_batches(data or "fashion-mnist", images=images,
                                        batch_size=batch_size, data_dir=data_dir)
    batches = list(batches)
    targets = gradflow_targets(names, compare_plain=compare_plain, norm=norm, seed=seed,
                               in_chans=int(batches[0][0].shape[1]), num_classes=len(classes))
    out = out or default_out(names[0], "gradflow")
    _print(run_gradflow(targets, batches, out, norm=norm), out)


@app.command("lesion")
def lesion(
    runs: Annotated[list[str], Arg(help="Trained run directories (e.g. a resnet56 and a plain56 run).", show_default=False)],
    max_k: Annotated[int, Opt("--max-k", help="Remove up to this many random blocks at once.")] = 5,
    draws: Annotated[int, Opt(help="Random block sets per k.")] = 5,
    images: Annotated[int, Opt(help="Test images to evaluate on.")] = 2000,
    data: Annotated[str | None, Opt(help="Data set (default: the run's).")] = None,
    data_dir: Annotated[str | None, Opt(help="Where the data set's files are.")] = None,
    seed: Annotated[int, Opt(help="Seed of the random block sets.")] = 0,
    out: Annotated[Path | None, Opt(help="Output folder (default: RUN/analysis).")] = None,
) -> None:
    """Accuracy with each residual block removed (Veit et al. 2016), and k blocks at once."""
    from resnetlab.analysis.studies import default_out, run_lesions

    out = out or default_out(runs[0], "lesion")
    _print(run_lesions(runs, out, data=data, data_dir=data_dir, images=images, max_k=max_k,
                       draws=draws, seed=seed), out)


def _explain(method: str, run: str, images: list[str] | None, layer: str | None,
             per_class: int, data_dir: str | None, out: Path | None) -> None:
    from resnetlab.analysis.studies import default_out, run_explanations

    if not images and not per_class:
        raise typer.BadParameter("give IMAGES (files or folders) and/or --per-class N",
                                 param_hint="IMAGES")
    out = out or default_out(run, method)
    _print(run_explanations(run, images or [], out, method=method, layer=layer,
                            per_class=per_class, data_dir=data_dir), out)


_RUN = Annotated[str, Arg(help="Trained run directory.", show_default=False)]
_IMAGES = Annotated[list[str] | None, Arg(help="Image files or folders.", show_default=False)]
_PER_CLASS = Annotated[int, Opt("--per-class", help="Also a grid of N test images per class.")]
_DATA_DIR = Annotated[str | None, Opt(help="Where the data set's files are.")]
_OUT = Annotated[Path | None, Opt(help="Output folder (default: RUN/analysis).")]


@app.command("gradcam")
def gradcam(run: _RUN, images: _IMAGES = None,
            layer: Annotated[str | None, Opt(help="Stage or block, e.g. layer2 or layer3.4 (default: last stage).")] = None,
            per_class: _PER_CLASS = 0, data_dir: _DATA_DIR = None, out: _OUT = None) -> None:
    """Grad-CAM overlays (Selvaraju et al. 2017) for images, and a per-class grid."""
    _explain("gradcam", run, images, layer, per_class, data_dir, out)


@app.command("saliency")
def saliency(run: _RUN, images: _IMAGES = None, per_class: _PER_CLASS = 0,
             data_dir: _DATA_DIR = None, out: _OUT = None) -> None:
    """Input-gradient saliency overlays (Simonyan et al. 2014) for images, and a per-class grid."""
    _explain("saliency", run, images, None, per_class, data_dir, out)
