"""``resnetlab export``: a run or weights file -> ONNX / TorchScript / safetensors, verified.

Every export is checked before it is reported done: the written file is loaded back and run on a
batch of real inputs from the run's data, and its logits must match eager PyTorch (max abs diff
within ``tolerance`` times the logit scale, top-1 agreement 100%).  A failed check is a
:class:`VerificationError`, never a warning.  int8 (ONNX only) is calibrated on training images
and kept only when its test accuracy drops by at most ``max_drop`` points.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnetlab.checkpoint import WEIGHTS, resolve_checkpoint_dir
from resnetlab.deploy.loading import LoadedModel, load_model
from resnetlab.utils.errors import ConfigError, DataError, UserError
from resnetlab.utils.files import file_sha256

__all__ = ["FORMATS", "ExportResult", "VerificationError", "export_model", "verify",
           "verified_export", "export_status", "check_onnx_file", "auto_export", "real_batches", "data_meta_for"]

FORMATS = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt",
           "safetensors": "model.safetensors"}
TOLERANCE = 1e-4  # max |logit diff| / max(1, max |logit|): float32 reordering stays ~1e-6
_VERIFY_IMAGES = 64
_CALIBRATION_IMAGES = 512  # min/max ranges settle within a few hundred images


class VerificationError(UserError):
    """An exported model does not reproduce eager PyTorch on real inputs."""


@dataclass
class ExportResult:
    """What ``export_model`` wrote and measured."""

    path: Path
    format: str
    check: dict[str, Any]
    int8: dict[str, Any] | None = None
    notices: list[str] = field(default_factory=list)


def data_meta_for(name: str, data_dir: str | None = None) -> dict[str, Any]:
    """The preprocessing meta of data set ``name`` as training computes it."""
    return _bundle(name, data_dir, None, None).meta


def _bundle(name: str, data_dir: str | None, image_size: Any, in_chans: int | None,
            batch_size: int = 256, **table: Any) -> Any:
    """The one place deploy/ builds data (through the data package's public API); ``table``:
    a CSV run's ``target`` and ``task``."""
    from resnetlab.data import build_data
    from resnetlab.engine.config import DataConfig

    cfg = DataConfig(name=name, data_dir=data_dir, augment="none", image_size=image_size,
                     batch_size=batch_size, eval_batch_size=batch_size, download=False, **table)
    return build_data(cfg, in_chans=in_chans, channels_last=False)


def real_batches(meta: dict[str, Any], split: str, limit: int, batch_size: int = 256
                 ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Up to ``limit`` preprocessed ``(x, y)`` images of ``split`` (train/val/test) of the
    data a run was trained on, normalised with the run's own mean/std."""
    source = meta.get("source") if meta.get("kind") == "image" else None
    named = ":" not in str(meta.get("name", ""))
    table = meta.get("table") or {}
    extra = {"target": table["target"], "task": meta.get("task")} if table.get("target") else {}
    bundle = _bundle(meta["name"], source if named else None, meta.get("image_size"),
                     meta.get("in_chans"), batch_size, **extra)
    loader = getattr(bundle, split, None) or bundle.val
    renorm = _renormalise(bundle.meta, meta)
    out, seen = [], 0
    for x, y in loader.epoch(0):
        out.append((renorm(x[:limit - seen].float()).contiguous(), y[:limit - seen]))
        seen += len(out[-1][1])
        if seen >= limit:
            break
    return out


def _renormalise(built: dict[str, Any], run: dict[str, Any]
                 ) -> Callable[[torch.Tensor], torch.Tensor]:
    """Map images normalised with the freshly built data's mean/std to the run's own: a
    ``--train-size`` run computed its statistics on its subset, and the exported model (and
    so int8 calibration and its score) expects those."""
    if built.get("kind") != "image" or not run.get("mean") or built.get("mean") == run.get("mean") \
            and built.get("std") == run.get("std"):
        return lambda x: x

    def column(values: Any) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32).view(-1, 1, 1)

    scale = column(built["std"]) / column(run["std"])
    shift = (column(built["mean"]) - column(run["mean"])) / column(run["std"])
    return lambda x: x * scale + shift


def _check_batch(loaded: LoadedModel) -> tuple[torch.Tensor, list[str]]:
    """Inputs to verify on: real ones when the run's data can be read, else random ones."""
    shape = [loaded.in_channels, *(loaded.data_meta or {}).get("image_size", [32, 32])]
    if loaded.data_meta is not None and loaded.data_meta.get("preset"):
        note = f"the {loaded.data_meta['preset']} preset names no data; verified on random inputs"
    elif loaded.data_meta is not None:
        try:
            return torch.cat([x for x, _ in real_batches(loaded.data_meta, "test",
                                                         _VERIFY_IMAGES)]), []
        except UserError as err:
            note = f"the run's data cannot be read ({err}); verified on random inputs"
    else:
        note = "bare weights name no data; verified on random inputs"
    if loaded.input_kind == "vector":
        shape = [loaded.in_channels]
    return torch.randn(_VERIFY_IMAGES, *shape, generator=torch.Generator().manual_seed(0)), [note]


def verify(reference: Callable[[torch.Tensor], torch.Tensor],
           candidate: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, what: str,
           tolerance: float = TOLERANCE, min_agreement: float = 1.0) -> dict[str, Any]:
    """Compare logits of ``candidate`` with ``reference`` on ``x``; raise when they differ."""
    with torch.inference_mode():
        ref, got = reference(x).float(), candidate(x).float()
    diff = float((ref - got).abs().max())
    agree = float((ref.argmax(1) == got.argmax(1)).float().mean())
    scale = max(1.0, float(ref.abs().max()))
    check = {"inputs": len(x), "max_abs_diff": diff, "top1_agreement": agree,
             "tolerance": tolerance * scale, "ok": diff <= tolerance * scale and agree >= min_agreement}
    if not check["ok"]:
        raise VerificationError(f"{what}: verification failed on {len(x)} inputs (max abs diff "
                                f"{diff:.3g} > {tolerance * scale:.3g} or top-1 agreement "
                                f"{100 * agree:.1f}%); the export was not kept")
    return check


def _fingerprint(source: Path) -> str | None:
    """sha256 of the weights an export came from, so a newer checkpoint makes it stale."""
    ckpt = resolve_checkpoint_dir(source) if source.is_dir() else None
    weights = ckpt / WEIGHTS if ckpt is not None else source
    if not weights.is_file():
        return None
    return file_sha256(weights)


def verified_export(run: Path, int8: bool | None = None) -> Path | None:
    """The run's fastest verified ONNX export for its current checkpoint (int8 first), or None;
    ``int8=False``: the fp32 export only, ``True``: the int8 one only."""
    return export_status(run, int8)[0]


def export_status(run: Path, int8: bool | None = None) -> tuple[Path | None, str | None]:
    """``(export, notice)``: the run's fastest verified ONNX export (``int8`` as in
    :func:`verified_export`), or None with the reason when an export exists but cannot be
    trusted (its file changed since it was verified)."""
    folder = run / "export"
    sidecar = folder / (FORMATS["onnx"] + ".json")
    if not run.is_dir() or not sidecar.is_file():
        return None, None
    try:
        info = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError):
        return None, None
    if not info.get("check", {}).get("ok") or info.get("weights_sha256") != _fingerprint(run):
        return None, None
    kept = info.get("int8") or {}
    if kept.get("kept") and (folder / kept.get("file", "")).is_file() and int8 is not False:
        chosen, recorded = folder / kept["file"], kept.get("sha256")
    elif (folder / FORMATS["onnx"]).is_file() and not int8:
        chosen, recorded = folder / FORMATS["onnx"], info.get("file_sha256")
    else:
        return None, None
    problem = _hash_problem(chosen, recorded, sidecar)
    return (None, f"{problem}; re-exporting") if problem else (chosen, None)


