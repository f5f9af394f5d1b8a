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

    python benchmarks/data_pipeline.py [--device auto] [--precision bf16] [--seconds 1] [--repeats 3] [--threads N]
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
from resnetlab.engine.config import DataConfig
from resnetlab.utils import autocast, resolve_device, resolve_dtype
from resnetlab.utils.errors import DataError
from resnetlab.utils.timer import synchronize

TARGET_RATIO = 20.0


class Clock:
    """Wall time and this process's CPU time since ``start()``.  On a shared machine the CPU
    time is the steadier measure: it does not count time the process waited for a core."""

    def start(self, device: torch.device) -> Clock:
        synchronize(device)
        self.device, self.wall, self.cpu = device, time.perf_counter(), time.process_time()
        return self

    def elapsed(self) -> float:
        return time.perf_counter() - self.wall

    def rates(self, count: int) -> tuple[float, float]:
        """``count`` per wall second and per CPU second."""
        synchronize(self.device)
        return count / self.elapsed(), count / max(time.process_time() - self.cpu, 1e-9)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="bf16", help="training-step autocast: fp32, bf16, auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seconds", type=float, default=1.0, help="time per pipeline arm and round")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds; best is kept")
    p.add_argument("--steps", type=int, default=20, help="timed ResNet-20 steps (at most)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 gives steady CPU-second figures on a busy machine)")
    return p.parse_args()


def train_loader(args: argparse.Namespace, device: torch.device, augment: str) -> BatchLoader:
    """The Fashion-MNIST training loader, or one over random data of the same shape."""
    try:
        cfg = DataConfig(name="fashion-mnist", data_dir=args.data_dir,
                         batch_size=args.batch_size, augment=augment, download=False)
        return build_data(cfg, device=device).train
    except DataError as err:
        print(f"(real data not found, using random 55000x1x28x28 uint8: {err})")
        x = torch.randint(0, 256, (55000, 1, 28, 28), dtype=torch.uint8, device=device)
        y = torch.randint(0, 10, (55000,), device=device)
        spec = parse_augment(augment, "crop:2,flip")
        return BatchLoader(TensorSource(x, y), batch_size=args.batch_size, train=True,
                           transform=ImageTransform(spec, [0.286], [0.353], device=device))


def pipeline_rate(loader: BatchLoader, seconds: float, device: torch.device
                  ) -> tuple[float, float]:
    """Batches per wall and per CPU second from ``loader`` (epochs chained for ``seconds``)."""
    for _ in loader.epoch(0, start=len(loader) - 3):
        pass  # warm-up
    count, epoch, clock = 0, 1, Clock().start(device)
    while clock.elapsed() < seconds:
        for _ in loader.epoch(epoch):
            count += 1
            if count % 50 == 0 and clock.elapsed() >= seconds:
                break
        epoch += 1
    return clock.rates(count)


def per_sample_rate(loader: BatchLoader, batches: int, device: torch.device
                    ) -> tuple[float, float]:
    """The same crop + flip + normalise, one sample at a time (the textbook way)."""
    images = loader.source.x
    gen = torch.Generator().manual_seed(0)
    clock = Clock().start(device)
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
    return clock.rates(batches)


def step_rate(loader: BatchLoader, device: torch.device, dtype: torch.dtype, steps: int,
              budget: float) -> tuple[float, float]:
    """ResNet-20 training steps/s (forward, backward, SGD) on batches from ``loader``: up to
    ``steps`` timed steps, fewer once ``budget`` seconds have passed (at least 3)."""
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

    for _ in range(2):
        step()
    done, clock = 0, Clock().start(device)
    # stop early on a slow or busy machine: the rate is what we want, not a fixed step count
    while done < steps and (done < 3 or clock.elapsed() < budget):
        step()
        done += 1
    return clock.rates(done)


def report(name: str, rate: tuple[float, float], steps: tuple[float, float]) -> None:
    ratio = [r / s for r, s in zip(rate, steps, strict=True)]
    verdict = "ok" if ratio[0] >= TARGET_RATIO else "TOO SLOW"
    print(f"{name:31s} {rate[0]:9.1f} batches/s {ratio[0]:7.1f}x step "
          f"(target >= {TARGET_RATIO:.0f}x: {verdict}); per CPU-second {ratio[1]:7.1f}x")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.precision, device)
    print(f"device {device}, batch {args.batch_size}, training step under {dtype}, "
          f"{torch.get_num_threads()} CPU threads, best of {args.repeats} alternating rounds")
    augments = ("default", "crop:2,flip,erase:0.25", "none")
    loaders = {a: train_loader(args, device, a) for a in augments}
    steps, rates = (0.0, 0.0), dict.fromkeys(augments, (0.0, 0.0))
    best = lambda a, b: (max(a[0], b[0]), max(a[1], b[1]))  # noqa: E731
    for _ in range(args.repeats):  # alternate arms so load from other processes hits all alike
        steps = best(steps, step_rate(loaders["default"], device, dtype, args.steps,
                                      3 * args.seconds))
        for augment, loader in loaders.items():
            rates[augment] = best(rates[augment], pipeline_rate(loader, args.seconds, device))
    print(f"{'ResNet-20 training step':31s} {steps[0]:9.1f} steps/s   (baseline; "
          f"{steps[1]:.1f} per CPU-second)")
    for augment, rate in rates.items():
        report(f"pipeline {augment}", rate, steps)
    slow = per_sample_rate(loaders["default"], 10, device)
    report("per-sample Python-loop augment", slow, steps)
    print(f"batched default pipeline vs per-sample loop: {rates['default'][0] / slow[0]:.0f}x")


if __name__ == "__main__":
    main()
