"""Sampling-based generation for decoder-only language models (:class:`~attnkit.models.DecoderLM`).

Each step scores the next token from the last position's logits: ``temperature`` divides them
(0 means greedy: the argmax), then ``top_k`` keeps the k most probable tokens and ``top_p`` keeps
the smallest set of most probable tokens whose probability adds up to at least p (nucleus
sampling, Holtzman et al. 2020); a token is drawn from what is left, renormalised.

The model is used only through ``model(ids, cache=...) -> (logits, _)``, ``model.new_cache()``
and ``model.max_len``. With ``use_cache`` each step feeds only the newest token. Once the
context is longer than ``max_len`` it slides: the cache is rebuilt from the last ``max_len``
tokens, so cached and uncached generation see the same context and give the same tokens.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "check_sampling_args",
    "top_k_filter",
    "top_p_filter",
    "sample_next",
    "generate",
    "generate_tokens",
]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_sampling_args(
    max_new_tokens: int = 0,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> None:
    """Raise a one-line ValueError naming the first invalid argument."""
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not isinstance(temperature, int | float) or not temperature >= 0 or math.isinf(temperature):
        raise ValueError(
            f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}"
        )
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise ValueError(f"top_k must be an int >= 1 or None, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, int | float) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the ``k`` largest logits of each row (ties with the k-th are kept); others -> -inf.

    Shapes: (..., V) -> (..., V).
    """
    check_sampling_args(top_k=k)
    if k >= logits.shape[-1]:
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, -math.inf)


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter: keep the smallest set of most probable tokens with total probability
    >= ``p`` (the most probable token is always kept); the others' logits become -inf.

    A token is dropped when the tokens ranked before it already reach ``p``.
    Shapes: (..., V) -> (..., V).
    """
    check_sampling_args(top_p=p)
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (..., V) each
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # (..., V)
    before = F.pad(cum[..., :-1], (1, 0))  # (..., V) mass of the tokens ranked above
    drop_sorted = before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # (..., V) back in vocabulary order
    return logits.masked_fill(drop, -math.inf)


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Choose one token per row from next-token logits.

    Args:
        logits: next-token logits.
        temperature: divides the logits; 0 takes the argmax (``top_k``/``top_p`` then unused).
        top_k: keep only the k most probable tokens (None: all).
        top_p: nucleus probability in (0, 1] (None or 1: all).
        generator: random source (on the logits' device) for reproducible draws.

    Returns:
        the chosen ids. Shapes: (B, V) -> (B,) long.
    """
    check_sampling_args(temperature=temperature, top_k=top_k, top_p=top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)  # (B,)
    scores = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    if top_k is not None:
        scores = top_k_filter(scores, top_k)
    if top_p is not None:
        scores = top_p_filter(scores, top_p)
    probs = scores.softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)


def _prompt_tensor(prompt_ids: Tensor | Sequence[int], device: torch.device) -> tuple[Tensor, bool]:
    """The prompt as (B, L) long on ``device`` and whether it was a single sequence."""
    single = not isinstance(prompt_ids, Tensor) or prompt_ids.dim() == 1
    ids = torch.as_tensor(prompt_ids, device=device)
    if single:
        ids = ids.reshape(1, -1)  # (1, L)
    if ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(
            f"prompt_ids must be (B, L) or (L,) integer token ids (or a list of "
            f"ints), got shape {tuple(ids.shape)} dtype {ids.dtype}"
        )
    if ids.shape[1] == 0:
        raise ValueError("prompt_ids must hold at least one token (e.g. BOS)")
    return ids.long(), single


