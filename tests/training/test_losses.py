"""Tests for attnkit.training.losses against a float64 computation written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.training.losses import masked_cross_entropy, mean_token_loss, perplexity

PAD = 0


def naive_loss_sum(logits: torch.Tensor, targets: torch.Tensor, pad: int, eps: float) -> float:
    """Reference in float64 with Python loops: log-softmax by hand, the smoothed target by hand.

    Target q = (1 - eps) * one_hot(y) + eps / V over all V classes; loss = -sum_c q_c log p_c.
    """
    logits = logits.double()
    batch, length, vocab = logits.shape
    total = 0.0
    for b in range(batch):
        for t in range(length):
            y = int(targets[b, t])
            if y == pad:
                continue
            row = logits[b, t]
            shift = row.max()
            log_z = float(shift + torch.log(torch.exp(row - shift).sum()))
            log_p = [float(row[c]) - log_z for c in range(vocab)]
            q = [eps / vocab + (1.0 - eps if c == y else 0.0) for c in range(vocab)]
            total += -sum(qc * lp for qc, lp in zip(q, log_p, strict=True))
    return total


def make_batch(seed: int = 0, batch: int = 3, length: int = 5, vocab: int = 7):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, length, vocab, generator=g) * 3
    targets = torch.randint(1, vocab, (batch, length), generator=g)
    valid_lens = torch.tensor([length, 2, 0][:batch])
    for b, n in enumerate(valid_lens.tolist()):
        targets[b, n:] = PAD
    return logits, targets, valid_lens


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.5])
def test_sum_matches_float64_reference(eps: float) -> None:
    logits, targets, valid_lens = make_batch()
    loss, count = masked_cross_entropy(logits, targets, pad_id=PAD, label_smoothing=eps)
    assert count == int(valid_lens.sum()) and isinstance(count, int)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(naive_loss_sum(logits, targets, PAD, eps), rel=1e-5)


def test_reductions_agree() -> None:
    logits, targets, _ = make_batch(seed=1)
    total, n = masked_cross_entropy(logits, targets, label_smoothing=0.1)
    mean, n2 = masked_cross_entropy(logits, targets, label_smoothing=0.1, reduction="mean")
    per, n3 = masked_cross_entropy(logits, targets, label_smoothing=0.1, reduction="none")
    assert n == n2 == n3
    assert per.shape == targets.shape
    assert torch.all(per[targets == PAD] == 0)
    torch.testing.assert_close(per.sum(), total)
    torch.testing.assert_close(mean, total / n)
    assert mean_token_loss(total, n) == pytest.approx(total.item() / n)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_pad_positions_change_nothing(eps: float) -> None:
    logits, targets, _ = make_batch(seed=2)
    pad_pos = targets == PAD
    assert pad_pos.any()
    other = logits.clone()
    other[pad_pos] = torch.randn(int(pad_pos.sum()), logits.shape[-1]) * 50

    grads, losses = [], []
    for x in (logits, other):
        x = x.clone().requires_grad_(True)
        loss, _ = masked_cross_entropy(x, targets, label_smoothing=eps)
        loss.backward()
        grads.append(x.grad)
        losses.append(loss.detach())
    assert torch.equal(losses[0], losses[1])
    assert torch.equal(grads[0], grads[1])
    assert torch.all(grads[0][pad_pos] == 0)
    assert grads[0][~pad_pos].abs().sum() > 0


def test_course_semantics_mean_over_valid_tokens() -> None:
    """The course's masked loss: per-token CE, zeroed beyond each sequence's valid length,
    averaged over the valid tokens. Our (sum, count) pair divided gives the same number."""
    logits, targets, valid_lens = make_batch(seed=3)
    length = targets.shape[1]
    unweighted = torch.nn.CrossEntropyLoss(reduction="none")(
        logits.permute(0, 2, 1).double(), targets
    )  # (B, L)
    weights = (torch.arange(length)[None, :] < valid_lens[:, None]).double()  # (B, L)
    reference = (unweighted * weights).sum() / weights.sum()
    total, count = masked_cross_entropy(logits, targets, pad_id=PAD)
    assert mean_token_loss(total, count) == pytest.approx(reference.item(), rel=1e-6)


def test_accumulated_sums_equal_one_big_batch() -> None:
    """Splitting a batch into micro-batches and dividing the summed losses by the summed counts
    gives the mean over all tokens, as the trainer does."""
    logits, targets, _ = make_batch(seed=4)
    whole, n = masked_cross_entropy(logits, targets, label_smoothing=0.1)
    parts = [
        masked_cross_entropy(logits[i : i + 1], targets[i : i + 1], label_smoothing=0.1)
        for i in range(logits.shape[0])
    ]
    assert sum(c for _, c in parts) == n
    assert mean_token_loss(sum(s for s, _ in parts), n) == pytest.approx(whole.item() / n)


def test_no_pad_and_all_pad() -> None:
    logits, targets, _ = make_batch(seed=5)
    targets = targets.clamp(min=1)
    loss, n = masked_cross_entropy(logits, targets, pad_id=None)
    assert n == targets.numel()
    assert loss.item() == pytest.approx(naive_loss_sum(logits, targets, -1, 0.0), rel=1e-5)
    x = logits.clone().requires_grad_(True)
    loss, n = masked_cross_entropy(x, torch.zeros_like(targets), reduction="mean")
    loss.backward()
    assert n == 0 and loss.item() == 0.0 and torch.all(x.grad == 0)
    assert mean_token_loss(loss, 0) == 0.0


def test_half_precision_logits_are_upcast() -> None:
    logits, targets, _ = make_batch(seed=6)
    loss, _ = masked_cross_entropy(logits.bfloat16(), targets, label_smoothing=0.1)
    assert loss.dtype == torch.float32
    ref = naive_loss_sum(logits.bfloat16().float(), targets, PAD, 0.1)
    assert loss.item() == pytest.approx(ref, rel=1e-5)


def test_perplexity() -> None:
    assert perplexity(math.log(12.5)) == pytest.approx(12.5)
    assert perplexity(1e4) == math.inf


@pytest.mark.parametrize(
    ("logits", "targets", "kwargs", "match"),
    [
        (torch.zeros(2, 7), torch.zeros(2, dtype=torch.long), {}, "logits must be"),
        (torch.zeros(2, 3, 7), torch.zeros(2, 4, dtype=torch.long), {}, "targets shape"),
        (torch.zeros(2, 3, 7), torch.zeros(2, 3), {}, "integer"),
        (
            torch.zeros(2, 3, 7),
            torch.zeros(2, 3, dtype=torch.long),
            {"label_smoothing": 1.0},
            "label_smoothing",
        ),
        (
            torch.zeros(2, 3, 7),
            torch.zeros(2, 3, dtype=torch.long),
            {"reduction": "avg"},
            "reduction",
        ),
    ],
)
def test_bad_arguments(logits, targets, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        masked_cross_entropy(logits, targets, **kwargs)


# -- linear_cross_entropy: the output projection fused with the loss -----------------------------
def _projection_case(seed: int = 0, vocab: int = 11, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(3, 6, 8, generator=g, dtype=dtype).requires_grad_()
    weight = torch.randn(vocab, 8, generator=g, dtype=dtype).requires_grad_()
    targets = torch.randint(1, vocab, (3, 6), generator=g)
    targets[0, 4:] = PAD
    targets[2, 1:] = PAD
    return hidden, weight, targets


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("chunk", [1, 4, None])
def test_linear_cross_entropy_equals_logits_then_loss(eps: float, chunk: int | None) -> None:
    """Value against the hand-written float64 reference; gradients (with an upstream factor, as
    the trainer's normalisation applies) against autograd through PyTorch's cross_entropy."""
    from attnkit.training.losses import linear_cross_entropy

    hidden, weight, targets = _projection_case()
    logits = torch.nn.functional.linear(hidden, weight)
    ref, n_ref = masked_cross_entropy(logits, targets, pad_id=PAD, label_smoothing=eps)
    ref_grads = torch.autograd.grad(ref * 0.37, (hidden, weight))
    fused, n = linear_cross_entropy(
        hidden, weight, targets, pad_id=PAD, label_smoothing=eps, chunk_size=chunk
    )
    grads = torch.autograd.grad(fused * 0.37, (hidden, weight))
    assert n == n_ref == int((targets != PAD).sum())
    expected = naive_loss_sum(logits.detach(), targets, PAD, eps)
    assert float(fused.detach()) == pytest.approx(expected, rel=1e-12)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # pad positions get exactly zero gradient
    assert torch.all(grads[0][targets == PAD] == 0)


def test_linear_cross_entropy_float32_and_no_pad() -> None:
    from attnkit.training.losses import linear_cross_entropy

    hidden, weight, targets = _projection_case(seed=3, vocab=300, dtype=torch.float32)
    targets = targets.clamp_min(1)  # no padding
    ref, _ = masked_cross_entropy(
        torch.nn.functional.linear(hidden, weight), targets, pad_id=None, label_smoothing=0.1
    )
    fused, n = linear_cross_entropy(hidden, weight, targets, pad_id=None, label_smoothing=0.1)
    assert n == targets.numel()
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
    fused.backward()
    assert hidden.grad is not None and weight.grad is not None
    assert hidden.grad.dtype == torch.float32 and weight.grad.dtype == torch.float32


def test_linear_cross_entropy_without_grad_and_all_pad() -> None:
    from attnkit.training.losses import linear_cross_entropy

    hidden, weight, targets = _projection_case()
    with torch.no_grad():
        loss, n = linear_cross_entropy(hidden, weight, targets, label_smoothing=0.1)
    ref, _ = masked_cross_entropy(
        torch.nn.functional.linear(hidden, weight).detach(), targets, label_smoothing=0.1
    )
    assert not loss.requires_grad
    assert float(loss) == pytest.approx(float(ref), rel=1e-12)
    empty, n = linear_cross_entropy(hidden, weight, torch.zeros_like(targets))
    assert n == 0 and float(empty.detach()) == 0.0
    empty.backward()
    assert torch.all(hidden.grad == 0) and torch.all(weight.grad == 0)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(2, 4, dtype=torch.long)), "targets"),
        ((torch.randn(2, 3, 4), torch.randn(5, 3), torch.zeros(2, 3, dtype=torch.long)), "weight"),
        ((torch.randn(2, 3, 4), torch.randn(5, 4), torch.zeros(2, 3)), "integer"),
        (
            (
                torch.randn(2, 3, 4),
                torch.randn(5, 4),
                torch.zeros(2, 3, dtype=torch.long),
                0,
                0.0,
                0,
            ),
            "chunk_size",
        ),
    ],
)
def test_linear_cross_entropy_bad_arguments(args, match) -> None:
    from attnkit.training.losses import linear_cross_entropy

    with pytest.raises(ValueError, match=match):
        linear_cross_entropy(*args)


def test_seq2seq_objective_equals_model_logits_loss() -> None:
    """The trainer's objective (fused path for the Transformer) gives the same loss and the
    same parameter gradients as the model's logits through masked_cross_entropy."""
    from attnkit.config import TransformerConfig
    from attnkit.models.transformer import Transformer
    from attnkit.training.losses import Seq2SeqObjective

    torch.manual_seed(0)
    model = Transformer(
        TransformerConfig(
            src_vocab_size=30,
            tgt_vocab_size=30,
            d_model=16,
            num_heads=2,
            ffn_hidden=32,
            num_encoder_layers=1,
            num_decoder_layers=1,
            dropout=0.0,
        )
    ).double()
    src = torch.randint(4, 30, (3, 5))
    src_mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2, [1] * 4 + [0]], dtype=torch.bool)
    tgt = torch.randint(4, 30, (3, 7))
    tgt[1, 5:] = PAD
    objective = Seq2SeqObjective(model, pad_id=PAD, label_smoothing=0.1)
    assert objective.fused
    loss, n = objective(src, tgt[:, :-1], src_mask, tgt[:, 1:])
    grads = torch.autograd.grad(loss, list(model.parameters()))
    ref, n_ref = masked_cross_entropy(model(src, tgt[:, :-1], src_mask), tgt[:, 1:], PAD, 0.1)
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    assert n == n_ref
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_linear_cross_entropy_under_bf16_autocast() -> None:
    """Under autocast (as the trainer runs on CUDA) the projection runs in the autocast dtype and
    the softmax in float32; value and gradients stay close to the float32 computation."""
    from attnkit.training.losses import linear_cross_entropy

    hidden, weight, targets = _projection_case(seed=4, vocab=64, dtype=torch.float32)
    ref, _ = masked_cross_entropy(
        torch.nn.functional.linear(hidden, weight), targets, label_smoothing=0.1
    )
    ref_grads = torch.autograd.grad(ref, (hidden, weight))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = linear_cross_entropy(hidden, weight, targets, label_smoothing=0.1)
    grads = torch.autograd.grad(loss, (hidden, weight))
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=0)
    for got, want in zip(grads, ref_grads, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=5e-2, atol=5e-2)
