"""Assembles ``resnetlab serve``: the predictor, the model card and Grad-CAM, then uvicorn.

The server itself (:mod:`resnetlab.deploy.server`) knows nothing of ``analysis``; this module
sits above both layers, so it is where the Grad-CAM explain function is built and handed in.
Model files load only through the project's safe loaders (:func:`load_predictor` and
:func:`load_model`: safetensors, ``torch.load(weights_only=True)``, ONNX).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from resnetlab.utils.device import threads_per_process
from resnetlab.utils.errors import ConfigError
from resnetlab.utils.notices import say

__all__ = ["ServeConfig", "load_service", "model_card", "build_app", "app_from_env", "serve",
           "BACKEND_NAMES", "parse_size"]

BACKEND_NAMES = {"ort": "onnx", "torch": "torch", "auto": "auto"}  # flag -> predictor runtime
_ENV = "RESNETLAB_SERVE_CONFIG"  # how uvicorn's worker processes receive the configuration
_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KIB": 1024, "MIB": 1024**2,
          "GIB": 1024**3}


def parse_size(text: str, flag: str = "--max-body") -> int:
    """``"10MB"``, ``"512KiB"``, ``"2000000"`` -> bytes (SI units; KiB/MiB for powers of 2)."""
    raw = str(text).strip().upper().replace(" ", "")
    number = raw.rstrip("KMGIB")
    unit = raw[len(number):]
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise ConfigError(f"{flag} {text}: give a size like 10MB, 512KB or 2000000") from None
    if value < 1:
        raise ConfigError(f"{flag} {text}: must be at least 1 byte")
    return int(value)


@dataclass
class ServeConfig:
    """The ``resnetlab serve`` options (each flag named as the CLI spells it)."""

    source: str
    host: str = "127.0.0.1"
    port: int = 8000
    backend: str = "auto"       # ort (onnxruntime), torch, or auto (ort when it can, else torch)
    int8: bool = False          # the run's verified int8 ONNX export (ort)
    max_batch: int = 32
    max_wait_ms: float = 5.0
    workers: int = 1
    max_body: int = 10 * 1000**2
    device: str = "auto"        # torch backend only

    def check(self) -> None:
        """One-line errors for impossible values, before anything is loaded."""
        if self.backend not in BACKEND_NAMES:
            raise ConfigError(f"--backend {self.backend!r}: choose ort or torch")
        if self.int8 and self.backend == "torch":
            raise ConfigError("--int8 runs the int8 ONNX export in onnxruntime; use --backend ort")
        for flag, value, low in (("--max-batch", self.max_batch, 1), ("--workers", self.workers, 1),
                                 ("--port", self.port, 0), ("--max-wait-ms", self.max_wait_ms, 0)):
            if not value >= low:
                raise ConfigError(f"{flag} {value}: must be at least {low}")
        if not Path(self.source).exists():
            raise ConfigError(f"{self.source}: no such run directory or model file")
        if self.int8 and Path(self.source).suffix.lower() == ".onnx":
            raise ConfigError(f"--int8 with {self.source}: an .onnx file is served as it is; "
                              "give the run directory (or its .int8.onnx file, without --int8)")

    def options(self) -> Any:
        from resnetlab.deploy.server import ServerOptions

        return ServerOptions(max_batch=self.max_batch, max_wait_ms=self.max_wait_ms,
                             max_body=self.max_body)


def load_service(cfg: ServeConfig) -> Any:
    """The predictor (preprocessing exactly as ``resnetlab predict``), the model card and,
    for image models with a PyTorch checkpoint, a Grad-CAM explain function."""
    from resnetlab.deploy import load_model, load_predictor
    from resnetlab.deploy.server import Service

    cfg.check()
    runtime = "onnx" if cfg.int8 else BACKEND_NAMES[cfg.backend]
    predictor = load_predictor(cfg.source, runtime=runtime, device=cfg.device,
                               batch_size=max(256, cfg.max_batch), int8=cfg.int8)
    for note in predictor.notices:
        say(f"note: {note}")
    loaded = None if Path(cfg.source).suffix.lower() == ".onnx" else load_model(cfg.source)
    explain = None
    if loaded is not None and (predictor.data_meta or {}).get("kind") == "image":
        explain = grad_cam_explainer(loaded, predictor.classes)
    return Service(predictor, model_card(cfg, predictor, loaded), explain)


def grad_cam_explainer(loaded: Any, classes: list[str]) -> Callable[[torch.Tensor], dict]:
    """``explain(x)`` for one preprocessed image: the top class and its Grad-CAM overlay on
    the last stage (Selvaraju et al. 2017), computed on the unfolded PyTorch model."""
    from resnetlab.analysis.gradcam import display_images, grad_cam, overlay_png, resolve_layer

    model = loaded.model.eval()
    layer = resolve_layer(model, None)[0]

    def explain(x: torch.Tensor) -> dict[str, Any]:
        maps, pred = grad_cam(model, x, layer)
        with torch.no_grad():
            probs = model(x).softmax(1)[0]
        index = int(pred[0])
        name = classes[index] if index < len(classes) else str(index)
        png = overlay_png(display_images(x, loaded.data_meta)[0], maps[0])
        return {"class": name, "index": index, "prob": float(probs[index]), "layer": layer,
                "overlay_png": png}
    return explain


def _served_file(cfg: ServeConfig, predictor: Any) -> Path:
    """The model file this server runs: the ONNX file, or the checkpoint's weights."""
    from resnetlab.checkpoint import WEIGHTS, resolve_checkpoint_dir

    onnx = getattr(predictor.backend, "path", None)
    if onnx is not None:
        return Path(onnx)
    source = Path(cfg.source)
    found = resolve_checkpoint_dir(source) if source.is_dir() else None
    return found / WEIGHTS if found is not None else source


