"""``attnkit bench deploy``: serving-time speed, side by side in one process on one model and one
set of sentences (CTranslate2's rounds first, then attnkit's once CTranslate2's translators are
released: their idle threads slow PyTorch in the same process).

Rows (ratios are speed ratios, higher = attnkit faster; runs alternate, medians are quoted):

* attnkit greedy and beam 5 float32 vs CTranslate2 float32 (target >= 0.8x CTranslate2's speed);
* attnkit int8 (``--quantize int8``) vs attnkit float32, greedy (target >= 1.5x) and the BLEU
  change on the held-out sentences (target |delta| <= 0.5);
* attnkit int8 vs float32 on sentences translated one per call (interactive use; no target);
* CTranslate2 int8 vs float32 (for reference, no target);
* attnkit int8 vs float32 on a larger model (Transformer-base sizes at ``full``/``quick``) with
  random weights, the same sentences and a fixed number of greedy steps (no target): how the
  int8 gain grows with the share of a step that the matrix products take;
* the HTTP server: requests/s with 32 concurrent clients (dynamic batching) vs one request at a
  time (target >= 5x), the p50/p99 latency of both, and the server process's memory over a soak
  of concurrent requests (10,000 at the ``full`` size; target: flat, < 10% growth after the
  first tenth).

The model is a run's (``--run``: its best checkpoint and its held-out validation sources), or a
dates Transformer trained here for a short budget (sizes ``tiny``/``quick``/``full``). Rows whose
engine is not installed (``ctranslate2``; ``fastapi``/``uvicorn``/``httpx``) say so and are skipped.
"""

from __future__ import annotations

import gc
import logging
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from attnkit.bench.suite import Row, _target
from attnkit.bench.timing import alternate, median
from attnkit.evaluation.metrics import corpus_bleu

__all__ = ["DEPLOY_SIZES", "DeploySizes", "deploy_rows", "prepare_model"]


@dataclass(frozen=True, kw_only=True)
class DeploySizes:
    """The model trained when no ``--run`` is given, and how much is measured."""

    model: dict[str, int]
    train_seconds: float
    num_examples: int
    sentences: int
    repeats: int
    clients: int
    requests_per_client: int
    sequential_requests: int
    soak_requests: int
    scaling_model: dict[str, int]
    scaling_steps: int


#: Sentences of the one-per-call row (interactive use).
ALONE = 32

#: "Attention Is All You Need"'s base model (with an 8,000-token vocabulary) for the scaling row.
_BASE = dict(
    d_model=512,
    num_heads=8,
    ffn_hidden=2048,
    num_encoder_layers=6,
    num_decoder_layers=6,
    vocab_size=8000,
)

DEPLOY_SIZES = {
    "full": DeploySizes(
        model=dict(
            d_model=256, num_heads=4, ffn_hidden=1024, num_encoder_layers=3, num_decoder_layers=3
        ),
        train_seconds=240,
        num_examples=20000,
        sentences=400,
        repeats=5,
        clients=32,
        requests_per_client=20,
        sequential_requests=100,
        soak_requests=10000,
        scaling_model=_BASE,
        scaling_steps=16,
    ),
    "quick": DeploySizes(
        model=dict(
            d_model=128, num_heads=4, ffn_hidden=512, num_encoder_layers=2, num_decoder_layers=2
        ),
        train_seconds=90,
        num_examples=8000,
        sentences=200,
        repeats=3,
        clients=32,
        requests_per_client=5,
        sequential_requests=40,
        soak_requests=2000,
        scaling_model=_BASE,
        scaling_steps=16,
    ),
    "tiny": DeploySizes(  # for tests: every code path, figures mean nothing
        model=dict(
            d_model=32, num_heads=2, ffn_hidden=64, num_encoder_layers=1, num_decoder_layers=1
        ),
        train_seconds=5,
        num_examples=600,
        sentences=12,
        repeats=1,
        clients=4,
        requests_per_client=2,
        sequential_requests=4,
        soak_requests=64,
        scaling_model=dict(
            d_model=64,
            num_heads=2,
            ffn_hidden=128,
            num_encoder_layers=1,
            num_decoder_layers=1,
            vocab_size=500,
        ),
        scaling_steps=3,
    ),
}


