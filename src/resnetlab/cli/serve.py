"""``resnetlab serve``: an HTTP inference server (FastAPI + uvicorn) for a run or model file.

This module only parses the flags and starts the server (:func:`resnetlab.run.serving.serve`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Opt = typer.Option


def command(
    source: Annotated[Path, typer.Argument(metavar="RUN_OR_MODEL_FILE", help="Run directory, checkpoint directory, resnetlab .safetensors export, or .onnx export.", show_default=False)],
    host: Annotated[str, Opt(help="Address to bind; the default answers this machine only. 0.0.0.0 exposes the server to the network.")] = "127.0.0.1",
    port: Annotated[int, Opt(help="TCP port (0: any free port).")] = 8000,
    backend: Annotated[str, Opt(help="ort (onnxruntime, on the run's verified ONNX export, made once when missing) or torch. Default: ort when it can serve the model, else torch.", show_default=False)] = "auto",
    int8: Annotated[bool, Opt("--int8", help="Serve the run's verified int8 ONNX export (make it with `resnetlab export RUN --int8`).")] = False,
    max_batch: Annotated[int, Opt(help="Most images (or rows) per forward pass of the dynamic batcher.")] = 32,
    max_wait_ms: Annotated[float, Opt(help="How long a request waits for others to fill its batch (ms).")] = 5.0,
    workers: Annotated[int, Opt(help="Server processes (each loads the model and batches on its own; /metrics is per process).")] = 1,
    max_body: Annotated[str, Opt(help="Largest request body (413 beyond it): e.g. 10MB, 512KB.")] = "10MB",
    log_level: Annotated[str, Opt(help="uvicorn log level: critical, error, warning, info, debug.")] = "info",
) -> None:
    """Serve a trained model over HTTP: predict, Grad-CAM, metrics and a web page."""
    from resnetlab.run.serving import ServeConfig, parse_size, serve

    cfg = ServeConfig(str(source), host=host, port=port, backend=backend, int8=int8,
                      max_batch=max_batch, max_wait_ms=max_wait_ms, workers=workers,
                      max_body=parse_size(max_body))
    serve(cfg, log_level=log_level)
