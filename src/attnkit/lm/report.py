"""The HTML report of a language-model run: its metrics, a few sampled continuations and their
causal self-attention, handed to :func:`attnkit.viz.report.write_report` as plain data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from attnkit.lm.generator import Generator
from attnkit.training.runfolder import read_metric_rows
from attnkit.viz.report import write_report
from attnkit.viz.samples import AttentionSample

__all__ = ["lm_report", "lm_sample"]


def lm_sample(generator: Generator, prompt: str, continuation: str) -> AttentionSample:
    """``prompt`` + ``continuation`` as an :class:`AttentionSample`: the self-attention of
    every layer over the whole text (the tokens read label both axes; each position "emits"
    the next token, the last one the model's most likely next token)."""
    text = prompt + continuation
    tokens, weights = generator.attention(text)
    ids = generator.encode(text, what="the text")[-len(tokens) :]
    with torch.inference_mode():
        logits, _ = generator.model(torch.tensor([ids], device=generator.device))  # (1, L, V)
    emitted = [*tokens[1:], *generator.display_pieces([int(logits[0, -1].argmax())])]
    return AttentionSample(
        source=prompt,
        translation=continuation,
        src_tokens=[],
        tgt_tokens=emitted,
        tgt_inputs=tokens,
        weights={"self": weights},
    )


def lm_report(
    run_dir: str | Path,
    out: str | Path,
    prompts: Sequence[str] | None = None,
    num_samples: int = 4,
    max_new_tokens: int = 60,
    checkpoint: str = "best",
    device: str = "cpu",
) -> Path:
    """Report on a trained language-model run.

    Args:
        run_dir: the run folder.
        out: the HTML file to write.
        prompts: prompts to continue; default ``num_samples`` continuations of an empty prompt.
        num_samples: how many when ``prompts`` is None.
        max_new_tokens: length of each continuation (sampled at temperature 0.8, seed i).
        checkpoint: ``best``, ``last`` or a checkpoint folder.
        device: where to run the model.
    """
    run_dir = Path(run_dir)
    generator = Generator.load(run_dir, checkpoint=checkpoint, device=device)
    if prompts is None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        prompts = [""] * num_samples
    samples = []
    for i, prompt in enumerate(prompts):
        continuation = generator.complete(prompt, max_new_tokens, temperature=0.8, seed=i)
        samples.append(lm_sample(generator, prompt, continuation))
    metrics = run_dir / "metrics.jsonl"
    rows = read_metric_rows(metrics) if metrics.is_file() else []
    raw = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    return write_report(
        out,
        samples,
        metric_rows=rows,
        info=raw,
        title=f"attnkit report: {run_dir.name} (language model)",
    )
