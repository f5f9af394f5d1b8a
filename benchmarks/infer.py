"""CPU inference: eager PyTorch vs resnetlab's optimised paths, ResNet-50 and an int8 ResNet-20.

Part 1, ResNet-50 at 224x224 (random weights; speed does not depend on them), batch-1 latency
and batch-16 throughput for four arms measured in the same process, with ``--threads`` threads:

* eager: NCHW, ``model.eval()``, ``torch.no_grad()`` (the baseline);
* ours-torch: what ``resnetlab predict --runtime torch`` runs: BN folded into the convs
  (``resnetlab.deploy.fold_bn``), channels_last, ``torch.inference_mode()``;
* ort-fp32: the exported ONNX model in onnxruntime (``resnetlab export``);
* ort-int8: the same, static QDQ int8 (calibrated on random images: speed only);
* default: what ``resnetlab predict RUN`` runs for a run directory with no export yet (it
  exports and verifies fp32 ONNX once, then predicts through onnxruntime).

Each arm's GFLOP/s (2 x MACs of one image from ``torch.utils.flop_counter``) is printed next to
a large fp32 matmul measured in the same run, the CPU's practical fp32 rate.

Part 2, int8 vs fp32 onnxruntime for the Fashion-MNIST ResNet-20: throughput at batch 256 on
the test images and the test-accuracy change.  ``--run DIR`` uses a trained run; otherwise a
short one (``--epochs``, default 1) is trained through the run API first.  Usage::

    python benchmarks/infer.py [--threads 2] [--run runs/NAME] [--skip-resnet50]

Emulating an AVX2-only CPU for PyTorch's kernels: ``DNNL_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2 python benchmarks/infer.py`` (onnxruntime's MLAS kernels ignore these).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import resnetlab
from resnetlab.deploy import fold_bn
from resnetlab.deploy.export import export_model
from resnetlab.deploy.onnx import OnnxBackend, export_onnx
from resnetlab.deploy.quantize import quantize_int8
from resnetlab.utils.device import cpu_model


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=6.0, help="timing budget per arm and batch")
    p.add_argument("--run", default=None, help="a trained Fashion-MNIST ResNet-20 run directory")
    p.add_argument("--epochs", type=int, default=1, help="epochs of the short run (no --run)")
    p.add_argument("--skip-resnet50", action="store_true")
    p.add_argument("--skip-int8", action="store_true")
    return p.parse_args()


def time_it(fn, x: torch.Tensor, seconds: float) -> float:
    """Median seconds per call after two warm-up calls, over at least 3 calls."""
    fn(x)
    fn(x)
    times, start = [], time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < seconds and len(times) < 50):
        t = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_gflops(n: int = 2048, seconds: float = 3.0) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    per_call = time_it(lambda _: torch.mm(a, b), a, seconds)
    return 2 * n**3 / per_call / 1e9


def resnet50_arms(tmp: Path, threads: int) -> dict:
    torch.manual_seed(0)
    model = resnetlab.create_model("resnet50").eval()
    sample = torch.randn(16, 3, 224, 224)
    optimised = fold_bn(model, sample[:1]).to(memory_format=torch.channels_last)

    def eager(x):
        with torch.no_grad():
            return model(x)

    def ours(x):
        with torch.inference_mode():
            return optimised(x.contiguous(memory_format=torch.channels_last))

    fp32 = export_onnx(model, sample[:2], tmp / "r50.onnx", {})
    int8 = quantize_int8(fp32, tmp / "r50.int8.onnx", [torch.randn(4, 3, 224, 224) for _ in range(4)])
    return {"eager (NCHW, no_grad)": eager, "ours-torch (folded BN, channels_last, inference_mode)": ours,
            "onnxruntime fp32": OnnxBackend(fp32, threads), "onnxruntime int8": OnnxBackend(int8, threads),
            "default predict RUN (auto)": default_backend(model, tmp / "r50-run")}


def default_backend(model: torch.nn.Module, run: Path):
    """What ``resnetlab predict RUN`` runs for a fresh run directory (it exports once)."""
    from resnetlab.checkpoint import save_checkpoint
    from resnetlab.deploy import load_predictor
    from resnetlab.deploy.presets import preset_meta

    save_checkpoint(run / "checkpoints" / "best", model_state=model.state_dict(),
                    meta={"model": model.build_args, "data": preset_meta("imagenet")})
    predictor = load_predictor(run)
    print(f"default predict path: {predictor.runtime} runtime "
          f"({'; '.join(predictor.notices)})")
    return predictor.backend


def part_resnet50(args: argparse.Namespace, tmp: Path, peak: float) -> None:
    with FlopCounterMode(display=False) as counter:
        resnetlab.create_model("resnet50").eval()(torch.randn(1, 3, 224, 224))
    gflop = counter.get_total_flops() / 1e9
    arms = resnet50_arms(tmp, args.threads)
    print(f"\nResNet-50, 224x224, {gflop:.2f} GFLOP per image, {args.threads} threads")
    print(f"{'arm':55s} {'b1 ms':>8s} {'b16 img/s':>10s} {'vs eager':>9s} {'GFLOP/s':>8s} {'of matmul':>9s}")
    base = None
    for name, fn in arms.items():
        b1 = time_it(fn, torch.randn(1, 3, 224, 224), args.seconds / 2)
        b16 = 16 / time_it(fn, torch.randn(16, 3, 224, 224), args.seconds)
        base = base or b16
        print(f"{name:55s} {1e3 * b1:8.1f} {b16:10.2f} {b16 / base:8.2f}x {b16 * gflop:8.1f} "
              f"{100 * b16 * gflop / peak:8.0f}%")


def short_run(epochs: int, tmp: Path) -> Path:
    """A short Fashion-MNIST ResNet-20 run through the run API (what `resnetlab train` calls)."""
    from resnetlab.run import load_recipe, train

    cfg = load_recipe("default")
    cfg.train.epochs, cfg.runs_dir, cfg.name = epochs, str(tmp / "runs"), "infer-bench"
    cfg.train.time_budget = None  # these epochs, not the main job's 5 minutes
    return Path(train(cfg, progress=False).run_dir)


def part_int8(args: argparse.Namespace, tmp: Path) -> None:
    from resnetlab.deploy.export import real_batches
    from resnetlab.deploy.predictor import load_model

    run = Path(args.run) if args.run else short_run(args.epochs, tmp)
    out = tmp / "r20" / "model.onnx"
    result = export_model(run, "onnx", out=out, int8=True, max_drop=100.0)
    q = result.int8
    x = torch.cat([b for b, _ in real_batches(load_model(run).data_meta, "test", 1024)])[:256]
    rates = {}
    for name, path in (("fp32", out), ("int8", out.with_name(q["file"]))):
        rates[name] = len(x) / time_it(OnnxBackend(path, args.threads), x, args.seconds)
    print(f"\nFashion-MNIST ResNet-20 ({run}), onnxruntime, batch {len(x)}, {args.threads} threads")
    print(f"fp32 {rates['fp32']:.0f} img/s, int8 {rates['int8']:.0f} img/s: "
          f"{rates['int8'] / rates['fp32']:.2f}x; test top-1 {q['fp32_accuracy']:.2f}% -> "
          f"{q['int8_accuracy']:.2f}% ({q['change_points']:+.2f} points on {q['test_images']} "
          f"images; --max-drop 0.5 would {'keep' if q['change_points'] >= -0.5 else 'refuse'} it)")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    isa = {k: os.environ[k] for k in ("DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if k in os.environ}
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs), torch {torch.__version__}, "
          f"capability {torch.backends.cpu.get_cpu_capability()} {isa or ''}")
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}")
    peak = matmul_gflops()
    print(f"fp32 2048^3 matmul: {peak:.1f} GFLOP/s")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_resnet50:
            part_resnet50(args, Path(tmp), peak)
        if not args.skip_int8:
            part_int8(args, Path(tmp))


if __name__ == "__main__":
    main()
