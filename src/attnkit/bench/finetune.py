"""Fine-tuning benchmark pieces: the Hugging Face peer attnkit's ``finetune`` is compared with, the
attnkit side run the same way, and prediction throughput of a fine-tuned run.

The peer is the usual Hugging Face recipe: ``transformers.AutoModel`` under a masked-mean pooling
and a Linear head (dropout 0.1), ``torch.optim.AdamW`` (lr 1e-4, weight decay 0.01), 6 % linear
warm-up then a linear decay planned over one epoch (``get_linear_schedule_with_warmup``),
gradient clipping at 1.0, shuffled batches of 32 texts tokenized once (cut at 64 tokens) and
padded per batch to their longest member (``DataCollatorWithPadding``). It trains until its
time budget (or the epoch) ends, then scores the dev set.

``transformers`` is imported when the peer runs; attnkit does not depend on it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FinetuneResult",
    "hf_finetune",
    "attnkit_finetune",
    "prediction_rates",
    "padding_share",
]


@dataclass
class FinetuneResult:
    """One side's run: examples trained, seconds (the whole budget, validations included for
    attnkit), dev accuracy of the final weights (and of the best checkpoint, attnkit)."""

    name: str
    examples: int
    steps: int
    seconds: float
    dev_accuracy: float
    best_dev_accuracy: float | None = None
    padding: float = 0.0  # share of padded positions in the training batches
    notes: list[str] = field(default_factory=list)

    @property
    def examples_per_s(self) -> float:
        return self.examples / max(self.seconds, 1e-9)


def padding_share(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Padded positions / all positions of ``batches`` (lists of indices into ``lengths``)."""
    real = sum(lengths[i] for b in batches for i in b)
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches if b)
    return 1.0 - real / total if total else 0.0


class _MeanPoolHead(nn.Module):
    """A Hugging Face encoder, masked mean pooling, dropout, Linear."""

    def __init__(self, encoder: nn.Module, hidden: int, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(hidden, num_labels)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **_: Any) -> Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]  # (B, S, D)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, S, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, D)
        return self.head(self.dropout(pooled))  # (B, C)


