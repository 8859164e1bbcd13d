"""A trained language model with its tokenizer: stream text, score text, show its attention.

Build one with :meth:`Generator.load` from a run folder. Generation goes through
:func:`attnkit.decoding.sampling.generate` (KV cache, temperature, top-k, top-p; temperature 0
is greedy) and yields text pieces as the tokens come.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from attnkit.data.errors import DataError
from attnkit.data.text import EOS_ID
from attnkit.data.tokenizers import CharTokenizer, Tokenizer, load_tokenizer
from attnkit.decoding.sampling import check_sampling_args, generate
from attnkit.lm.config import LMRunConfig, load_lm_config
from attnkit.lm.data import IncrementalDecoder, encode_text
from attnkit.lm.task import evaluate_stream
from attnkit.models.decoder_lm import DecoderLM
from attnkit.training.checkpoint import load_checkpoint
from attnkit.training.runfolder import find_checkpoint
from attnkit.training.trainer import resolve_device

__all__ = ["Generator"]

log = logging.getLogger(__name__)

_SHOWN = {"\n": "\u21b5", " ": "\u2423", "\t": "\u21e5"}  # labels for plot ticks


class Generator:
    """A trained :class:`~attnkit.models.DecoderLM` with its tokenizer and run configuration."""

    def __init__(self, model: DecoderLM, tokenizer: Tokenizer, config: LMRunConfig) -> None:
        self.model, self.tokenizer, self.config = model.eval(), tokenizer, config

    @classmethod
    def load(cls, run_dir: str | Path, checkpoint: str = "best", device: str = "auto") -> Generator:
        """Load ``best`` (lowest validation loss), ``last``, or a checkpoint folder path."""
        cfg = load_lm_config(run_dir)
        tokenizer = load_tokenizer(Path(run_dir) / "tokenizer")
        model = DecoderLM(cfg.model)
        load_checkpoint(
            find_checkpoint(run_dir, checkpoint, cfg.train.keep_best), model, with_state=False
        )
        return cls(model.to(resolve_device(device)), tokenizer, cfg)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, text: str, what: str = "the prompt") -> list[int]:
        """Token ids of ``text``; unknown characters are an error that names them."""
        return encode_text(self.tokenizer, text, what=what)

    def line_start(self) -> int | None:
        """The id that starts a new line (a line break; BPE: EOS), or None when the
        training text had no line breaks."""
        if not isinstance(self.tokenizer, CharTokenizer):
            return EOS_ID
        (newline,) = self.tokenizer.encode("\n")
        return None if newline == self.tokenizer.unk_id else newline

    def _start_ids(self, prompt: str) -> list[int]:
        """The prompt's ids; an empty prompt starts a new line (the newline is not shown)."""
        ids = self.encode(prompt)
        if ids:
            return ids
        start = self.line_start()
        if start is None:
            raise DataError(
                "an empty prompt starts a new line, but the training text had no line breaks; "
                "give a prompt"
            )
        return [start]

    def generate(
        self,
        prompt: str = "",
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> Iterator[str]:
        """Continue ``prompt``, yielding text pieces as tokens are generated (streaming).

        Arguments are checked when this is called. A continuation ends after
        ``max_new_tokens`` tokens or just before the first ``stop`` string (not yielded; text
        that may begin a stop string is held back until it is clear).

        Args:
            prompt: text to continue ("" starts a new line).
            max_new_tokens: tokens to generate at most.
            temperature: > 0 samples from softmax(logits / temperature); 0 is greedy.
            top_k: sample among the k most probable tokens only.
            top_p: nucleus sampling probability in (0, 1].
            seed: seed of the sampling (same seed, same text).
            stop: strings that end the continuation.
        """
        check_sampling_args(max_new_tokens, temperature, top_k, top_p)
        stops = [s for s in stop if s]
        ids = self._start_ids(prompt)
        if len(ids) > self.model.max_len:  # the model sees its context only: say so
            log.warning(
                "the prompt has %d tokens; the model continues from the last %d (its context)",
                len(ids),
                self.model.max_len,
            )
        tokens = generate(
            self.model,
            ids,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
        )
        return _until_stop(_pieces(self.tokenizer, ids, tokens), stops)  # type: ignore[arg-type]

    def complete(
        self,
        prompt: str = "",
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> str:
        """All of :meth:`generate` (same arguments) as one string: the continuation only."""
        return "".join(self.generate(prompt, max_new_tokens, temperature, top_k, top_p, seed, stop))

    def samples(
        self, prompt: str = "", num_samples: int = 1, *, seed: int | None = None, **kwargs: object
    ) -> list[str]:
        """``num_samples`` continuations of ``prompt``; sample i uses seed ``seed + i``."""
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        return [
            self.complete(prompt, seed=None if seed is None else seed + i, **kwargs)  # type: ignore[arg-type]
            for i in range(num_samples)
        ]

    def evaluate_text(
        self, text: str, batch_size: int | None = None, what: str = "the text"
    ) -> dict[str, float]:
        """Loss (nats per token), perplexity and bits per character of ``text``, in
        non-overlapping windows of the run's block size (as validation does). Every token is
        scored, the first one after a line break (:meth:`line_start`), so that ``bpc`` is the
        text's total cost in bits over ``len(text)``; without line breaks in the vocabulary the
        first character is context only.

        ``what`` names the text in errors (e.g. its file).

        Raises:
            DataError: characters the tokenizer does not know, or no token to score.
        """
        ids = self.encode(text, what=what)
        start, chars = self.line_start(), len(text)
        if start is not None:
            ids = [start, *ids]
        else:
            chars -= 1  # one token per character: the first is context only
        if len(ids) < 2:
            raise DataError("the text is too short to score; give at least one character")
        self.model.eval()
        return evaluate_stream(
            self.model,
            torch.tensor(ids),
            block_size=self.model.max_len,
            batch_size=batch_size or self.config.data.batch_size,
            chars=chars,
            device=self.device,
        )

    def display_pieces(self, ids: Sequence[int]) -> list[str]:
        """Token strings for plot labels (line breaks, spaces and tabs shown as symbols)."""
        pieces = []
        for i, piece in zip(ids, self.tokenizer.pieces(ids), strict=True):
            if i == EOS_ID and not isinstance(self.tokenizer, CharTokenizer):
                piece = "\n"
            pieces.append("".join(_SHOWN.get(c, c) for c in piece))
        return pieces

    @torch.no_grad()
    def attention(self, text: str) -> tuple[list[str], list[Tensor]]:
        """The causal self-attention of every layer and head over ``text`` (its last
        ``max_len`` tokens when longer).

        Returns:
            ``(pieces, weights)``: the token labels and one (H, L, L) tensor per layer (future
            keys get exactly 0).
        """
        ids = self.encode(text, what="the text")
        if not ids:
            raise DataError("the text is empty; give some text to look at")
        if len(ids) > self.model.max_len:
            log.warning(
                "the text has %d tokens; showing the last %d (the model's context)",
                len(ids),
                self.model.max_len,
            )
            ids = ids[-self.model.max_len :]
        self.model.eval()
        _, weights = self.model.hidden(torch.tensor([ids], device=self.device), need_weights=True)
        assert weights is not None
        return self.display_pieces(ids), [w[0].float().cpu() for w in weights]  # (H, L, L) each


def _pieces(tokenizer: Tokenizer, context: list[int], tokens: Iterator[int]) -> Iterator[str]:
    decoder = IncrementalDecoder(tokenizer, context)
    for token in tokens:
        piece = decoder.push(int(token))
        if piece:
            yield piece


def _until_stop(pieces: Iterator[str], stops: list[str]) -> Iterator[str]:
    """``pieces`` up to (not including) the first stop string; text that could begin a stop
    string is held back until the next pieces tell."""
    if not stops:
        yield from pieces
        return
    held = ""
    for piece in pieces:
        held += piece
        cut = min((held.find(s) for s in stops if s in held), default=-1)
        if cut >= 0:
            if held[:cut]:
                yield held[:cut]
            return
        keep = max((k for s in stops for k in range(1, len(s)) if held.endswith(s[:k])), default=0)
        if len(held) > keep:
            yield held[: len(held) - keep]
            held = held[len(held) - keep :]
    if held:
        yield held
