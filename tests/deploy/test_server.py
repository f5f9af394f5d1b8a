"""resnetlab serve's app (FastAPI TestClient): every endpoint, the same classes as `predict` on
held-in Fashion-MNIST test images, each bad-input case answered 4xx (never 500) while the
server keeps serving, table rows, readiness, and dynamic batching."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import io
import json
import threading
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from helpers import build, cli
from resnetlab.checkpoint import save_checkpoint
from resnetlab.deploy.batching import Batcher
from resnetlab.deploy.predictor import Predictor
from resnetlab.deploy.server import ServerOptions, Service, create_app
from resnetlab.models import create_model
from resnetlab.models.mlp import table_defaults
from resnetlab.run.serving import ServeConfig, build_app, parse_size
from resnetlab.utils.files import file_sha256


@contextlib.contextmanager
def client(app, ready: bool = True):
    """A TestClient with the app's lifespan running; waits (bounded) until /readyz is 200."""
    with TestClient(app) as c:
        deadline = time.monotonic() + 120
        while ready and c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, c.get("/readyz").json()
            time.sleep(0.05)
        yield c


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def torch_client(fmnist_run):
    with client(build_app(ServeConfig(str(fmnist_run), backend="torch"))) as c:
        yield c


def test_model_card_health_page_and_docs(torch_client, fmnist_run):
    c = torch_client
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/readyz").json() == {"status": "ready"}
    card = c.get("/v1/model").json()
    results = json.loads((fmnist_run / "results.json").read_text())
    assert card["architecture"] == "resnet20" and card["backend"] == "torch"
    assert card["classes"][9] == "Ankle boot" and len(card["classes"]) == 10
    assert card["input"] == {"kind": "image", "channels": 1, "size": [28, 28],
                             "mean": card["input"]["mean"], "std": card["input"]["std"]}
    assert card["test_accuracy"] == pytest.approx(results["top1"])
    weights = fmnist_run / "checkpoints" / "best" / "model.safetensors"
    assert card["sha256"] == file_sha256(weights) and card["file"] == "model.safetensors"
    page = c.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text
    assert "v1/predict" in page.text and "v1/explain" in page.text
    assert c.get("/docs").status_code == 200
    assert {"/v1/predict", "/v1/explain", "/v1/model"} <= set(c.get("/openapi.json").json()["paths"])


def _server_top1(c, files: list, **kwargs) -> list[str]:
    uploads = [("file", (f.name, f.read_bytes(), "image/png")) for f in files]
    reply = c.post("/v1/predict", files=uploads, **kwargs)
    assert reply.status_code == 200, reply.text
    preds = reply.json()["predictions"]
    assert [p["input"] for p in preds] == [f.name for f in files]
    return [p["topk"][0]["class"] for p in preds]


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_server_and_predict_give_the_same_classes(backend, fmnist_run, test_images, capsys):
    files, _ = test_images
    runtime = {"torch": "torch", "ort": "onnx"}[backend]
    code, out, err = cli(capsys, "predict", fmnist_run, *files, "--json", "--runtime", runtime)
    assert code == 0, err
    expected = [p["topk"][0]["class"] for p in json.loads(out)]
    with client(build_app(ServeConfig(str(fmnist_run), backend=backend))) as c:
        assert c.get("/v1/model").json()["backend"] == backend
        got = _server_top1(c, files[:16]) + _server_top1(c, files[16:])
        raw = [c.post("/v1/predict", content=f.read_bytes(), headers={
            "content-type": "image/png"}).json()["predictions"][0] for f in files[:4]]
    assert got == expected
    assert [r["topk"][0]["class"] for r in raw] == expected[:4]


def test_explain_gives_the_top_class_and_a_png_overlay(torch_client, test_images):
    image = test_images[0][0].read_bytes()
    top = torch_client.post("/v1/predict", files={"file": ("a.png", image, "image/png")}).json()
    reply = torch_client.post("/v1/explain", files={"file": ("a.png", image, "image/png")})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["class"] == top["predictions"][0]["topk"][0]["class"]
    assert body["layer"] == "layer3" and 0 < body["prob"] <= 1
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png"])))
    assert overlay.format == "PNG" and overlay.mode == "RGB" and overlay.size[0] >= 224
    two = [("file", ("a.png", image, "image/png"))] * 2
    assert torch_client.post("/v1/explain", files=two).json()["error"] == "one_image"