def hf_finetune(
    folder: str | Path,
    train: tuple[list[str], list[int]],
    dev: tuple[list[str], list[int]],
    *,
    budget_s: float,
    batch_size: int = 32,
    max_length: int = 64,
    lr: float = 1e-4,
    warmup_ratio: float = 0.06,
    seed: int = 0,
) -> FinetuneResult:
    """Fine-tune the Hugging Face peer for ``budget_s`` seconds (at most one epoch).

    Args:
        folder: the checkpoint folder (config.json, model.safetensors, tokenizer files).
        train, dev: ``(texts, class indices)``.
        budget_s: training seconds (the dev evaluation afterwards is not counted).
        batch_size, max_length, lr, warmup_ratio, seed: the recipe's settings.
    """
    from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    num_labels = max(train[1]) + 1
    encoder = AutoModel.from_pretrained(str(folder))
    model = _MeanPoolHead(encoder, encoder.config.hidden_size, num_labels)
    encoded = tokenizer(train[0], truncation=True, max_length=max_length)["input_ids"]
    steps_per_epoch = math.ceil(len(encoded) / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(warmup_ratio * steps_per_epoch), steps_per_epoch
    )
    order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(seed)).tolist()
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    labels = torch.tensor(train[1])
    model.train()
    start, steps, examples, used = time.perf_counter(), 0, 0, []
    for index in batches:
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in index]}, return_tensors="pt")
        logits = model(batch["input_ids"], batch["attention_mask"])
        loss = F.cross_entropy(logits, labels[index])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        steps, examples = steps + 1, examples + len(index)
        used.append(index)
        if time.perf_counter() - start >= budget_s:
            break
    seconds = time.perf_counter() - start
    model.eval()
    correct = 0
    with torch.inference_mode():
        for k in range(0, len(dev[0]), 128):
            enc = tokenizer(
                dev[0][k : k + 128],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            predicted = model(enc["input_ids"], enc["attention_mask"]).argmax(-1)
            correct += int((predicted == torch.tensor(dev[1][k : k + 128])).sum())
    lengths = [len(x) for x in encoded]
    return FinetuneResult(
        "Hugging Face transformers",
        examples,
        steps,
        seconds,
        correct / len(dev[0]),
        padding=padding_share(lengths, used),
        notes=[f"transformers attention: {getattr(encoder.config, '_attn_implementation', '?')}"],
    )


def attnkit_finetune(
    model: str,
    train_file: str | Path,
    dev_file: str | Path,
    run_dir: str | Path,
    *,
    budget_s: float,
    overrides: Sequence[str] = (),
) -> FinetuneResult:
    """``attnkit finetune`` (its defaults, the time budget, ``overrides``) into ``run_dir``.

    The seconds are the training time up to the step that ended the budget, the validations and
    checkpoints on the way included (the final validation after the budget is not counted, as
    the peer's dev evaluation is not).
    """
    from attnkit.config import apply_overrides
    from attnkit.textclass.classifier import TextClassifier
    from attnkit.textclass.config import backbone_kind, textclass_config_from_dict, textclass_preset
    from attnkit.textclass.data import LengthBuckets
    from attnkit.textclass.run import train_textclass
    from attnkit.training.checkpoint import load_checkpoint
    from attnkit.training.runfolder import read_metric_rows

    preset = textclass_preset(backbone_kind(model))
    preset["backbone"] = {"source": model}
    preset["data"].update(source=str(train_file), valid=str(dev_file))
    preset["train"]["time_budget"] = float(budget_s)
    cfg = textclass_config_from_dict(apply_overrides(preset, list(overrides)))
    result, final = train_textclass(cfg, run_dir)
    best = TextClassifier.load(run_dir, "best", device=str(final.device))
    d = cfg.data
    lengths = [
        len(x) for x in final.encoder.encode(_texts(train_file, d.text_column, d.label_column))
    ]
    buckets = LengthBuckets(lengths, d.batch_size, bucket=d.bucket, seed=d.seed)
    state, _ = load_checkpoint(Path(run_dir) / "checkpoints" / "last")
    validations = sum(
        1 for r in read_metric_rows(Path(run_dir) / "metrics.jsonl") if r["split"] == "valid"
    )
    notes = [
        f"{cfg.train.schedule} schedule over {cfg.train.schedule_horizon}",
        f"{validations} validations, {result.seconds:.0f} s with the last",
    ]
    return FinetuneResult(
        "attnkit finetune",
        int(round(result.tokens_per_second * result.seconds)),
        result.steps,
        float(state["elapsed"]),
        final.evaluate(dev_file)["accuracy"],
        best_dev_accuracy=best.evaluate(dev_file)["accuracy"],
        padding=padding_share(lengths, buckets.global_batches(0)),
        notes=notes,
    )


def _texts(path: str | Path, text_column: str | None, label_column: str | None) -> list[str]:
    from attnkit.textclass.data import read_labelled

    return read_labelled(path, text_column, label_column).texts


def prediction_rates(
    run_dir: str | Path,
    texts: Sequence[str],
    *,
    chunk_lines: int,
    batch_size: int = 32,
    repeats: int = 3,
    embed_model: str = "minilm",
) -> dict[str, float]:
    """Sentences per second of ``attnkit predict --run``, ``attnkit embed --run`` (the same
    fine-tuned model) and ``attnkit embed --model embed_model`` (the pretrained encoder), each
    as the command answers lines on stdin: chunks of ``chunk_lines`` (the CLI's
    ``CHUNK_LINES``), ``batch_size`` texts per forward pass (both commands' default); best of
    ``repeats`` interleaved passes."""
    from attnkit.bench.timing import alternate
    from attnkit.pretrained import SentenceEncoder
    from attnkit.textclass.classifier import TextClassifier

    classifier = TextClassifier.load(run_dir, device="cpu")
    classifier.batch_size = batch_size
    encoder = SentenceEncoder.from_pretrained(embed_model)
    texts = list(texts)
    chunks = [texts[k : k + chunk_lines] for k in range(0, len(texts), chunk_lines)]

    def each_chunk(answer: Callable[[list[str]], Any]) -> Callable[[], None]:
        def run() -> None:
            for chunk in chunks:
                answer(chunk)

        return run

    times = alternate(
        {
            "attnkit predict --run": each_chunk(classifier.predict),
            "attnkit embed --run": each_chunk(lambda c: classifier.embed(c, batch_size)),
            f"attnkit embed --model {embed_model}": each_chunk(
                lambda c: encoder.encode(c, batch_size)
            ),
        },
        repeats=repeats,
        warmup=1,
    )
    return {name: len(texts) / min(values) for name, values in times.items()}
