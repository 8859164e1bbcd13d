"""``attnkit serve``: responses equal :meth:`Translator.translate`, dynamic batching under a
bounded load (32 clients x 20 requests), limits and API key codes, SIGTERM under load loses no
accepted request, and the page translates in headless Chromium with no console errors.

Everything runs on 127.0.0.1 on a free port; every request loop is bounded in count and time.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="fastapi is not installed (pip install 'attnkit[serve]')")
pytest.importorskip("uvicorn", reason="uvicorn is not installed (pip install 'attnkit[serve]')")
httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install 'attnkit[serve]')")

import uvicorn  # noqa: E402
from PIL import Image  # noqa: E402

from attnkit.config import DecodeConfig  # noqa: E402
from attnkit.serve.app import Limits, create_app  # noqa: E402
from attnkit.serve.backends import TranslateBackend  # noqa: E402
from attnkit.serve.server import check_address, free_port, is_loopback  # noqa: E402
from attnkit.translation.translator import Translation, Translator  # noqa: E402
from tests.browser import chromium_page  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class Served:
    """A uvicorn server in a thread on 127.0.0.1 (stopped by :meth:`stop`)."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def translator(dates_run) -> Translator:
    return Translator.load(dates_run[0], device="cpu")


@pytest.fixture(scope="module")
def served(translator) -> Iterator[Served]:
    limits = Limits(max_chars=200, max_items=8, max_queue=512, max_wait_ms=5)
    app = create_app(TranslateBackend(translator, name="dates"), limits=limits)
    server = Served(app)
    yield server
    server.stop()


def test_loopback_helpers() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")


def test_a_busy_port_or_an_unknown_host_fails_before_loading_with_one_line(
    dates_run, capsys
) -> None:
    import socket

    from attnkit.cli import main

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(ValueError, match=f"--port {port}: cannot listen on 127.0.0.1:{port}"):
            check_address("127.0.0.1", port)
        assert main(["serve", "--run", str(dates_run[0]), "--port", str(port)]) == 2
        err = capsys.readouterr()
        assert err.out == ""  # nothing claims to be serving
        assert err.err.count("\n") == 1 and "choose another --port" in err.err
    with pytest.raises(ValueError, match="--host no-such-host.invalid: "):
        check_address("no-such-host.invalid", 8000)
    check_address("127.0.0.1", free_port())  # a free port passes


def test_responses_equal_translator(served: Served, translator: Translator, dates_run) -> None:
    sources = dates_run[1][:6]
    with httpx.Client(base_url=served.url, timeout=60) as client:
        r = client.post("/v1/translate", json={"text": sources[0]})
        assert r.status_code == 200
        want = translator.translate([sources[0]])[0]
        assert r.json()["translations"] == [
            {"source": want.source, "text": want.text, "score": pytest.approx(want.score)}
        ]
        for beam in (1, 4):
            r = client.post("/v1/translate", json={"text": sources, "beam": beam, "n_best": 2})
            got = r.json()["translations"]
            want_all = translator.translate(sources, beam_size=max(beam, 2), n_best=2)
            assert [g["text"] for g in got] == [w.text for w in want_all]
            assert [[a["text"] for a in g["alternatives"]] for g in got] == [
                [a for a, _ in (w.alternatives or [])][:2] for w in want_all
            ]
        r = client.post("/v1/translate", json={"text": sources[0], "attention": True})
        sample = r.json()["translations"][0]["attention"][0]
        assert set(sample["weights"]) == {"encoder", "self", "cross"}
        assert len(sample["tgt_tokens"]) == len(sample["weights"]["cross"][0][0])
        models = client.get("/v1/models").json()["models"]
        assert models == [
            {"id": "dates", "kind": "translation", "engine": "attnkit", "quantize": None}
        ]
        assert client.get("/health").json()["status"] == "ok"
        for blank in ([""], "", ["", " "]):  # nothing to translate: empty translations
            r = client.post("/v1/translate", json={"text": blank})
            assert r.status_code == 200, r.text
            texts = [t["text"] for t in r.json()["translations"]]
            assert texts == [""] * (len(blank) if isinstance(blank, list) else 1)
        schema = client.get("/openapi.json").json()
        assert {"/v1/translate", "/v1/embed", "/v1/classify", "/v1/models", "/health"} <= set(
            schema["paths"]
        )
        assert "TranslateRequest" in schema["components"]["schemas"]