def _hash_problem(path: Path, recorded: str | None, sidecar: Path) -> str | None:
    """Why ``path`` is not the file its export verified (None when it is): the ONNX file
    itself is hashed, so an edited export is never used as if it were verified."""
    if recorded is None:
        return f"{path}: {sidecar.name} records no sha256 of the file (an older export)"
    if file_sha256(path) != recorded:
        return (f"{path} changed after it was verified (its sha256 differs from the one in "
                f"{sidecar})")
    return None


def check_onnx_file(path: Path) -> str | None:
    """Check an ``.onnx`` file given directly against the sha256 its export recorded.

    Returns a notice when it cannot be verified (no sidecar, an older export); raises
    :class:`VerificationError` when the sidecar says the file was changed after verification.
    """
    sidecar, recorded = _sidecar_record(path)
    if sidecar is None:
        return (f"{path}: no {path.name}.json beside it records a verified export; "
                "using it unverified")
    problem = _hash_problem(path, recorded, sidecar)
    if problem is None:
        return None
    if recorded is None:
        return f"{problem}; using it unverified"
    raise VerificationError(f"{problem}; re-export it (resnetlab export RUN) or remove "
                            f"{sidecar.name} to use the file unverified")


def _sidecar_record(path: Path) -> tuple[Path | None, str | None]:
    """(sidecar, recorded sha256) of an export file; the int8 twin is recorded in its fp32
    model's sidecar."""
    own = Path(f"{path}.json")
    if own.is_file():
        return own, _read_json(own).get("file_sha256")
    if path.name.endswith(".int8.onnx"):
        base = path.with_name(path.name[: -len(".int8.onnx")] + ".onnx.json")
        int8 = _read_json(base).get("int8") or {} if base.is_file() else {}
        if int8.get("file") == path.name:
            return base, int8.get("sha256")
    return None, None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _out_path(source: Path, fmt: str, out: str | os.PathLike | None) -> Path:
    if out is not None:
        return Path(out)
    folder = source / "export" if source.is_dir() else source.parent / f"{source.stem}-export"
    return folder / FORMATS[fmt]