def _bomb() -> bytes:
    """A 64-megapixel black PNG: 63 KB on the wire, 64 MB once decoded."""
    return png(np.zeros((8000, 8000), np.uint8))


BAD = {  # name: (request keyword arguments, status, error)
    "non-image bytes": (dict(content=b"hello, world", headers={"content-type": "image/png"}),
                        422, "bad_image"),
    "truncated file": ("truncated", 422, "bad_image"),
    "empty body": (dict(content=b"", headers={"content-type": "image/png"}), 400, "empty_body"),
    "empty upload": (dict(files={"file": ("e.png", b"", "image/png")}), 400, "empty_body"),
    "wrong content type": (dict(content=b"x", headers={"content-type": "text/plain"}), 415,
                           "unsupported_media_type"),
    "no content type": (dict(content=b"x"), 415, "unsupported_media_type"),
    "json to an image model": (dict(json=[[1, 2]]), 415, "unsupported_media_type"),
    "form without files": (dict(files={"a": (None, b"b")}), 422, "no_images"),
    "too many images": ("many", 413, "too_many_images"),
    "decompression bomb": ("bomb", 413, "image_too_large"),
    "bad top-k": (dict(params={"k": 0}, content=b"x", headers={"content-type": "image/png"}),
                  422, "invalid_request"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_4xx_json_error_and_the_server_keeps_serving(case, torch_client,
                                                                    test_images):
    kwargs, status, error = BAD[case]
    good = test_images[0][0].read_bytes()
    if kwargs == "truncated":
        kwargs = dict(content=good[: len(good) // 2], headers={"content-type": "image/png"})
    elif kwargs == "many":
        kwargs = dict(files=[("file", (f"{i}.png", good, "image/png")) for i in range(65)])
    elif kwargs == "bomb":
        kwargs = dict(content=_bomb(), headers={"content-type": "image/png"})
    reply = torch_client.post("/v1/predict", **kwargs)
    assert reply.status_code == status, reply.text
    assert set(reply.json()) == {"error", "detail"} and reply.json()["error"] == error
    again = torch_client.post("/v1/predict", content=good, headers={"content-type": "image/png"})
    assert again.status_code == 200


def test_body_cap_is_413_before_parsing_and_metrics_count_it(fmnist_run, test_images):
    cfg = ServeConfig(str(fmnist_run), backend="torch", max_body=parse_size("20KB"))
    with client(build_app(cfg)) as c:
        big = c.post("/v1/predict", content=b"\0" * 30_000, headers={"content-type": "image/png"})
        assert big.status_code == 413 and big.json()["error"] == "body_too_large"
        ok = c.post("/v1/predict", files={"file": ("a.png", test_images[0][0].read_bytes())})
        assert ok.status_code == 200
        text = c.get("/metrics").text
    assert 'resnetlab_errors_total{code="413",path="/v1/predict"} 1.0' in text
    assert 'resnetlab_requests_total{code="200",method="POST",path="/v1/predict"} 1.0' in text
    assert "resnetlab_batch_size_bucket" in text and "resnetlab_request_latency_seconds_bucket" in text
    assert 'code="500"' not in text


def test_max_body_sizes_parse():
    assert parse_size("10MB") == 10_000_000 and parse_size("512KiB") == 524_288
    assert parse_size("2000") == 2000
    with pytest.raises(ValueError, match="--max-body 1XB"):
        parse_size("1XB")


# --- table models: JSON rows ----------------------------------------------------------------
@pytest.fixture(scope="module")
def table_checkpoint(tmp_path_factory):
    """A table model checkpoint as a CSV run stores it (x1, x2 numeric, colour categorical)."""
    root = tmp_path_factory.mktemp("table")
    rng = np.random.default_rng(0)
    with open(root / "t.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["x1", "x2", "colour", "label"])
        for _ in range(40):
            a, b = rng.normal(size=2)
            writer.writerow([f"{a:.3f}", f"{b:.3f}", rng.choice(["red", "blue"]),
                             "yes" if a + b > 0 else "no"])
    bundle = build(f"csv:{root / 't.csv'}", target="label", val_size=0)
    torch.manual_seed(0)
    model = create_model("mlp_resnet", in_features=len(bundle.meta["table"]["feature_names"]),
                         num_classes=2, **table_defaults(40)).eval()
    meta = {"model": model.build_args, "data": bundle.meta, "classes": bundle.classes}
    save_checkpoint(root / "best", model_state=model.state_dict(), meta=meta)
    return root / "best"


def test_table_rows_predict_like_predict_and_bad_rows_are_422(table_checkpoint, tmp_path, capsys):
    rows = [{"x1": 0.5, "x2": 1.0, "colour": "red"}, [-1.0, -0.5, "blue"],
            {"x1": None, "x2": 0.1, "colour": "green", "label": "yes"}]
    (tmp_path / "rows.csv").write_text("x1,x2,colour\n0.5,1.0,red\n-1.0,-0.5,blue\n,0.1,green\n")
    code, out, err = cli(capsys, "predict", table_checkpoint, tmp_path / "rows.csv", "--json",
                         "--runtime", "torch")
    assert code == 0, err
    expected = [p["topk"] for p in json.loads(out)]
    with client(build_app(ServeConfig(str(table_checkpoint), backend="torch"))) as c:
        card = c.get("/v1/model").json()
        assert card["input"] == {"kind": "table", "columns": ["x1", "x2", "colour"],
                                 "task": "classification"}
        reply = c.post("/v1/predict", json={"rows": rows}, params={"k": 2})
        assert reply.status_code == 200, reply.text
        got = [p["topk"] for p in reply.json()["predictions"]]
        for g, e in zip(got, expected, strict=True):
            assert [x["class"] for x in g] == [x["class"] for x in e]
            assert g[0]["prob"] == pytest.approx(e[0]["prob"], abs=1e-5)
        bad = {"wrong number of columns": [[1.0, 2.0]], "NaN value": '[[NaN, 1.0, "red"]]',
               "unknown column": [{"x1": 1, "x2": 2, "colour": "red", "x9": 1}],
               "missing column": [{"x1": 1, "colour": "red"}], "text in a number": [["a", 1, "red"]],
               "not rows": {"rows": 3}, "no rows": []}
        for name, body in bad.items():
            content = body if isinstance(body, str) else json.dumps(body)
            r = c.post("/v1/predict", content=content, headers={"content-type": "application/json"})
            assert r.status_code == 422 and r.json()["error"] in ("bad_rows",), (name, r.text)
        assert c.post("/v1/predict", content=b"{", headers={
            "content-type": "application/json"}).json()["error"] == "invalid_json"
        assert c.post("/v1/predict", content=b"", headers={
            "content-type": "application/json"}).status_code == 400
        assert c.post("/v1/predict", content=png(np.zeros((8, 8), np.uint8)), headers={
            "content-type": "image/png"}).status_code == 415
        assert c.post("/v1/explain", json=rows).status_code == 422
        assert c.post("/v1/predict", json=rows).status_code == 200  # still serving


# --- readiness and batching on a stand-in network (no training needed) -----------------------
META = {"kind": "image", "name": "test", "in_chans": 1, "image_size": [8, 8], "mean": [0.5],
        "std": [0.5], "classes": ["a", "b", "c"]}


def _service(calls: list[int] | None = None) -> Service:
    def backend(x: torch.Tensor) -> torch.Tensor:
        if calls is not None:
            calls.append(len(x))
        return x.flatten(1)[:, :3] * 10
    return Service(Predictor(backend, META["classes"], META), {"architecture": "stand-in"})


def test_readyz_is_503_until_loaded_and_warmed_up():
    release = threading.Event()

    def slow_load() -> Service:
        release.wait(30)
        return _service()
    with client(create_app(slow_load), ready=False) as c:
        assert c.get("/healthz").status_code == 200
        r = c.get("/readyz")
        assert r.status_code == 503 and r.json()["error"] == "not_ready"
        assert c.post("/v1/predict", content=b"x", headers={
            "content-type": "image/png"}).status_code == 503
        release.set()
        deadline = time.monotonic() + 30
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert c.get("/v1/model").json() == {"architecture": "stand-in"}


def test_a_failed_load_is_reported_by_readyz():
    def broken() -> Service:
        raise ValueError("no such model")
    with client(create_app(broken), ready=False) as c:
        deadline = time.monotonic() + 30
        while "no such model" not in c.get("/readyz").text:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert c.get("/readyz").status_code == 503 and c.get("/healthz").status_code == 200


def test_concurrent_requests_share_forward_passes():
    calls: list[int] = []
    opts = ServerOptions(max_batch=8, max_wait_ms=200)
    with client(create_app(lambda: _service(calls), opts)) as c:
        calls.clear()
        rng = np.random.default_rng(0)
        images = [png(rng.integers(0, 255, (8, 8), dtype=np.uint8)) for i in range(12)]
        results: dict[int, dict] = {}

        def post(i: int) -> None:
            results[i] = c.post("/v1/predict", content=images[i],
                                headers={"content-type": "image/png"}).json()
        threads = [threading.Thread(target=post, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        metrics = c.get("/metrics").text
    assert sum(calls) == 12 and max(calls) <= 8 and len(calls) < 12, calls
    for i in range(12):  # each request gets its own rows back: the stand-in's logits
        expected = Predictor(_service().predictor.backend, META["classes"], META)
        x = expected.preprocess_images([images[i]])
        want = expected.topk(x, ["body"], 5)[0]
        got = results[i]["predictions"][0]["topk"]
        assert [g["class"] for g in got] == want.classes
        assert [g["prob"] for g in got] == pytest.approx(want.probs, abs=1e-6)
    assert "resnetlab_batch_size_count" in metrics


def test_batcher_splits_results_back_and_finishes_queued_jobs_on_close():
    sizes: list[int] = []
    batcher = Batcher(lambda x: x * 2, max_batch=4, max_wait_ms=50, on_batch=sizes.append)

    async def main() -> list[torch.Tensor]:
        jobs = [batcher.submit(torch.full((n, 2), float(i))) for i, n in enumerate([1, 3, 2, 5])]
        return await asyncio.gather(*jobs)
    outs = asyncio.run(main())
    batcher.close()
    for i, (out, n) in enumerate(zip(outs, [1, 3, 2, 5], strict=True)):
        assert out.shape == (n, 2) and torch.all(out == 2 * i)
    assert sum(sizes) == 11 and max(sizes) <= 4


def test_batcher_waits_only_while_requests_are_on_their_way():
    alone = Batcher(lambda x: x, max_batch=8, max_wait_ms=3000, pending=lambda: 0)
    crowd = Batcher(lambda x: x, max_batch=8, max_wait_ms=300, pending=lambda: 1)

    async def timed(batcher: Batcher) -> float:
        start = time.perf_counter()
        await batcher.submit(torch.zeros(1, 2))
        return time.perf_counter() - start
    try:
        assert asyncio.run(timed(alone)) < 1.0  # nobody else coming: no 3 s wait
        assert asyncio.run(timed(crowd)) >= 0.29  # someone decoding: waits for company
    finally:
        alone.close()
        crowd.close()


def test_a_chunked_body_over_the_cap_is_413_too():
    """No Content-Length to trust: the cap is counted while the body arrives."""
    with client(create_app(lambda: _service(), ServerOptions(max_body=1000))) as c:
        chunks = (b"\0" * 400 for _ in range(4))  # a generator: sent chunked
        reply = c.post("/v1/predict", content=chunks, headers={"content-type": "image/png"})
        assert reply.status_code == 413 and reply.json()["error"] == "body_too_large"
        small = png(np.zeros((8, 8), np.uint8))
        assert len(small) < 1000
        assert c.post("/v1/predict", content=small,
                      headers={"content-type": "image/png"}).status_code == 200
