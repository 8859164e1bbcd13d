"""A self-contained HTML report of a translation run: curves, metrics, samples, attention.

One file, no server and no network: the curves are an inline base64 PNG, the stylesheet and the
script (``assets/report.css``, ``assets/report.js``, written for attnkit) are inlined, and the
attention weights of the sample sentences are embedded as JSON. The interactive view picks a
sentence, a kind (encoder / decoder self / cross), a layer and a head, draws the matrix as an
HTML table (one ``<td data-w=...>`` per weight), and highlights a token's row or column on hover.

:func:`build_report` takes plain data (so it can be tested without a model); the task that owns
a run gathers that data (:func:`attnkit.translation.report.run_report`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from attnkit.viz.curves import pivot_splits, plot_curves
from attnkit.viz.samples import KIND_TITLES, AttentionSample

__all__ = ["attention_view_html", "build_report", "report_asset", "write_report", "samples_json"]

_DECIMALS = 5  # weights are stored rounded, which keeps a report of a few sentences small
_TABLE_COLUMNS = ("step", "epoch", "loss", "bleu", "chrf", "accuracy", "lr", "tokens_per_s")
_MAX_TRAIN_ROWS = 12


def _asset(name: str) -> str:
    return resources.files("attnkit.viz").joinpath("assets", name).read_text(encoding="utf-8")


def _rounded(x: Any) -> Any:
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return round(float(x), _DECIMALS)


def samples_json(samples: Sequence[AttentionSample]) -> list[dict[str, Any]]:
    """The samples as JSON-ready dicts (weights as nested lists, rounded to 5 decimals).

    Shapes: ``weights[kind][layer][head][query][key]``.
    """
    return [
        {
            "source": s.source,
            "translation": s.translation,
            "reference": s.reference,
            "src_tokens": list(s.src_tokens),
            "tgt_tokens": list(s.tgt_tokens),
            "tgt_inputs": list(s.tgt_inputs or ()),
            "weights": {
                k: [_rounded(w.tolist()) for w in layers] for k, layers in s.weights.items()
            },
        }
        for s in samples
    ]


def _script_json(data: Any) -> str:
    """JSON that is safe inside a <script> element (no '</' and no HTML comment openers)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _format(value: Any) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return "" if value is None else str(value)


def _metrics_table(rows: Sequence[Mapping[str, Any]], caption: str) -> str:
    if not rows:
        return ""
    present = [c for c in _TABLE_COLUMNS if any(c in r for r in rows)]
    extra = [c for r in rows for c in r if c not in present and c not in ("split", "grad_norm")]
    columns = present + list(dict.fromkeys(extra))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_format(r.get(c)))}</td>" for c in columns) + "</tr>"
        for r in rows
    )
    return (
        f'<table class="data"><caption>{html.escape(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _curves_img(history: Mapping[str, Sequence[Any]]) -> str:
    try:
        fig = plot_curves(history, figsize=(6.0, 3.2), dpi=100)
    except ValueError as err:  # e.g. no numeric column yet: the rest of the report still helps
        return f'<p class="muted">no curves: {html.escape(str(err))}</p>'
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img class="curves" alt="training curves" src="data:image/png;base64,{encoded}">'


def _samples_table(samples: Sequence[AttentionSample]) -> str:
    rows = []
    for i, s in enumerate(samples, 1):
        ok = (
            s.reference is not None and s.translation.strip().lower() == s.reference.strip().lower()
        )
        mark = "" if s.reference is None else ("✓" if ok else "✗")
        cls = "" if s.reference is None else (' class="ok"' if ok else ' class="bad"')
        rows.append(
            f"<tr{cls}><td>{i}</td><td class='text'>{html.escape(s.source)}</td>"
            f"<td class='text'>{html.escape(s.translation)}</td>"
            f"<td class='text'>{html.escape(s.reference or '')}</td>"
            f"<td class='mark'>{mark}</td></tr>"
        )
    return (
        '<table class="data" id="samples"><thead><tr><th>#</th><th>source</th>'
        "<th>translation</th><th>reference</th><th></th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def attention_view_html() -> str:
    """The elements ``report.js`` fills: the four selects, caption, matrix, strip and status
    (also used by the page of ``attnkit serve``)."""
    return (
        '<div class="controls">'
        + "".join(
            f'<label>{name} <select id="attn-{name}"></select></label>'
            for name in ("sentence", "kind", "layer", "head")
        )
        + "</div><p id='attn-caption'></p>"
        '<table id="attn-matrix"></table><div class="strip" id="attn-strip"></div>'
        '<div id="attn-status"></div>'
    )


def report_asset(name: str) -> str:
    """The text of ``report.js`` or ``report.css`` (the report's attention view and style)."""
    if name not in ("report.js", "report.css"):
        raise ValueError(f"report assets are report.js and report.css, got {name!r}")
    return _asset(name)


def build_report(
    samples: Sequence[AttentionSample],
    metric_rows: Sequence[Mapping[str, Any]] | None = None,
    history: Mapping[str, Sequence[Any]] | None = None,
    title: str = "attnkit report",
    info: Mapping[str, Any] | None = None,
) -> str:
    """The report as one HTML string.

    Args:
        samples: translated sentences with tokens and attention weights (may be empty).
        metric_rows: logged rows like ``{"split": "valid", "step": 40, "bleu": 31.0}``; shown as
            tables (validation rows, the last training rows) and, unless ``history`` is given,
            drawn as curves.
        history: ``{column: values}`` for :func:`~attnkit.viz.curves.plot_curves` (optional).
        title: page title.
        info: run description (e.g. the resolved config) shown in a collapsed block.

    Returns:
        a complete HTML document that loads nothing from outside.
    """
    rows = list(metric_rows or ())
    if history is None and rows:
        history = pivot_splits(
            {k: [r.get(k) for r in rows] for k in dict.fromkeys(k for r in rows for k in r)}
        )
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if info:
        parts.append(
            "<details><summary>run configuration</summary><pre>"
            + html.escape(json.dumps(info, indent=2, default=str))
            + "</pre></details>"
        )
    parts.append("<h2>Training curves</h2>")
    parts.append(_curves_img(history) if history else '<p class="muted">no metrics logged</p>')
    valid = [r for r in rows if r.get("split") == "valid"]
    train = [r for r in rows if r.get("split") == "train"][-_MAX_TRAIN_ROWS:]
    other = [r for r in rows if r.get("split") not in ("train", "valid")]
    parts.append("<h2>Metrics</h2>")
    parts.append(
        _metrics_table(valid, "validation (after each epoch)")
        + _metrics_table(train, f"training (last {len(train)} logged steps)")
        + _metrics_table(other, "other rows")
        or '<p class="muted">no metrics logged</p>'
    )
    parts.append("<h2>Sample translations</h2>")
    parts.append(
        _samples_table(samples) if samples else '<p class="muted">no sample translations</p>'
    )
    parts.append("<h2>Attention</h2>" + attention_view_html())
    payload = {"samples": samples_json(samples), "kinds": dict(KIND_TITLES)}
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{html.escape(title)}</title>'
        f"<style>\n{_asset('report.css')}</style></head>\n<body>\n"
        + "\n".join(parts)
        + f'\n<script type="application/json" id="attnkit-data">{_script_json(payload)}</script>'
        + f"\n<script>\n{_asset('report.js')}</script>\n</body></html>\n"
    )


def write_report(path: str | Path, samples: Sequence[AttentionSample], **kwargs: Any) -> Path:
    """Write :func:`build_report` to ``path`` (an ``.html`` file); returns the path."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"report path must end in .html, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_report(samples, **kwargs), encoding="utf-8")
    return path