def _stored_meta(loaded: LoadedModel, fmt: str, folded: bool) -> dict[str, Any]:
    return {"format": "resnetlab-export", "version": 1, "export_format": fmt,
            "model": loaded.build_args, "classes": loaded.classes, "data": loaded.data_meta,
            "fold_bn": folded, "precision": "fp32"}


def export_model(source: str | os.PathLike, fmt: str = "onnx", *,
                 out: str | os.PathLike | None = None, int8: bool = False, fold: bool = False,
                 max_drop: float = 0.5, **load_args: Any) -> ExportResult:
    """Export ``source`` (a run directory, checkpoint or weights file) and verify it.

    Writes the model to ``out`` (default ``RUN/export/model.<ext>``) and a JSON sidecar
    ``<file>.json`` with the preprocessing, classes and the verification result; ONNX files also
    carry it in their metadata.  ``load_args`` are :func:`load_model`'s keywords (bare weights).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ConfigError("--int8 needs --format onnx (onnxruntime quantises ONNX graphs)")
    if fold and fmt == "safetensors":
        raise ConfigError("--fold-bn changes the state_dict layout; use it with --format onnx "
                          "or torchscript")
    source = Path(source)
    loaded = load_model(source, **load_args)
    x, notices = _check_batch(loaded)
    net = _prepared(loaded.model, x, fold)
    path = _out_path(source, fmt, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written and verified in a private staging folder beside the target, then renamed in: a
    # crash, a failed check or a concurrent predict never sees a half-written or unverified file.
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=path.parent))
    try:
        result = _export_staged(loaded, net, x, staging / path.name, fmt, fold, int8, max_drop,
                                load_args, _fingerprint(source))
        _publish(staging, path, result)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result.notices[:0] = notices
    return result


def _export_staged(loaded: LoadedModel, net: nn.Module, x: torch.Tensor, path: Path, fmt: str,
                   fold: bool, int8: bool, max_drop: float, load_args: dict[str, Any],
                   sha256: str | None) -> ExportResult:
    """Write, verify and (optionally) quantise into ``path``'s folder, sidecar included."""
    meta = _stored_meta(loaded, fmt, fold)
    writer = {"onnx": _write_onnx, "torchscript": _write_torchscript,
              "safetensors": _write_safetensors}[fmt]
    check = writer(loaded, net, x, path, meta, load_args)
    result = ExportResult(path, fmt, check)
    meta.update(check=check, weights_sha256=sha256)
    if int8:
        result.int8 = _int8(loaded, path, net, max_drop)
        meta["int8"] = result.int8
    if fmt == "onnx":
        from resnetlab.deploy.onnx import write_onnx_meta

        write_onnx_meta(path, meta)
    # the file's own hash, taken last: predict and serve re-check it before every use
    meta["file_sha256"] = file_sha256(path)
    Path(f"{path}.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
    return result


def _publish(staging: Path, path: Path, result: ExportResult) -> None:
    """Rename the staged files over ``path`` (and its int8 twin); the sidecar, which is what
    :func:`verified_export` trusts, goes first out and last in."""
    sidecar = Path(f"{path}.json")
    sidecar.unlink(missing_ok=True)
    if result.int8:  # a refused int8 model replaces no older one silently: it is removed
        twin = path.with_name(result.int8["file"])
        if result.int8["kept"]:
            os.replace(staging / twin.name, twin)
        else:
            twin.unlink(missing_ok=True)
    os.replace(staging / path.name, path)
    os.replace(staging / sidecar.name, sidecar)
    result.path = path


def auto_export(run: Path) -> tuple[Path | None, list[str]]:
    """Export run directory ``run`` to verified fp32 ONNX once, for ``predict``'s default path.

    Returns ``(model.onnx, notices)``, or ``(None, notices)`` when it cannot be done
    (onnxruntime missing, run directory not writable, verification failed): then the caller
    predicts with torch.
    """
    import importlib.util
    import time

    if not (run / "checkpoints").is_dir():
        return None, []  # a checkpoint dir or weights file: no run folder to keep an export in
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return None, []
    start = time.perf_counter()
    try:
        result = export_model(run, "onnx")
    except OSError as err:
        return None, [f"{run}: cannot write an ONNX export there ({err.strerror or err}); "
                      "predicting with torch"]
    except VerificationError as err:
        return None, [f"{err}; predicting with torch"]
    c, seconds = result.check, time.perf_counter() - start
    return result.path, [*result.notices, (
        f"{run}: exported once to {result.path} for fast prediction (verified on {c['inputs']} "
        f"inputs: max abs diff {c['max_abs_diff']:.1e}, top-1 agreement "
        f"{100 * c['top1_agreement']:.0f}%; {seconds:.1f} s); later predicts reuse it")]


def _prepared(model: nn.Module, x: torch.Tensor, fold: bool) -> nn.Module:
    if not fold:
        return model.eval()
    from resnetlab.layers.fold import fold_bn

    folded = fold_bn(model, x[:1] if x.ndim == 4 else None)
    verify(model, folded, x, "fold_bn")  # folding is exact up to float32 rounding
    return folded


def _write_onnx(loaded, net, x, path, meta, load_args) -> dict[str, Any]:
    from resnetlab.deploy.onnx import OnnxBackend, export_onnx

    export_onnx(net, x[:2], path, meta)
    return verify(loaded.model, OnnxBackend(path), x, str(path))


def _write_torchscript(loaded, net, x, path, meta, load_args) -> dict[str, Any]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation note: TorchScript is asked for
        traced = torch.jit.trace(net, x[:2], check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"resnetlab.json": json.dumps(meta)})
        reloaded = torch.jit.load(str(path))  # our own file, just written
    return verify(loaded.model, reloaded, x, str(path))