def test_bounded_load_is_batched_and_every_response_matches(
    served: Served, translator: Translator, dates_run
) -> None:
    sources = dates_run[1]
    expected = {t.source: t.text for t in translator.translate(sources, beam_size=1)}
    clients, per_client = 32, 20
    results: list[tuple[str, int, Any]] = []
    errors: list[str] = []
    lock = threading.Lock()
    before = httpx.get(f"{served.url}/health").json()

    def client_loop(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=served.url, timeout=120) as client:
            for _ in range(per_client):
                text = rng.choice(sources)
                try:
                    r = client.post("/v1/translate", json={"text": text, "beam": 1})
                    body = r.json()
                except Exception as err:  # noqa: BLE001 - recorded and asserted below
                    with lock:
                        errors.append(repr(err))
                    continue
                with lock:
                    results.append((text, r.status_code, body))

    start = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    seconds = time.perf_counter() - start
    after = httpx.get(f"{served.url}/health").json()
    assert errors == []
    assert len(results) == clients * per_client
    assert all(status == 200 for _, status, _ in results)
    for text, _, body in results:  # each caller got its own translation
        (item,) = body["translations"]
        assert item["source"] == text and item["text"] == expected[text]
    batches = after["batches"] - before["batches"]
    assert after["answered"] - before["answered"] == clients * per_client
    assert batches < clients * per_client  # requests were decoded together
    print(
        f"\nload: {clients} clients x {per_client} requests in {seconds:.1f} s, "
        f"{batches} batches (mean {clients * per_client / batches:.1f} requests)"
    )