def _test_accuracy(source: Path) -> float | None:
    """The run's final test top-1 (``results.json``), looking up from a checkpoint or export."""
    from resnetlab.run.experiment import Run

    for folder in (source, *source.resolve().parents[:3]):
        if (folder / "config.yaml").is_file() and (folder / "results.json").is_file():
            top1 = (Run.open(folder).results or {}).get("top1")
            return None if top1 is None else float(top1)
    return None


def model_card(cfg: ServeConfig, predictor: Any, loaded: Any | None) -> dict[str, Any]:
    """``GET /v1/model``: architecture, input, classes, test accuracy and the file's sha256."""
    from resnetlab.data import input_columns
    from resnetlab.utils.files import file_sha256

    meta = predictor.data_meta or {}
    stored = getattr(predictor.backend, "meta", None) or {}
    args = loaded.build_args if loaded is not None else stored.get("model") or {}
    if meta.get("kind") == "table":
        model_input: dict[str, Any] = {"kind": "table", "columns": input_columns(meta),
                                       "task": meta.get("task", "classification")}
    else:
        model_input = {"kind": "image", "channels": meta.get("in_chans"),
                       "size": meta.get("image_size"), "mean": meta.get("mean"),
                       "std": meta.get("std")}
    served = _served_file(cfg, predictor)
    return {"architecture": args.get("name", "unknown"), "model_args": args,
            "backend": "ort" if predictor.runtime == "onnx" else "torch",
            "int8": ".int8." in served.name, "input": model_input, "classes": predictor.classes,
            "test_accuracy": _test_accuracy(Path(cfg.source)), "file": served.name,
            "sha256": file_sha256(served), "max_batch": cfg.max_batch}


def build_app(cfg: ServeConfig, service: Any | None = None) -> Any:
    """The FastAPI app for ``cfg``; ``service`` (already loaded) skips loading it again."""
    from resnetlab.deploy.server import create_app

    return create_app((lambda: service) if service is not None else (lambda: load_service(cfg)),
                      cfg.options())


def app_from_env() -> Any:
    """uvicorn's factory in each worker process (``--workers N``): the configuration comes in
    the environment, and the CPU's threads are shared out between the workers."""
    cfg = ServeConfig(**json.loads(os.environ[_ENV]))
    torch.set_num_threads(threads_per_process(cfg.workers))
    return build_app(cfg)


def serve(cfg: ServeConfig, log_level: str = "info") -> None:
    """Load and check the model (one-line errors before anything binds), then run uvicorn
    until SIGTERM or Ctrl-C: it stops accepting, finishes in-flight requests (up to 30 s)
    and returns, so the process exits 0."""
    import uvicorn

    cfg.check()
    service = load_service(cfg)
    # keep-alive 30 s, not uvicorn's 5 s: a client that reuses a connection the server is
    # closing at that moment gets a transport error without an answer (2 of 10,000 in the soak)
    run: dict[str, Any] = {"host": cfg.host, "port": cfg.port, "log_level": log_level,
                           "timeout_graceful_shutdown": 30, "timeout_keep_alive": 30}
    # uvicorn re-raises the signal it stopped on once it is done; with the default handler
    # that would kill the process with status 143 after the clean shutdown
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    if cfg.workers == 1:
        uvicorn.run(build_app(cfg, service), **run)
    else:
        # the load above checked the model and made any ONNX export once, before N workers
        # could race to; each worker loads its own copy
        del service
        os.environ[_ENV] = json.dumps(asdict(cfg))
        uvicorn.run("resnetlab.run.serving:app_from_env", factory=True, workers=cfg.workers,
                    **run)
