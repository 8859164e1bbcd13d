"""A trained translation model with its tokenizers: translate text, with beam search, n-best
lists and attention weights. Build one with :meth:`Translator.load` from a run folder."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from attnkit.config import ConfigError
from attnkit.data.errors import DataError
from attnkit.data.sentences import split_sentences
from attnkit.data.text import restore_case, tidy_punctuation_spacing
from attnkit.data.tokenizers import Tokenizer
from attnkit.models import build_seq2seq
from attnkit.models.quantize import check_quantize, quantize_int8
from attnkit.training.checkpoint import load_checkpoint
from attnkit.training.runfolder import find_checkpoint
from attnkit.training.trainer import resolve_device
from attnkit.translation.config import RunConfig, load_run_config
from attnkit.translation.task import decode_corpus, load_tokenizers

__all__ = ["Translation", "Translator", "joint_alternatives"]


@dataclass
class Translation:
    """The translation of one input text.

    ``alternatives`` holds the n-best list of beam search, ``weights`` the attention weights
    (``need_weights=True``). A text of several sentences is translated sentence by sentence:
    ``parts`` then holds each sentence's :class:`Translation`, ``text`` joins them with a space,
    ``score`` is the sum of their scores and ``tokens`` their concatenation; its
    ``alternatives`` are the best combinations of the sentences' alternatives (texts joined,
    scores summed; :func:`joint_alternatives`), and the weights stay with each sentence.
    """

    source: str
    text: str
    tokens: list[int]
    score: float | None = None
    alternatives: list[tuple[str, float]] | None = None
    weights: dict[str, Any] | None = None
    parts: list[Translation] | None = None


def joint_alternatives(
    lists: Sequence[list[tuple[str, float]] | None],
) -> list[tuple[str, float]] | None:
    """The n-best list of a text translated sentence by sentence.

    Args:
        lists: per sentence, its n-best ``(text, score)`` list, best first (None: no list).

    Returns:
        the ``n`` best combinations of one alternative per sentence (``n`` the longest list),
        best first: texts joined with a space, scores summed (the sentences are decoded
        independently, so a text's score is the sum of its sentences'); None when a sentence
        has no list (greedy search). A sentence with an empty list (no output) counts as
        ``("", -inf)``.

    Keeping the ``n`` best after each sentence is exact: the ``n`` best sums of two lists use
    only the ``n`` best of each.
    """
    if not lists or any(alts is None for alts in lists):
        return None
    # a sentence with no output at all (constraints allowed none): "" and -inf, so the text
    # still has its list (its score -inf, as the sentence's)
    lists = [alts or [("", float("-inf"))] for alts in lists]
    limit = max(len(alts) for alts in lists)
    best: list[tuple[tuple[str, ...], float]] = [((), 0.0)]
    for alts in lists:
        assert alts is not None
        joined = [(texts + (more,), score + extra) for texts, score in best for more, extra in alts]
        best = sorted(joined, key=lambda pair: -pair[1])[:limit]
    return [(" ".join(texts), score) for texts, score in best]


class Translator:
    """A trained model with its tokenizers: translate and evaluate text.

    Build one with :meth:`load` from a run folder.
    """

    def __init__(
        self, model: nn.Module, src_tok: Tokenizer, tgt_tok: Tokenizer, *, config: RunConfig
    ) -> None:
        self.model, self.src_tok, self.tgt_tok, self.config = model.eval(), src_tok, tgt_tok, config

    @classmethod
    def load(
        cls,
        run_dir: str | Path,
        checkpoint: str = "best",
        device: str = "auto",
        *,
        quantize: str | None = None,
    ) -> Translator:
        """Load ``best`` (highest validation BLEU), ``last``, or a checkpoint folder path.

        ``quantize="int8"``: dynamic int8 quantization of the Linear layers for CPU inference
        (:func:`attnkit.models.quantize.quantize_int8`; ``device`` must be the CPU).
        """
        check_quantize(quantize, device)
        run_dir = Path(run_dir)
        cfg = load_run_config(run_dir)
        src_tok, tgt_tok = load_tokenizers(run_dir / "tokenizer")
        model = build_seq2seq(cfg.model_type, cfg.model)
        path = find_checkpoint(run_dir, checkpoint, cfg.train.keep_best)
        load_checkpoint(path, model, with_state=False)
        if quantize is not None:
            return cls(quantize_int8(model), src_tok, tgt_tok, config=cfg)
        return cls(model.to(resolve_device(device)), src_tok, tgt_tok, config=cfg)

    def encode_sources(self, sentences: Sequence[str]) -> list[list[int]]:
        """Token ids of each sentence; a sentence longer than the model's limit is an error."""
        limit = self.config.model.get("max_len", self.config.data.max_len)
        ids = []
        for i, sentence in enumerate(sentences, 1):
            if self.config.data.tidy_source_punctuation:
                sentence = tidy_punctuation_spacing(sentence)  # as the training sources were
            if not self.config.data.lowercase:
                sentence = restore_case(sentence)  # "i lost." reads as the cased "I lost."
            tokens = self.src_tok.encode(sentence)
            if len(tokens) > limit:
                raise DataError(
                    f"input {i} has {len(tokens)} tokens, more than the model's "
                    f"limit of {limit}: {sentence[:40]!r}...; split it into shorter "
                    "sentences"
                )
            ids.append(tokens)
        return ids

    def translate(
        self,
        texts: Sequence[str],
        beam_size: int | None = None,
        need_weights: bool = False,
        max_tokens: int = 8192,
        n_best: int | None = None,
        split: bool = True,
    ) -> list[Translation]:
        """Translate texts, one :class:`Translation` per text, in order.

        Args:
            texts: sentences or paragraphs. A blank text gives an empty translation.
            beam_size: 1 for greedy search (default: the run's ``decode.beam_size``).
            need_weights: keep every layer's and head's attention weights.
            max_tokens: padded source tokens per decoding batch.
            n_best: alternatives to keep from beam search (default: the run's).
            split: cut each text into sentences (:func:`attnkit.data.sentences.split_sentences`)
                and translate them all as one batch; False translates each text as it is.
        """
        beam = self.config.decode.beam_size if beam_size is None else beam_size
        if beam < 1:
            raise ConfigError(f"--beam must be >= 1, got {beam}")
        pieces = [
            split_sentences(t) if split else ([t] if t.strip() else []) for t in texts
        ]  # sentences of each text
        flat = [s for sentences in pieces for s in sentences]
        sources = self.encode_sources(flat)
        results = self.decode_ids(
            sources, beam_size=beam, max_tokens=max_tokens, need_weights=need_weights, n_best=n_best
        )
        done = iter(self._translation(s, r) for s, r in zip(flat, results, strict=True))
        out = []
        for text, sentences in zip(texts, pieces, strict=True):
            parts = [next(done) for _ in sentences]
            if len(parts) == 1:
                out.append(dataclasses.replace(parts[0], source=text))
            else:
                out.append(
                    Translation(
                        text,
                        " ".join(p.text for p in parts),
                        [t for p in parts for t in p.tokens],
                        sum(p.score for p in parts if p.score is not None) if parts else None,
                        joint_alternatives([p.alternatives for p in parts]),
                        parts=parts or None,
                    )
                )
        return out

    def decode_ids(
        self,
        sources: Sequence[list[int]],
        *,
        beam_size: int,
        max_tokens: int = 8192,
        need_weights: bool = False,
        n_best: int | None = None,
    ) -> list[Any]:
        """Decode source id sequences: per source, the greedy :class:`Hypothesis` or the n-best
        list of beam search (:func:`attnkit.translation.task.decode_corpus`). Engines that run
        the model elsewhere (CTranslate2) override this and keep everything else."""
        return decode_corpus(
            self.model,
            sources,
            self.config.decode,
            beam_size=beam_size,
            max_tokens=max_tokens,
            need_weights=need_weights,
            n_best=n_best,
        )

    def _translation(self, sentence: str, result: Any) -> Translation:
        """One sentence's :class:`Translation` from a decoding result (or an n-best list)."""
        if isinstance(result, list) and not result:  # constraints allowed no output
            return Translation(sentence, "", [], float("-inf"), [])
        if isinstance(result, list):  # n-best list from beam search
            best = result[0]
            alternatives = [(self.tgt_tok.decode(h.tokens), float(h.score)) for h in result]
            return Translation(
                sentence,
                alternatives[0][0],
                list(best.tokens),
                float(best.score),
                alternatives,
                getattr(best, "weights", None),
            )
        return Translation(
            sentence,
            self.tgt_tok.decode(result.tokens),
            list(result.tokens),
            float(result.score),
            None,
            getattr(result, "weights", None),
        )