def prepare_model(sizes: DeploySizes, folder: Path) -> Path:
    """Train a dates Transformer of ``sizes.model`` for ``sizes.train_seconds`` into ``folder``."""
    from attnkit.translation.config import preset_for, run_config_from_dict
    from attnkit.translation.run import train_translator

    cfg = preset_for("dates", "transformer")
    cfg["model"].update(sizes.model, dropout=0.0)
    cfg["data"].update(source="dates", num_examples=sizes.num_examples, valid_limit=sizes.sentences)
    cfg["train"].update(
        epochs=100,
        time_budget=sizes.train_seconds,
        device="cpu",
        log_every=50,
        lr=3e-3,
        warmup_steps=100,
        max_tokens=1500,
    )
    cfg["model_type"] = "transformer"
    train_translator(run_config_from_dict(cfg), folder)
    return folder


def _held_out(run: Path, limit: int) -> tuple[list[str], list[list[str]]]:
    from attnkit.translation.config import load_run_config
    from attnkit.translation.task import prepare_data

    cfg = load_run_config(run)
    data = prepare_data(replace(cfg.data, valid_limit=limit), run, cfg.data.max_len)
    refs = data.valid_refs[:limit]
    return [s for s, _ in refs], [r for _, r in refs]


def _speed_row(
    measure: str, times: dict[str, list[float]], ours: str, ref: str, *, target: float | None
) -> Row:
    """A row of seconds for the same work: ratio = reference time / our time (speed ratio)."""
    t_ours, t_ref = median(times[ours]), median(times[ref])
    ratio = t_ref / t_ours
    fields = _target(ratio, ">=", target) if target is not None else {}
    return Row(
        section="deploy",
        measure=measure,
        ours=f"{t_ours * 1000:.0f} ms",
        reference=f"{t_ref * 1000:.0f} ms ({ref})",
        ratio=ratio,
        **fields,
    )