def generate(
    model: nn.Module,
    prompt_ids: Tensor | Sequence[int],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    eos_id: int | None = None,
    use_cache: bool = True,
) -> Iterator[int] | Iterator[Tensor]:
    """Generate tokens one at a time, for streaming.

    Arguments are checked when this is called; the tokens come as the iterator is consumed.
    Put the model in eval mode first (dropout would otherwise stay on).

    Args:
        model: a decoder-only LM (``model(ids, cache=) -> (logits, _)``, ``new_cache()``,
            ``max_len``).
        prompt_ids: (B, L) ids (all rows the same length), or one sequence as (L,) or a list.
        max_new_tokens: number of tokens to generate at most (0: none).
        temperature: > 0 samples from ``softmax(logits / temperature)``; 0 is greedy.
        top_k: sample among the k most probable tokens only.
        top_p: nucleus sampling probability in (0, 1].
        generator: a ``torch.Generator`` on the model's device; or give ``seed`` instead.
        seed: seed of a fresh generator (same seed, same tokens).
        eos_id: stop a row after it emits this id (the EOS itself is yielded); once every row
            has stopped, the iterator ends. Finished rows of a batch yield ``eos_id`` again.
        use_cache: incremental decoding with the model's KV cache; False recomputes the whole
            (cropped) context every step.

    Returns:
        an iterator of new ids: ints for a single sequence, (B,) long tensors for a batch.
    """
    check_sampling_args(max_new_tokens, temperature, top_k, top_p)
    if generator is not None and seed is not None:
        raise ValueError("generator and seed: give one of them, not both")
    device = next(model.parameters()).device
    ids, single = _prompt_tensor(prompt_ids, device)
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    steps = _steps(
        model, ids, max_new_tokens, temperature, top_k, top_p, generator, eos_id, use_cache
    )
    if single:
        return (int(token[0]) for token in steps)
    return steps


def _steps(
    model: nn.Module,
    tokens: Tensor,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
    eos_id: int | None,
    use_cache: bool,
) -> Iterator[Tensor]:
    """The generation loop: yields (B,) new ids per step. Inference mode is entered for each
    step's work only, never across a ``yield`` (the caller's code runs in its own mode)."""
    window = int(model.max_len)
    cache = None
    done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)  # (B,)
    for _ in range(max_new_tokens):
        with torch.inference_mode():
            if not use_cache:
                logits, _ = model(tokens[:, -window:])  # (B, min(T, window), V)
            elif cache is not None and cache.offset < window:  # room for the newest token
                logits, _ = model(tokens[:, -1:], cache=cache)  # (B, 1, V)
            else:  # first step, or the window is full: (re)build it on the last tokens
                cache = model.new_cache()
                logits, _ = model(tokens[:, -window:], cache=cache)  # (B, min(T, window), V)
            nxt = sample_next(logits[:, -1], temperature, top_k, top_p, generator)  # (B,)
            if eos_id is not None:
                nxt = nxt.masked_fill(done, eos_id)
                done = done | (nxt == eos_id)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)  # (B, T + 1)
        yield nxt.clone()
        if eos_id is not None and bool(done.all()):
            return


def generate_tokens(
    model: nn.Module, prompt_ids: Tensor | Sequence[int], **kwargs: object
) -> list[int] | list[list[int]]:
    """All of :func:`generate` at once (same arguments): the new ids without the prompt.

    Returns:
        a list of ids for a single sequence, or one list per row for a batch; a row that
        emitted ``eos_id`` ends with it (the padding after it is removed).
    """
    single = not isinstance(prompt_ids, Tensor) or prompt_ids.dim() == 1
    out = list(generate(model, prompt_ids, **kwargs))  # type: ignore[arg-type]
    if single:
        rows: list[list[int]] = [out]  # type: ignore[list-item]
    elif out:
        rows = torch.stack(out, dim=1).tolist()  # type: ignore[arg-type]  # (B, T)
    else:
        rows = [[] for _ in range(prompt_ids.shape[0])]  # type: ignore[union-attr]
    eos_id = kwargs.get("eos_id")
    if eos_id is not None:
        rows = [row[: row.index(eos_id) + 1] if eos_id in row else row for row in rows]
    return rows[0] if single else rows
