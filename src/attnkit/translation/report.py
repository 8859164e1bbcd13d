"""The HTML report of a translation run: gathers the run's metrics, translations of a few
sentences and their attention, and hands them to :func:`attnkit.viz.report.write_report`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from attnkit.training.runfolder import read_metric_rows
from attnkit.translation.config import load_run_config
from attnkit.translation.task import prepare_data
from attnkit.translation.translator import Translator
from attnkit.viz.report import write_report
from attnkit.viz.samples import translation_sample

__all__ = ["run_report"]


def run_report(
    run_dir: str | Path,
    out: str | Path,
    sentences: Sequence[str] | None = None,
    num_samples: int = 4,
    beam_size: int | None = None,
    checkpoint: str = "best",
    device: str = "cpu",
) -> Path:
    """Report on a trained run: its metrics log, and translations of a few sentences.

    Args:
        run_dir: the run folder (``config.json``, ``metrics.jsonl``, checkpoints).
        out: the HTML file to write.
        sentences: sentences to translate; default the first ``num_samples`` validation sources
            (with their references).
        num_samples: how many validation sentences when ``sentences`` is None.
        beam_size: beam size (default: the run's).
        checkpoint: ``best``, ``last`` or a checkpoint folder.
        device: where to run the model.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    translator = Translator.load(run_dir, checkpoint=checkpoint, device=device)
    references: list[str | None]
    if sentences:
        sources, references = list(sentences), [None] * len(sentences)
    else:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        data = prepare_data(cfg.data, run_dir, cfg.data.max_len)
        refs = data.valid_refs[:num_samples]
        sources, references = [s for s, _ in refs], [r[0] for _, r in refs]
    results = translator.translate(sources, beam_size=beam_size, need_weights=True)
    samples = [
        translation_sample(translator, t, ref) for t, ref in zip(results, references, strict=True)
    ]
    metrics = run_dir / "metrics.jsonl"
    rows = read_metric_rows(metrics) if metrics.is_file() else []
    raw = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    return write_report(
        out,
        samples,
        metric_rows=rows,
        info=raw,
        title=f"attnkit report: {run_dir.name} ({cfg.model_type})",
    )