def _time_ctranslate2(
    run: Path, sentences: list[str], sizes: DeploySizes, scratch: Path
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Outputs and times of CTranslate2 float32 greedy, int8 greedy and float32 beam 5 on the
    run's export (its translators are released when this returns)."""
    from attnkit.export.ct2 import CTranslate2Translator, export_ctranslate2

    threads = torch.get_num_threads()
    ct2 = {
        q: CTranslate2Translator.load(
            export_ctranslate2(run, scratch / "ct2" / q, q), intra_threads=threads
        )
        for q in ("float32", "int8")
    }
    runs: dict[str, Callable[[], Any]] = {
        "ct2 greedy": lambda: ct2["float32"].translate(sentences, beam_size=1),
        "ct2 int8 greedy": lambda: ct2["int8"].translate(sentences, beam_size=1),
        "ct2 beam 5": lambda: ct2["float32"].translate(sentences, beam_size=5),
    }
    outputs = {name: fn() for name, fn in runs.items()}  # warm-up, and the outputs compared
    return outputs, alternate(runs, repeats=sizes.repeats, warmup=0)


def _engine_rows(
    run: Path, sentences: list[str], refs: list[list[str]], sizes: DeploySizes, scratch: Path
) -> list[Row]:
    from attnkit.translation.translator import Translator

    rows: list[Row] = []
    outputs: dict[str, Any] = {}
    times: dict[str, list[float]] = {}
    # CTranslate2 is timed first and released before attnkit is: while a CTranslate2 translator
    # that has run exists, its idle worker threads slow PyTorch in the same process (measured:
    # attnkit greedy 0.24 s -> 0.36 s on the fra-eng model, back to 0.26 s once it is deleted).
    try:
        ct2_outputs, ct2_times = _time_ctranslate2(run, sentences, sizes, scratch)
        outputs.update(ct2_outputs)
        times.update(ct2_times)
        gc.collect()  # the translators are gone: their threads with them
        has_ct2 = True
    except ImportError as err:
        has_ct2 = False
        rows.append(Row(section="deploy", measure="CTranslate2", ours="", reference="",
                        note=f"skipped: {err}"))  # fmt: skip
    fp32 = Translator.load(run, device="cpu")
    # CTranslate2 ends a sentence's beam search once it has K finished hypotheses; attnkit does
    # the same here (decode.early_stopping) so that both run one algorithm.
    fp32.config = replace(fp32.config, decode=replace(fp32.config.decode, early_stopping=True))
    int8 = Translator.load(run, device="cpu", quantize="int8")
    alone = [[s] for s in sentences[:ALONE]]  # interactive use: one sentence per call
    runs: dict[str, Callable[[], Any]] = {
        "attnkit greedy": lambda: fp32.translate(sentences, beam_size=1),
        "attnkit int8 greedy": lambda: int8.translate(sentences, beam_size=1),
        "attnkit beam 5": lambda: fp32.translate(sentences, beam_size=5),
        "attnkit greedy alone": lambda: [fp32.translate(one, beam_size=1) for one in alone],
        "attnkit int8 greedy alone": lambda: [int8.translate(one, beam_size=1) for one in alone],
    }
    outputs.update({name: fn() for name, fn in runs.items()})  # warm-up, and the outputs
    times.update(alternate(runs, repeats=sizes.repeats, warmup=0))
    n = len(sentences)
    if has_ct2:
        for mode in ("greedy", "beam 5"):
            same = sum(
                a.tokens == b.tokens
                for a, b in zip(outputs[f"attnkit {mode}"], outputs[f"ct2 {mode}"], strict=True)
            )
            row = _speed_row(
                f"{mode} float32, {n} sentences: attnkit vs CTranslate2 (speed)",
                times,
                f"attnkit {mode}",
                f"ct2 {mode}",
                target=0.8,
            )
            row.note = f"identical outputs {same}/{n}"
            if mode == "beam 5":
                row.note += "; both stop at 5 finished hypotheses"
            rows.append(row)
    row = _speed_row(
        f"greedy, {n} sentences: attnkit int8 vs float32 (speed)",
        times,
        "attnkit int8 greedy",
        "attnkit greedy",
        target=1.5,
    )
    same = sum(
        a.tokens == b.tokens
        for a, b in zip(outputs["attnkit greedy"], outputs["attnkit int8 greedy"], strict=True)
    )
    row.note = f"identical outputs {same}/{n}"
    rows.append(row)
    bleu = {
        name: corpus_bleu([t.text for t in outputs[name]], refs).score
        for name in outputs
        if "greedy" in name and "alone" not in name
    }
    delta = bleu["attnkit int8 greedy"] - bleu["attnkit greedy"]
    rows.append(
        Row(
            section="deploy",
            measure=f"BLEU change, attnkit int8 vs float32 greedy ({n} held-out)",
            ours=f"{bleu['attnkit int8 greedy']:.2f}",
            reference=f"{bleu['attnkit greedy']:.2f}",
            ratio=delta,
            target="|delta| <= 0.5",
            passed=abs(delta) <= 0.5,
            note="ratio column = BLEU delta",
        )
    )
    row = _speed_row(
        f"greedy, {len(alone)} sentences one per call: attnkit int8 vs float32 (speed)",
        times,
        "attnkit int8 greedy alone",
        "attnkit greedy alone",
        target=None,
    )
    row.note = "small products run in float32 (models.quantize.Int8Linear)"
    rows.append(row)
    if has_ct2:
        rows.append(
            _speed_row(
                f"greedy, {n} sentences: CTranslate2 int8 vs float32 (speed)",
                times,
                "ct2 int8 greedy",
                "ct2 greedy",
                target=None,
            )
        )
        rows[-1].note = (
            f"BLEU {bleu['ct2 int8 greedy']:.2f} vs {bleu['ct2 greedy']:.2f} "
            f"(attnkit float32 {bleu['attnkit greedy']:.2f})"
        )
    return rows


def _scaling_rows(run: Path, sentences: list[str], sizes: DeploySizes) -> list[Row]:
    """int8 vs float32 greedy on a model of ``sizes.scaling_model`` with random weights: the
    run's sentences (their token ids folded into the vocabulary), ``sizes.scaling_steps`` greedy
    steps for every sentence (EOS forbidden until then), so both precisions do the same work."""
    from attnkit.config import DecodeConfig, TransformerConfig
    from attnkit.data.batching import pad_sequences
    from attnkit.data.text import EOS_ID, PAD_ID
    from attnkit.decoding import greedy_decode
    from attnkit.models.quantize import quantize_int8
    from attnkit.models.transformer import Transformer
    from attnkit.translation.translator import Translator

    sizes_model = dict(sizes.scaling_model)
    vocab = sizes_model.pop("vocab_size")
    ids = Translator.load(run, device="cpu").encode_sources(sentences)
    first = EOS_ID + 1  # the special tokens come first
    src, _ = pad_sequences([[first + t % (vocab - first) for t in s] + [EOS_ID] for s in ids])
    mask = src != PAD_ID
    torch.manual_seed(0)
    config = TransformerConfig(
        src_vocab_size=vocab,
        tgt_vocab_size=vocab,
        max_len=max(src.shape[1], sizes.scaling_steps) + 1,
        norm_first=True,
        dropout=0.0,
        **sizes_model,
    )
    fp32 = Transformer(config).eval()
    int8 = quantize_int8(fp32)
    forced = DecodeConfig(beam_size=1, min_len_a=1e3)
    steps = sizes.scaling_steps

    def greedy(model: torch.nn.Module) -> Any:
        with torch.inference_mode():
            return greedy_decode(model, src, mask, max_len=steps, config=forced)

    times = alternate(
        {"float32": lambda: greedy(fp32), "int8": lambda: greedy(int8)},
        repeats=sizes.repeats,
        warmup=1,
    )
    d, layers = config.d_model, f"{config.num_encoder_layers}+{config.num_decoder_layers}"
    row = _speed_row(
        f"greedy, {len(sentences)} sentences x {steps} steps, random weights, d_model {d}, "
        f"{layers} layers, FFN {config.ffn_hidden}, {vocab:,} tokens: attnkit int8 vs float32 "
        "(speed)",
        times,
        "int8",
        "float32",
        target=None,
    )
    row.note = "how the int8 gain grows with the model: products are a larger share of a step"
    return [row]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _server_rows(run: Path, sentences: list[str], sizes: DeploySizes) -> list[Row]:
    """Requests/s and latency of ``attnkit serve`` in its own process (as deployed: the clients
    here do not share its interpreter), 32 concurrent clients vs one request at a time."""
    try:
        import fastapi  # noqa: F401 - the server process needs it
        import httpx
        import uvicorn  # noqa: F401

        from attnkit.serve.server import free_port
    except ImportError as err:
        return [Row(section="deploy", measure="server", ours="", reference="",
                    note=f"skipped: {err}")]  # fmt: skip
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "attnkit.cli", "serve", "--run", str(run), "--port", str(port)]
    cmd += ["--threads", str(torch.get_num_threads()), "--max-queue", "4096"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def client(texts: Sequence[str], latencies: list[float], errors: list[str]) -> None:
        with httpx.Client(timeout=300) as http:
            for text in texts:
                start = time.perf_counter()
                r = http.post(f"{base}/v1/translate", json={"text": text, "beam": 1})
                latencies.append(time.perf_counter() - start)
                if r.status_code != 200:
                    errors.append(r.text[:80])

    def measure(clients: int, per_client: int) -> tuple[float, list[float], list[str], dict]:
        before = httpx.get(f"{base}/health").json()
        latencies: list[float] = []
        errors: list[str] = []
        jobs = [
            [sentences[(c * per_client + i) % len(sentences)] for i in range(per_client)]
            for c in range(clients)
        ]
        threads = [threading.Thread(target=client, args=(j, latencies, errors)) for j in jobs]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        rps = clients * per_client / (time.perf_counter() - start)
        after = httpx.get(f"{base}/health").json()
        batches = max(after["batches"] - before["batches"], 1)
        return rps, latencies, errors, {"mean_batch": clients * per_client / batches}

    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"attnkit serve did not start: {proc.stderr.read()[-300:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        measure(2, 2)  # warm-up
        seq_rps, seq_lat, seq_err, _ = measure(1, sizes.sequential_requests)
        par_rps, par_lat, par_err, stats = measure(sizes.clients, sizes.requests_per_client)
        soak_rss: list[float] = []  # MiB after each tenth of the soak
        soak_errors = 0
        per_tenth = max(1, -(-sizes.soak_requests // (10 * sizes.clients)))  # ceil
        for _ in range(10):
            _, _, errs, _ = measure(sizes.clients, per_tenth)
            soak_errors += len(errs)
            soak_rss.append(_rss_mib(proc.pid))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    ratio = par_rps / seq_rps

    def ms(lat: list[float]) -> str:
        return f"p50 {_percentile(lat, 0.5) * 1000:.0f} / p99 {_percentile(lat, 0.99) * 1000:.0f}"

    return [
        Row(
            section="deploy",
            measure=f"server requests/s: {sizes.clients} concurrent clients vs one at a time",
            ours=f"{par_rps:.1f}/s",
            reference=f"{seq_rps:.1f}/s",
            ratio=ratio,
            note=f"mean batch {stats['mean_batch']:.1f}, errors {len(par_err) + len(seq_err)}",
            **_target(ratio, ">=", 5.0),
        ),
        Row(
            section="deploy",
            measure="server latency ms: concurrent vs one at a time",
            ours=ms(par_lat),
            reference=ms(seq_lat),
            ratio=statistics.median(par_lat) / statistics.median(seq_lat),
            note="ratio = p50 concurrent / p50 alone",
        ),
        _soak_row(soak_rss, 10 * per_tenth * sizes.clients, soak_errors),
    ]


def _rss_mib(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux ``/proc``; NaN elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _soak_row(rss: list[float], requests: int, errors: int) -> Row:
    """Memory of the server over a soak: RSS after the first tenth of the requests (allocator
    and caches warm) against RSS at the end; flat = less than 10% growth."""
    growth = rss[-1] / rss[0] if rss and rss[0] > 0 else float("nan")
    return Row(
        section="deploy",
        measure=f"server memory over a {requests}-request soak: end vs first tenth (RSS)",
        ours=f"{rss[-1]:.0f} MiB" if rss else "",
        reference=f"{rss[0]:.0f} MiB" if rss else "",
        ratio=growth,
        note=f"RSS per tenth {' '.join(f'{x:.0f}' for x in rss)} MiB; errors {errors}",
        **_target(growth, "<=", 1.1),
    )


def deploy_rows(
    *,
    run: str | Path | None = None,
    sizes: str = "full",
    emit: Callable[[list[Row]], None] | None = None,
) -> list[Row]:
    """Run the deployment benchmark and return its rows (``emit`` gets each group when done).

    Args:
        run: a translation run folder; None trains a dates model first (:func:`prepare_model`).
        sizes: ``full``, ``quick`` or ``tiny``.
        emit: called with the rows of each group (engines, server) as they finish.
    """
    if sizes not in DEPLOY_SIZES:
        raise ValueError(f"sizes must be one of {list(DEPLOY_SIZES)}, got {sizes!r}")
    preset = DEPLOY_SIZES[sizes]
    with tempfile.TemporaryDirectory(prefix="attnkit-bench-deploy-") as tmp:
        folder = Path(run) if run is not None else prepare_model(preset, Path(tmp) / "dates")
        sentences, refs = _held_out(folder, preset.sentences)
        rows: list[Row] = []
        for group in (
            lambda: _engine_rows(folder, sentences, refs, preset, Path(tmp)),
            lambda: _server_rows(folder, sentences, preset),
            lambda: _scaling_rows(folder, sentences, preset),
        ):
            new = group()
            rows.extend(new)
            if emit is not None:
                emit(new)
    return rows