class _SlowTranslator:
    """Stands in for a Translator: answers after a delay (to fill the queue)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.config = type("C", (), {"decode": DecodeConfig()})()

    def translate(self, texts: list[str], **_: Any) -> list[Translation]:
        time.sleep(self.delay)
        return [Translation(t, t.upper(), [], 0.0) for t in texts]


def test_limits_auth_and_errors_are_json_one_liners(served: Served) -> None:
    with httpx.Client(base_url=served.url, timeout=60) as client:
        cases = [
            ({"text": "x" * 201}, 413, "text 1 has 201 characters, more than the limit of 200"),
            ({"text": ["a", "x" * 201]}, 413, "text 2 has 201 characters"),
            ({"text": ["a"] * 9}, 413, "9 texts in one request, more than the limit of 8"),
            ({"text": []}, 422, "'text' is empty"),
            ({"txt": "a"}, 422, "text: Field required"),
            ({"text": "a", "beam": 0}, 422, "beam: Input should be greater than or equal to 1"),
        ]
        for body, status, message in cases:
            r = client.post("/v1/translate", json=body)
            assert (r.status_code, r.json()["error"]) == (status, r.json()["error"])
            assert r.status_code == status and message in r.json()["error"], r.text
            assert "\n" not in r.json()["error"]
        r = client.post(
            "/v1/translate", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert r.status_code == 422
        assert r.json()["error"].startswith("the body is not valid JSON: ")
        assert "(character 2)" in r.json()["error"]  # counted from 1: "n" of "{not json"
        r = client.post("/v1/embed", json={"text": "a"})
        assert r.status_code == 404 and "translation model" in r.json()["error"]
        assert client.get("/nowhere").status_code == 404
    # API key: 401 without or with a wrong key; /health stays open.
    keyed = Served(create_app(TranslateBackend(_SlowTranslator(0), name="k"), api_key="s3cret"))
    try:
        with httpx.Client(base_url=keyed.url, timeout=30) as client:
            assert client.get("/health").status_code == 200
            for headers in ({}, {"Authorization": "Bearer nope"}, {"X-API-Key": "nope"}):
                r = client.post("/v1/translate", json={"text": "a"}, headers=headers)
                assert r.status_code == 401 and "API key" in r.json()["error"]
            for headers in ({"Authorization": "Bearer s3cret"}, {"X-API-Key": "s3cret"}):
                r = client.post("/v1/translate", json={"text": "a"}, headers=headers)
                assert r.status_code == 200 and r.json()["translations"][0]["text"] == "A"
    finally:
        keyed.stop()
    # A full queue: 429 with a reason and Retry-After; the accepted requests are answered.
    slow = Served(
        create_app(
            TranslateBackend(_SlowTranslator(0.5), name="slow"),
            limits=Limits(max_queue=2, max_wait_ms=0, max_batch_tokens=1),
        )
    )
    try:
        codes: list[int] = []

        def one(i: int) -> None:
            r = httpx.post(f"{slow.url}/v1/translate", json={"text": f"t{i}"}, timeout=60)
            codes.append(r.status_code)
            if r.status_code == 429:
                assert "retry later" in r.json()["error"] and r.headers["retry-after"] == "1"

        threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert codes.count(429) >= 1 and codes.count(200) >= 3
        assert set(codes) == {200, 429}
    finally:
        slow.stop()


def _serve_process(run: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    args = ["--run", str(run), "--port", str(port), "--threads", "1"]
    return subprocess.Popen(
        [sys.executable, "-m", "attnkit.cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def _wait_healthy(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "server exited"
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("the server did not become healthy")


def test_malformed_bodies_are_refused_before_work_with_one_line(served: Served) -> None:
    """Types as JSON gives them, no unknown fields, JSON only, a body-size limit checked before
    parsing, lone surrogates refused up front (were translated, then a 500 on the reply)."""
    with httpx.Client(base_url=served.url, timeout=60) as client:
        cases = [
            ({"text": "a", "beam": "4"}, "beam: Input should be a valid integer"),
            ({"text": "a", "beam": True}, "beam: Input should be a valid integer"),
            ({"text": "a", "nbest": 2}, "nbest: not a field of this request"),
            ({"text": [1, 2]}, "text item 1: Input should be a valid string"),
            ({"text": "a", "beam": 4.5}, "beam: Input should be a valid integer"),
            ({"text": "a", "attention": "yes"}, "attention: Input should be a valid boolean"),
        ]
        for body, message in cases:
            r = client.post("/v1/translate", json=body)
            assert r.status_code == 422 and r.json()["error"].startswith(message), (body, r.text)
        for raw in (b"[1, 2]", b'"text"'):
            r = client.post("/v1/translate", content=raw)  # no content type: read as JSON
            assert r.status_code == 422 and "must be a JSON object" in r.json()["error"]
        r = client.post("/v1/translate", content=b'{"text": "3 may \\ud800 1999"}')
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "text 1 has a lone surrogate ('\\ud800') at character 7; " \
            "send valid Unicode"  # fmt: skip
        r = client.post("/v1/translate", data={"text": "a"})  # curl -d: a form, not JSON
        assert r.status_code == 415 and "content-type: application/json" in r.json()["error"]
        limit = Limits(max_chars=200, max_items=8).body_limit("translation")
        huge = json.dumps({"text": "x" * limit}).encode()
        r = client.post("/v1/translate", content=huge)
        assert r.status_code == 413 and f"limit of {limit:,}" in r.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
            yield b'{"text": "'
            for _ in range(limit // 65536 + 2):
                yield b"x" * 65536
            yield b'"}'

        r = client.post("/v1/translate", content=chunks())
        assert r.status_code == 413 and "has at least " in r.json()["error"]
        assert client.post("/v1/translate", json={"text": "3 may 1999"}).status_code == 200
        r = client.post("/v1/translate", json={"text": "3 may 1999", "beam": 4.0, "n_best": 2.0})
        assert r.status_code == 200, r.text  # a whole-number float is a JSON integer
        r = client.post("/v1/translate", content=b"")
        assert r.status_code == 422 and r.json()["error"].startswith("the body is empty")


def test_the_default_body_limit_admits_every_request_the_other_limits_do() -> None:
    """Worst cases written by ordinary JSON encoders: every character beyond the BMP as two
    escapes (json.dumps' default), base64 with "/" escaped as "\\/" (as PHP writes it)."""
    limits = Limits()
    texts = {"text": ["\U0001f600" * limits.max_chars] * limits.max_items, "n_best": 16}
    assert len(json.dumps(texts).encode()) <= limits.body_limit("translation")
    image = base64.b64encode(random.Random(0).randbytes(limits.max_image_bytes)).decode()
    body = json.dumps({"image": [image] * 4}).replace("/", "\\/").encode()
    per_image = (len(body) - 64) / 4
    assert per_image * limits.max_items + 64 <= limits.body_limit("classification")


def test_the_key_is_checked_before_the_body_and_empty_key_turns_it_off(monkeypatch) -> None:
    from fastapi import FastAPI

    from attnkit.serve.server import api_key_setting, url

    keyed = Served(create_app(TranslateBackend(_SlowTranslator(0), name="k"), api_key="s3cret"))
    try:
        r = httpx.post(f"{keyed.url}/v1/translate", content=b"garbage", timeout=30)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = httpx.get(f"{keyed.url}/v1/models", timeout=30)
        assert r.status_code == 401
    finally:
        keyed.stop()
    # mounted under a prefix (as behind a proxy): the key is still asked for
    outer = FastAPI()
    outer.mount("/api", create_app(TranslateBackend(_SlowTranslator(0), name="m"), api_key="k"))
    mounted = Served(outer)
    try:
        assert httpx.get(f"{mounted.url}/api/v1/models", timeout=30).status_code == 401
        r = httpx.post(f"{mounted.url}/api/v1/translate", json={"text": "a"}, timeout=30)
        assert r.status_code == 401
        r = httpx.get(f"{mounted.url}/api/v1/models", headers={"X-API-Key": "k"}, timeout=30)
        assert r.status_code == 200
    finally:
        mounted.stop()
    monkeypatch.setenv("ATTNKIT_API_KEY", "from-env")
    assert api_key_setting(None) == "from-env" and api_key_setting("flag") == "flag"
    assert api_key_setting("") is None  # --api-key "" turns the environment's key off
    monkeypatch.delenv("ATTNKIT_API_KEY")
    assert api_key_setting(None) is None
    assert url("::1", 8000) == "http://[::1]:8000/" and url("0.0.0.0", 80) == "http://0.0.0.0:80/"


def test_sigterm_under_load_answers_every_accepted_request(dates_run) -> None:
    run, sources, _ = dates_run
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _serve_process(run, port)
    try:
        _wait_healthy(url, proc)
        ok: list[str] = []
        failures: list[str] = []
        refused: list[int] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + 30  # a bounded loop whatever happens

        def client_loop(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(200):
                if time.monotonic() > stop_at:
                    return
                try:  # a fresh connection per request: no keep-alive race at shutdown
                    r = httpx.post(
                        f"{url}/v1/translate",
                        json={"text": rng.choice(sources)},
                        headers={"Connection": "close"},
                        timeout=60,
                    )
                except httpx.ConnectError:
                    with lock:
                        refused.append(seed)
                    return  # the server no longer accepts connections
                except httpx.TransportError as err:
                    with lock:
                        failures.append(repr(err))
                    return
                with lock:
                    (ok if r.status_code == 200 else failures).append(r.text[:80])

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        assert len(ok) > 0, "no request was answered before SIGTERM"
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        code = proc.wait(60)
        err = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    stats = json.loads(next(line for line in err.splitlines() if "attnkit_serve" in line))
    assert code == 0, err
    assert stats["accepted"] == stats["answered"] == len(ok), (stats, len(ok), failures)
    # A connection reset after accept but before the handler is the only other outcome; it is
    # not an accepted request (the server never counted it), and it must be rare.
    assert all("Error" in f for f in failures) and len(failures) <= 16
    print(f"\nSIGTERM under load: {len(ok)} answered, {len(refused)} clients refused after, "
          f"{len(failures)} connections cut before acceptance; exit {code}")  # fmt: skip


def test_page_translates_in_chromium(served: Served, translator: Translator, tmp_path) -> None:
    sentence = "3 may 1999"
    want = translator.translate([sentence])[0].text
    with chromium_page(1000, 800) as (page, problems):
        page.goto(served.url + "/")
        page.fill("#src", sentence)
        page.click("#go")
        page.wait_for_selector("#attn-matrix td", timeout=30000)
        assert page.locator("#out").text_content() == want
        assert page.locator("#attn-kind option").count() == 3
        page.select_option("#attn-kind", "cross")
        rows = page.locator("#attn-matrix tbody tr").count()
        assert rows == len(translator.tgt_tok.encode(want)) + 1  # tokens and EOS
        page.hover('#attn-matrix tbody th[data-row="0"]')
        assert page.locator("#attn-status").text_content().startswith("query ")
        page.fill("#src", "june 5, 2001")  # a second translation rebuilds the view
        page.click("#go")
        page.wait_for_function("document.getElementById('out').textContent !== " + json.dumps(want))
        page.wait_for_selector("#attn-matrix td")
        shot = tmp_path / "serve-page.png"
        page.screenshot(path=str(shot), full_page=True)
    assert problems == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("ATTNKIT_ARTIFACTS")
    if target:
        folder = Path("test-artifacts" if target == "1" else target)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / shot.name).write_bytes(shot.read_bytes())


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims that size (IHDR) with no pixel data: enough for a reader that looks at
    the header only."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    signature = b"\x89PNG\r\n\x1a\n"
    return (
        signature + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_classify_and_embed_endpoints(tmp_path: Path) -> None:
    """The other kinds, with stand-in models (the real ones are tested in tests/export)."""
    import numpy as np

    from attnkit.serve.backends import ClassifyBackend, EmbedBackend

    class Encoder:
        dim = 3

        def encode(self, texts: list[str]) -> np.ndarray:
            return np.array([[len(t), 1.0, 0.0] for t in texts], dtype=np.float32)

    class Pred:
        def __init__(self, label: str) -> None:
            self.labels, self.probs = [label], [1.0]

    class Classifier:
        classes = ["small", "big"]

        def classify(self, paths: list[Path], top_k: int = 1) -> list[Pred]:
            return [Pred("big" if Path(p).stat().st_size > 3 else "small") for p in paths]

    emb = Served(create_app(EmbedBackend(Encoder(), name="enc")))
    cls = Served(create_app(ClassifyBackend(Classifier(), name="vit")))
    try:
        r = httpx.post(f"{emb.url}/v1/embed", json={"text": ["ab", "abcd"]}, timeout=30)
        assert r.json()["embeddings"] == [[2.0, 1.0, 0.0], [4.0, 1.0, 0.0]] and r.json()["dim"] == 3
        images = [
            base64.b64encode(b"ab").decode(),
            "data:image/png;base64," + base64.b64encode(b"abcdef").decode(),
        ]
        r = httpx.post(f"{cls.url}/v1/classify", json={"image": images, "top_k": 1}, timeout=30)
        assert [p["labels"] for p in r.json()["predictions"]] == [["small"], ["big"]]
        r = httpx.post(f"{cls.url}/v1/classify", json={"image": "%%%"}, timeout=30)
        assert r.status_code == 422 and "base64" in r.json()["error"]
        r = httpx.post(f"{cls.url}/v1/classify", json={"image": ["", "ab"]}, timeout=30)
        assert r.status_code == 422 and r.json()["error"].startswith("image 1 is empty")
        huge = io.BytesIO()  # a small PNG of a huge image: refused from its header
        Image.new("L", (5000, 4000)).save(huge, format="PNG")
        assert len(huge.getvalue()) < 100_000
        big = base64.b64encode(huge.getvalue()).decode()
        r = httpx.post(f"{cls.url}/v1/classify", json={"image": ["YWI=", big]}, timeout=30)
        assert r.status_code == 413
        assert r.json()["error"] == (
            "image 2 is 5000 x 4000 pixels, more than the limit of 16,777,216; send it downscaled"
        )
        bomb = _png_header(20_000, 10_000)  # past PIL's own limit: it refuses to open it
        r = httpx.post(f"{cls.url}/v1/classify", json={"image": _b64(bomb)}, timeout=30)
        assert r.status_code == 413
        assert r.json()["error"].startswith("image 1 has more than 16,777,216 pixels")
        r = httpx.post(f"{cls.url}/v1/translate", json={"text": "a"}, timeout=30)
        assert r.status_code == 404
        assert "runs a classification model" in r.json()["error"]
        r = httpx.post(f"{emb.url}/v1/translate", json={"text": "a"}, timeout=30)
        assert "this server runs an embedding model" in r.json()["error"]
        # a blank text has no embedding: null, as `attnkit embed` writes it
        r = httpx.post(f"{emb.url}/v1/embed", json={"text": ["ab", " ", "abc"]}, timeout=30)
        assert r.json()["embeddings"] == [[2.0, 1.0, 0.0], None, [3.0, 1.0, 0.0]]
    finally:
        emb.stop()
        cls.stop()


def test_ctranslate2_engine_and_backend_dispatch(dates_run, translator, tmp_path: Path) -> None:
    pytest.importorskip("ctranslate2", reason="ctranslate2 is not installed")
    from attnkit.cli import main
    from attnkit.cli.serve import load_backend
    from attnkit.config import ConfigError

    run, sources, _ = dates_run
    assert main(["export", "--run", str(run), "--format", "ctranslate2"]) == 0
    backend = load_backend(run=str(run), engine="ctranslate2")
    assert backend.describe()["engine"] == "ctranslate2"
    server = Served(create_app(backend))
    try:
        r = httpx.post(
            f"{server.url}/v1/translate", json={"text": sources[:5], "beam": 1}, timeout=60
        )
        want = [t.text for t in translator.translate(sources[:5], beam_size=1)]
        assert [t["text"] for t in r.json()["translations"]] == want
        r = httpx.post(
            f"{server.url}/v1/translate", json={"text": "a", "attention": True}, timeout=60
        )
        assert r.status_code == 422 and "ctranslate2" in r.json()["error"]
        # the page asks this engine for no attention weights, so it translates
        with chromium_page(900, 600) as (page, problems):
            page.goto(server.url + "/")
            page.fill("#src", sources[0])
            page.click("#go")
            page.wait_for_function("document.getElementById('out').textContent !== ''")
            assert page.locator("#out").text_content() == want[0]
            assert page.locator("#error").text_content() == ""
            assert "returns no attention weights" in page.locator("#attn-caption").inner_text()
        assert problems == []
    finally:
        server.stop()
    # the export folder on its own (attnkit export --out DIR) is served as translate takes it
    alone = tmp_path / "alone"
    shutil.copytree(run / "export" / "ctranslate2", alone)
    backend = load_backend(run=str(alone), engine="ctranslate2")
    assert backend.translator.translate(sources[:2], beam_size=1)[0].text == want[0]
    with pytest.raises(ValueError, match="--quantize is for --engine attnkit"):
        load_backend(run=str(run), engine="ctranslate2", quantize="int8")
    with pytest.raises(ValueError, match="--checkpoint is for --engine attnkit"):
        load_backend(run=str(run), engine="ctranslate2", checkpoint="last")
    with pytest.raises(ValueError, match="onnxruntime serves ViT runs"):
        load_backend(run=str(run), engine="onnxruntime")
    with pytest.raises(ConfigError, match="not a run folder"):
        load_backend(run=str(tmp_path))


def test_an_image_of_the_wrong_channel_count_is_a_422_saying_what_to_send() -> None:
    """The library's advice ("pass convert=True") means nothing to an HTTP client; the other
    requests of its batch are still answered."""
    from attnkit.data.images import ChannelCountError
    from attnkit.serve.backends import ClassifyBackend, RequestError

    class Pred:
        labels, probs = ["a"], [1.0]

    class Classifier:
        classes = ["a", "b"]

        def classify(self, paths: list[Path], top_k: int = 1) -> list[Pred]:
            for p in paths:
                if Path(p).read_bytes() == b"grey":
                    problem = f"{p}: image has 1 channel(s) (mode L) but 3 expected"
                    raise ChannelCountError(problem, "convert the file or pass convert=True")
            return [Pred() for _ in paths]

    backend = ClassifyBackend(Classifier(), name="vit")
    grey, fine = backend.process([((b"grey",), 1), ((b"rgb",), 1)])
    assert isinstance(grey, RequestError) and grey.status == 422
    assert str(grey) == (
        "image 1: image has 1 channel(s) (mode L) but 3 expected; convert the image "
        "before sending it"
    )
    assert fine == [{"labels": ["a"], "probs": [1.0]}]