def _write_safetensors(loaded, net, x, path, meta, load_args) -> dict[str, Any]:
    import safetensors.torch

    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    safetensors.torch.save_file(state, str(path), metadata={"resnetlab": json.dumps(meta)})
    again = load_model(path)  # the header's meta names the architecture: self-describing
    return verify(loaded.model, again.model, x, str(path), tolerance=0.0)


def _accuracy(run: Callable[[torch.Tensor], torch.Tensor],
              batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    correct = sum(int((run(x).argmax(1) == y).sum()) for x, y in batches)
    return 100.0 * correct / max(1, sum(len(y) for _, y in batches))


def _int8(loaded: LoadedModel, fp32_path: Path, net: nn.Module, max_drop: float) -> dict[str, Any]:
    """Quantise with training-data calibration; keep int8 only within ``max_drop`` points."""
    from resnetlab.deploy.onnx import OnnxBackend
    from resnetlab.deploy.quantize import quantize_int8

    if loaded.data_meta is None:
        raise ConfigError("--int8 calibrates on the training data; bare weights name none (export "
                          "a run directory)")
    try:
        calib = [x for x, _ in real_batches(loaded.data_meta, "train", _CALIBRATION_IMAGES, 64)]
        test = real_batches(loaded.data_meta, "test", 10_000)
    except UserError as err:
        raise DataError(f"--int8 needs the run's data for calibration and testing: {err}") from None
    int8_path = fp32_path.with_name(fp32_path.stem + ".int8.onnx")
    quantize_int8(fp32_path, int8_path, calib)
    fp32_acc = _accuracy(OnnxBackend(fp32_path), test)
    int8_acc = _accuracy(OnnxBackend(int8_path), test)
    x = torch.cat([b for b, _ in test])[:_VERIFY_IMAGES]
    agree = float((OnnxBackend(fp32_path)(x).argmax(1) == OnnxBackend(int8_path)(x).argmax(1))
                  .float().mean())
    kept = fp32_acc - int8_acc <= max_drop
    sha256 = file_sha256(int8_path) if kept else None
    if not kept:
        int8_path.unlink()
    return {"file": int8_path.name, "sha256": sha256, "fp32_accuracy": fp32_acc, "int8_accuracy": int8_acc,
            "change_points": int8_acc - fp32_acc, "max_drop": max_drop, "kept": kept,
            "top1_agreement": agree, "test_images": sum(len(y) for _, y in test)}
