"""`resnetlab serve` under load: dynamic batching vs one forward pass per request, and a soak.

Throughput and p50/p99 latency of a ResNet-20 (Fashion-MNIST, 28x28 grey) at 1, 8, 32 and 128
concurrent clients, for two servers measured in the same run with the same backend:

* batched: ``resnetlab serve RUN --max-batch 32 --max-wait-ms 5`` (the defaults);
* naive (the baseline): ``--max-batch 1 --max-wait-ms 0``, one forward pass per request.

Both servers run side by side and each level is measured on one, then the other.

Each server is a real ``resnetlab serve`` process on a free 127.0.0.1 port; the clients are
asyncio httpx coroutines in this process (one connection each), posting raw PNG bytes of
held-in Fashion-MNIST test images.  Every level is bounded by ``--requests`` and ``--seconds``.
The client shares the CPU with the server, so both sides of a ratio pay the same tax.

``--soak N`` (e.g. 10000) then sends N requests to the batched server, 10% of them malformed
(non-image bytes, truncated PNGs, empty bodies, a wrong content type, JSON, ``k=0``): every good
answer must carry the class ``resnetlab predict`` gives for that image, every bad one a 4xx;
it prints the server's RSS at the start and the end and the error count (exit status 1 if
any).  Usage::

    python benchmarks/serve.py [--run runs/NAME] [--backend ort|torch] [--soak 10000]

Without ``--run`` a ResNet-20 with random weights and the Fashion-MNIST preprocessing is
written to a temporary run folder (speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="a trained Fashion-MNIST run directory")
    p.add_argument("--backend", default="ort", choices=["ort", "torch"])
    p.add_argument("--clients", default="1,8,32,128", help="concurrency levels")
    p.add_argument("--requests", type=int, default=2000, help="most requests per level")
    p.add_argument("--seconds", type=float, default=20.0, help="most seconds per level")
    p.add_argument("--soak", type=int, default=0, help="soak requests (0: no soak)")
    p.add_argument("--soak-clients", type=int, default=32)
    p.add_argument("--width-mult", type=float, default=1.0, help="of the random ResNet-20")
    p.add_argument("--images", type=int, default=256, help="distinct test images sent")
    return p.parse_args(argv)


def test_images(n: int) -> list[bytes]:
    """The first ``n`` Fashion-MNIST test images as PNG bytes."""
    import gzip
    import io

    from PIL import Image

    raw = gzip.open(FMNIST / "t10k-images-idx3-ubyte.gz").read()
    pixels = np.frombuffer(raw, np.uint8, n * 784, 16).reshape(n, 28, 28)
    out = []
    for img in pixels:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def random_run(folder: Path, width_mult: float) -> Path:
    """A run folder holding a random-weight ResNet-20 with the Fashion-MNIST preprocessing."""
    import torch

    import resnetlab
    from resnetlab.checkpoint import save_checkpoint
    from resnetlab.deploy.export import data_meta_for

    meta = data_meta_for("fashion-mnist")
    torch.manual_seed(0)
    model = resnetlab.create_model("resnet20", in_chans=1, num_classes=10,
                                   width_mult=width_mult).eval()
    run = folder / "resnet20-random"
    save_checkpoint(run / "checkpoints" / "best", model_state=model.state_dict(),
                    meta={"model": model.build_args, "data": meta, "classes": meta["classes"]})
    return run


def expected_classes(run: Path, backend: str, images: list[bytes]) -> list[str]:
    """What ``resnetlab predict`` says for each image (same backend, in this process)."""
    from resnetlab.deploy import load_predictor

    predictor = load_predictor(run, runtime="onnx" if backend == "ort" else "torch", int8=False)
    x = predictor.preprocess_images(images)
    return [p.classes[0] for p in predictor.topk(x, ["img"] * len(images), 1)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``resnetlab serve`` subprocess on a free 127.0.0.1 port (stopped with SIGTERM)."""

    def __init__(self, run: Path, backend: str, extra: list[str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        with open(log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "resnetlab", "serve", str(run), "--backend", backend,
                 "--port", str(self.port), "--log-level", "warning", *extra],
                env=env, stdout=out, stderr=subprocess.STDOUT)
        self.log = log

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit("server not ready in time")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


async def load(url: str, images: list[bytes], clients: int, requests: int, seconds: float
               ) -> dict:
    """``clients`` coroutines posting images until ``requests`` were sent or time is up."""
    latencies: list[float] = []
    failures, sent, errors = [0], [0], []
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        async def worker() -> None:
            while sent[0] < requests and time.perf_counter() < deadline:
                image = images[sent[0] % len(images)]
                sent[0] += 1
                t = time.perf_counter()
                try:
                    reply = await client.post("/v1/predict?k=1", content=image,
                                              headers={"content-type": "image/png"})
                except httpx.HTTPError as err:  # counted, and named in the report
                    failures[0] += 1
                    errors.append(f"{type(err).__name__}: {err}")
                    continue
                latencies.append(time.perf_counter() - t)
                failures[0] += reply.status_code != 200
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {"clients": clients, "requests": len(latencies), "rps": len(latencies) / wall,
            "p50_ms": 1000 * q[49], "p99_ms": 1000 * q[98], "failures": failures[0],
            "errors": errors[:3]}


def bad_request(i: int, good: bytes) -> dict:
    """One malformed request of six kinds, in turn."""
    kinds = [dict(content=b"this is not an image", headers={"content-type": "image/png"}),
             dict(content=good[: len(good) // 2], headers={"content-type": "image/png"}),
             dict(content=b"", headers={"content-type": "image/png"}),
             dict(content=good, headers={"content-type": "text/plain"}),
             dict(json=[[1.0, 2.0]]),
             dict(content=good, headers={"content-type": "image/png"}, params={"k": 0})]
    return kinds[i % len(kinds)]


async def soak(url: str, images: list[bytes], expected: list[str], total: int, clients: int
               ) -> dict:
    """``total`` requests, every tenth malformed; counts answers that are not what they must be."""
    errors: list[str] = []
    next_i = [0]
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        async def worker() -> None:
            while next_i[0] < total:
                i = next_i[0]
                next_i[0] += 1
                k = i % len(images)
                try:
                    if i % 10 == 9:
                        reply = await client.post("/v1/predict", **bad_request(i // 10, images[k]))
                        if not 400 <= reply.status_code < 500 or "error" not in reply.json():
                            errors.append(f"request {i} (malformed): {reply.status_code}")
                        continue
                    reply = await client.post("/v1/predict?k=1", content=images[k],
                                              headers={"content-type": "image/png"})
                    got = reply.json()["predictions"][0]["topk"][0]["class"] \
                        if reply.status_code == 200 else f"HTTP {reply.status_code}"
                    if got != expected[k]:
                        errors.append(f"request {i}: {got} != {expected[k]}")
                except (httpx.HTTPError, ValueError, KeyError) as err:
                    errors.append(f"request {i}: {type(err).__name__}: {err}")
        await asyncio.gather(*(worker() for _ in range(clients)))
    return {"requests": total, "malformed": total // 10, "errors": len(errors),
            "first_errors": errors[:5]}


def measure(run: Path, args: argparse.Namespace, images: list[bytes], tmp: Path) -> dict:
    """Both servers run side by side (an idle one costs no CPU); each concurrency level is
    measured on one, then the other, so a change in the machine's load between levels hits
    both arms alike.  The soak runs on the batched server at the end."""
    levels = [int(c) for c in args.clients.split(",")]
    arms = {"batched": ["--max-batch", "32", "--max-wait-ms", "5"],
            "naive": ["--max-batch", "1", "--max-wait-ms", "0"]}
    servers = {name: Server(run, args.backend, extra, tmp / f"{name}.log")
               for name, extra in arms.items()}
    out: dict = {name: [] for name in arms}
    try:
        for server in servers.values():
            server.wait_ready()
        for level in levels:
            for name, server in servers.items():
                out[name].append(asyncio.run(load(server.url, images, level, args.requests,
                                                  args.seconds)))
        if args.soak:
            batched = servers["batched"]
            expected = expected_classes(run, args.backend, images)
            rss_start = batched.rss_mb()
            out["soak"] = asyncio.run(soak(batched.url, images, expected, args.soak,
                                           args.soak_clients))
            out["soak"].update(rss_start_mb=rss_start, rss_end_mb=batched.rss_mb())
    finally:
        for name, server in servers.items():
            out[f"{name}_exit"] = server.stop()
    return out


def report(results: dict, args: argparse.Namespace) -> None:
    from resnetlab.utils.device import cpu_model

    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs); backend {args.backend}; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'clients':>7} | {'batched req/s':>13} {'p50 ms':>8} {'p99 ms':>8} | "
          f"{'naive req/s':>11} {'p50 ms':>8} {'p99 ms':>8} | {'ratio':>5}")
    for b, n in zip(results["batched"], results["naive"], strict=True):
        print(f"{b['clients']:>7} | {b['rps']:>13.1f} {b['p50_ms']:>8.1f} {b['p99_ms']:>8.1f} | "
              f"{n['rps']:>11.1f} {n['p50_ms']:>8.1f} {n['p99_ms']:>8.1f} | "
              f"{b['rps'] / max(n['rps'], 1e-9):>5.2f}x")
    failed = sum(r["failures"] for arm in ("batched", "naive") for r in results[arm])
    print(f"requests per level: at most {args.requests} or {args.seconds:g} s; failed "
          f"requests: {failed}; servers exited {results['batched_exit']} and "
          f"{results['naive_exit']} on SIGTERM")
    for arm in ("batched", "naive"):
        for r in results[arm]:
            for line in r["errors"]:
                print(f"  {arm} at {r['clients']} clients: {line}")
    if "soak" in results:
        s = results["soak"]
        print(f"soak: {s['requests']} requests ({s['malformed']} malformed), errors {s['errors']}; "
              f"server RSS {s['rss_start_mb']:.1f} MB at the start, {s['rss_end_mb']:.1f} MB at "
              f"the end")
        for line in s["first_errors"]:
            print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    images = test_images(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else random_run(Path(tmp), args.width_mult)
        results = measure(run, args, images, Path(tmp))
    report(results, args)
    bad = results.get("soak", {}).get("errors", 0) or results["batched_exit"] or results["naive_exit"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
