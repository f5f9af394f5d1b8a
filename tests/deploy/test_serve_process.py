"""`resnetlab serve` as a real uvicorn process on a free 127.0.0.1 port: ready, predict, SIGTERM
with a request in flight (it is answered, the process exits 0); the web page in headless
Chromium; and every command of docs/guide/serve.md run as written, its output compared with
what the guide shows."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import time

import httpx
import pytest
from serve_helpers import env, guide_commands, serving, shell

from helpers import CHROMIUM, DRIVER, cli, needs_chromium

pytestmark = pytest.mark.slow


def _top1(capsys, run, files) -> list[str]:
    code, out, err = cli(capsys, "predict", run, *files, "--json", "--runtime", "torch")
    assert code == 0, err
    return [p["topk"][0]["class"] for p in json.loads(out)]


def _read_response(sock: socket.socket, timeout: float = 60.0) -> bytes:
    """Everything the server sends until it closes the connection (bounded in time)."""
    sock.settimeout(timeout)
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_sigterm_finishes_the_request_in_flight_and_exits_0(fmnist_run, test_images, tmp_path,
                                                            capsys):
    image = test_images[0][0]
    expected = _top1(capsys, fmnist_run, [image])[0]
    data = image.read_bytes()
    with serving([str(fmnist_run), "--backend", "torch"], tmp_path / "log") as (url, port, proc):
        first = httpx.post(f"{url}/v1/predict", files={"file": (image.name, data, "image/png")})
        assert first.status_code == 200 and first.json()["predictions"][0]["topk"][0]["class"] \
            == expected
        # a request whose headers and half its body have arrived: in flight when SIGTERM comes
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png"
                     b"\r\nContent-Length: %d\r\n\r\n" % len(data) + data[:100])
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        with pytest.raises(httpx.ConnectError):  # no new connections once it is stopping
            httpx.get(f"{url}/healthz", timeout=5)
        sock.sendall(data[100:])
        reply = _read_response(sock)
        sock.close()
        assert proc.wait(60) == 0, (tmp_path / "log").read_text()[-3000:]
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), reply[:500]
    assert json.loads(body)["predictions"][0]["topk"][0]["class"] == expected
    assert "Finished server process" in (tmp_path / "log").read_text()


@needs_chromium
def test_web_page_classifies_an_upload_in_headless_chromium(fmnist_run, test_images, tmp_path,
                                                            capsys):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    image = test_images[0][1]
    expected = _top1(capsys, fmnist_run, [image])[0]
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    with serving([str(fmnist_run), "--backend", "torch"], tmp_path / "log") as (url, _, _):
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
        try:
            driver.set_page_load_timeout(60)
            driver.get(f"{url}/")
            WebDriverWait(driver, 60).until(lambda d: "resnet20" in d.find_element(By.ID, "card").text)
            driver.execute_script("document.getElementById('file').hidden = false")
            driver.find_element(By.ID, "file").send_keys(str(image))
            WebDriverWait(driver, 120).until(
                lambda d: d.find_element(By.ID, "status").text in ("done", "")
                and d.find_element(By.ID, "top-class").text)
            top = driver.find_element(By.ID, "top-class").text
            bars = driver.find_elements(By.CSS_SELECTOR, "#topk li")
            overlay = driver.execute_script(
                "const i = document.getElementById('overlay'); return i.complete ? i.naturalWidth : -1")
            status = driver.find_element(By.ID, "status").text
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        finally:
            driver.quit()
    assert top == expected and len(bars) == 5 and status == "done"
    assert overlay >= 224 and errors == []


def _same_shape(shown, got) -> bool:
    """JSON structure equality: the keys the guide shows are there (more are allowed), with
    values of the same kind; numbers and strings may differ (they come from a shorter run)."""
    if isinstance(shown, dict):
        return isinstance(got, dict) and all(k in got and _same_shape(v, got[k])
                                             for k, v in shown.items())
    if isinstance(shown, list):
        return isinstance(got, list) and (not shown or not got or _same_shape(shown[0], got[0]))
    if isinstance(shown, (int, float)) and not isinstance(shown, bool):
        return isinstance(got, (int, float)) and not isinstance(got, bool)
    return type(shown) is type(got)


def _check_output(command: str, shown: str, got: str) -> None:
    try:
        shown_json = json.loads(shown)
    except ValueError:  # Prometheus lines: each series the guide shows is in the output
        series = {line.rsplit(" ", 1)[0] for line in got.splitlines()}
        missing = [s for s in shown.splitlines() if s.rsplit(" ", 1)[0] not in series]
        assert not missing, (command, missing, got)
        return
    assert _same_shape(shown_json, json.loads(got)), (command, shown, got)


def test_the_guide_commands_run_as_written(fmnist_run, workdir, tmp_path):
    commands = guide_commands()
    serve = next(cmd for cmd, _ in commands if cmd.startswith("resnetlab serve"))
    assert serve.split()[2] == str(fmnist_run.relative_to(workdir))  # runs/fmnist-resnet20
    with serving(serve.split()[2:], tmp_path / "log", cwd=workdir) as (url, port, _):
        ran = 0
        for command, shown in commands:
            if command.startswith(("resnetlab train", "resnetlab serve")):
                continue  # trained by the fmnist_run fixture, served above
            line = shell(command.replace("127.0.0.1:8000", f"127.0.0.1:{port}"))
            done = subprocess.run(line, shell=True, cwd=workdir, env=env(), capture_output=True,
                                  text=True, timeout=120)
            assert done.returncode == 0, (command, done.stderr)
            if shown is not None:
                _check_output(command, shown, done.stdout.strip())
            ran += 1
        assert ran >= 7
    assert (workdir / "overlay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = (tmp_path / "log").read_text()
    assert re.search(r"Uvicorn running on http://127\.0\.0\.1:\d+", log), log[-2000:]
