"""Is the in-memory data pipeline ever the bottleneck?  Pipeline batches/s vs ResNet-20 steps/s.

Measured in one process on the same device:

* pipeline: ``build_data("fashion-mnist")``'s training loader (uint8 data on the device, seeded
  permutation, batched crop + flip [+ random erasing], normalisation, channels_last), batches
  of 128 consumed as fast as they come;
* per-sample baseline: the same augmentation written the textbook way, one sample at a time in
  a Python loop (what a torchvision ``transforms`` pipeline does), to show what batching buys;
* training step: the registry's ``resnet20`` (``in_chans=1, num_classes=10``), SGD, autocast
  (bf16 by default) and channels_last, fed from the pipeline.

It prints each rate and the ratio pipeline / training step; the target is >= 20x, so the
loader never costs more than 5% of a step.  Real Fashion-MNIST is used when found (Debian
package, ``--data-dir`` or ``$RESNETLAB_DATA``; never downloaded), else random data of the same
shape.  Usage::

    python benchmarks/data_pipeline.py [--device auto] [--precision bf16] [--seconds 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import resnetlab
from resnetlab.data import build_data
from resnetlab.data.augment import ImageTransform, parse_augment
from resnetlab.data.loaders import BatchLoader, TensorSource
from resnetlab.utils import autocast, resolve_device, resolve_dtype
from resnetlab.utils.errors import DataError
from resnetlab.utils.timer import synchronize

TARGET_RATIO = 20.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="bf16", help="training-step autocast: fp32, bf16, auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seconds", type=float, default=1.0, help="time per pipeline arm and round")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds; best is kept")
    p.add_argument("--steps", type=int, default=20, help="timed ResNet-20 training steps")
    p.add_argument("--data-dir", default=None)
    return p.parse_args()


def train_loader(args: argparse.Namespace, device: torch.device, augment: str) -> BatchLoader:
    """The Fashion-MNIST training loader, or one over random data of the same shape."""
    try:
        return build_data("fashion-mnist", data_dir=args.data_dir, batch_size=args.batch_size,
                          augment=augment, device=device, download=False).train
    except DataError as err:
        print(f"(real data not found, using random 55000x1x28x28 uint8: {err})")
        x = torch.randint(0, 256, (55000, 1, 28, 28), dtype=torch.uint8, device=device)
        y = torch.randint(0, 10, (55000,), device=device)
        spec = parse_augment(augment, "crop:2,flip")
        return BatchLoader(TensorSource(x, y), batch_size=args.batch_size, train=True,
                           transform=ImageTransform(spec, [0.286], [0.353], device=device))


def pipeline_rate(loader: BatchLoader, seconds: float, device: torch.device) -> float:
    """Batches/s delivered by ``loader`` (epochs chained until ``seconds`` have passed)."""
    for _ in loader.epoch(0, start=len(loader) - 3):
        pass  # warm-up
    count, epoch = 0, 1
    synchronize(device)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in loader.epoch(epoch):
            count += 1
            if count % 50 == 0 and time.perf_counter() - start >= seconds:
                break
        epoch += 1
    synchronize(device)
    return count / (time.perf_counter() - start)


def per_sample_rate(loader: BatchLoader, batches: int, device: torch.device) -> float:
    """The same crop + flip + normalise, one sample at a time (the textbook way)."""
    images = loader.source.x
    gen = torch.Generator().manual_seed(0)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(batches):
        idx = torch.randperm(len(images), generator=gen)[:loader.batch_size]
        out = []
        for i in idx.tolist():
            img = F.pad(images[i], (2, 2, 2, 2))
            dy, dx = torch.randint(0, 5, (2,), generator=gen).tolist()
            img = img[:, dy:dy + 28, dx:dx + 28]
            if torch.rand(1, generator=gen).item() < 0.5:
                img = img.flip(-1)
            out.append((img.float() / 255 - 0.286) / 0.353)
        torch.stack(out)
    synchronize(device)
    return batches / (time.perf_counter() - start)


def step_rate(loader: BatchLoader, device: torch.device, dtype: torch.dtype, steps: int) -> float:
    """ResNet-20 training steps/s (forward, backward, SGD) on batches from ``loader``."""
    torch.manual_seed(0)
    model = resnetlab.create_model("resnet20", in_chans=1, num_classes=10)
    model = model.to(device, memory_format=torch.channels_last).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    batches = iter(loader.epoch(0))

    def step() -> None:
        x, y = next(batches)
        with autocast(device, dtype):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps / (time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.precision, device)
    print(f"device {device}, batch {args.batch_size}, training step under {dtype}, "
          f"{torch.get_num_threads()} CPU threads, best of {args.repeats} alternating rounds")
    augments = ("default", "crop:2,flip,erase:0.25", "none")
    loaders = {a: train_loader(args, device, a) for a in augments}
    steps, rates = 0.0, dict.fromkeys(augments, 0.0)
    for _ in range(args.repeats):  # alternate arms so load from other processes hits all alike
        steps = max(steps, step_rate(loaders["default"], device, dtype, args.steps))
        for augment, loader in loaders.items():
            rates[augment] = max(rates[augment], pipeline_rate(loader, args.seconds, device))
    print(f"ResNet-20 training step        {steps:10.1f} steps/s   (baseline)")
    for augment, rate in rates.items():
        verdict = "ok" if rate >= TARGET_RATIO * steps else "TOO SLOW"
        print(f"pipeline {augment:22s} {rate:10.1f} batches/s {rate / steps:6.1f}x step "
              f"(target >= {TARGET_RATIO:.0f}x: {verdict})")
    slow = per_sample_rate(loaders["default"], 10, device)
    print(f"per-sample Python-loop augment {slow:10.1f} batches/s {slow / steps:6.1f}x step; "
          f"batched is {rates['default'] / slow:.0f}x faster")


if __name__ == "__main__":
    main()
