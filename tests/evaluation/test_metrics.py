"""Metrics: parity with direct sacrebleu calls, the course BLEU against hand computations."""

from __future__ import annotations

import math

import pytest
import sacrebleu
import torch
from sacrebleu.metrics import BLEU, CHRF

from attnkit.evaluation import (
    MetricResult,
    accuracy,
    corpus_bleu,
    corpus_chrf,
    course_bleu,
    reference_streams,
    token_accuracy,
)

HYPS = [
    "The cat sat on the mat.",
    "A dog barks loudly at night.",
    "It is raining today.",
    "He goes to school by bus.",
]
REFS_A = [
    "The cat is sitting on the mat.",
    "The dog barks loudly at night.",
    "It rains today.",
    "He takes the bus to school.",
]
REFS_B = ["A cat sat on the mat.", "A dog is barking at night.", None, "He goes to school by bus."]


def test_bleu_single_reference_matches_sacrebleu() -> None:
    ours = corpus_bleu(HYPS, REFS_A)
    theirs = sacrebleu.corpus_bleu(HYPS, [REFS_A])
    assert isinstance(ours, MetricResult)
    assert ours.name == "BLEU"
    assert ours.score == pytest.approx(theirs.score, abs=1e-12)
    assert ours.details["bp"] == pytest.approx(theirs.bp)
    assert ours.details["precisions"] == pytest.approx(theirs.precisions)
    assert ours.details["sys_len"] == theirs.sys_len and ours.details["ref_len"] == theirs.ref_len
    assert "nrefs:1" in ours.signature and "tok:13a" in ours.signature
    assert "version:" in ours.signature


def test_bleu_variable_references_match_sacrebleu_streams_with_none() -> None:
    per_hyp = [[a, b] if b is not None else [a] for a, b in zip(REFS_A, REFS_B, strict=True)]
    ours = corpus_bleu(HYPS, per_hyp)
    metric = BLEU()
    theirs = metric.corpus_score(HYPS, [REFS_A, REFS_B])  # streams written by hand, None padded
    assert ours.score == pytest.approx(theirs.score, abs=1e-12)
    assert ours.signature == str(metric.get_signature())
    assert "nrefs:var" in ours.signature
    # The second reference really counts: the score differs from single-reference BLEU.
    assert ours.score != pytest.approx(corpus_bleu(HYPS, REFS_A).score)


def test_none_padding_equals_duplicated_reference() -> None:
    # Independent check of the None handling: repeating a segment's only reference changes neither
    # the clipped counts nor the closest reference length, so the score must be the same.
    padded = [[a, b] if b is not None else [a] for a, b in zip(REFS_A, REFS_B, strict=True)]
    duplicated = [[a, b if b is not None else a] for a, b in zip(REFS_A, REFS_B, strict=True)]
    assert corpus_bleu(HYPS, padded).score == pytest.approx(corpus_bleu(HYPS, duplicated).score)


def test_bleu_options_are_passed_through() -> None:
    hyps, refs = ["THE CAT SAT ON THE MAT ."], ["the cat sat on the mat ."]
    ours = corpus_bleu(hyps, refs, lowercase=True, tokenize="none")
    theirs = BLEU(lowercase=True, tokenize="none")
    assert ours.score == pytest.approx(theirs.corpus_score(hyps, [refs]).score)
    assert ours.score == pytest.approx(100.0)
    assert "case:lc" in ours.signature and "tok:none" in ours.signature


@pytest.mark.parametrize("word_order", [0, 2])
def test_chrf_matches_sacrebleu(word_order: int) -> None:
    ours = corpus_chrf(HYPS, REFS_A, word_order=word_order)
    theirs = CHRF(word_order=word_order).corpus_score(HYPS, [REFS_A])
    assert ours.score == pytest.approx(theirs.score, abs=1e-12)
    assert ours.name == theirs.name
    assert f"nw:{word_order}" in ours.signature


def test_chrf_multi_reference_matches_sacrebleu() -> None:
    per_hyp = [[a, b] if b is not None else a for a, b in zip(REFS_A, REFS_B, strict=True)]
    ours = corpus_chrf(HYPS, per_hyp)
    theirs = CHRF().corpus_score(HYPS, [REFS_A, REFS_B])
    assert ours.score == pytest.approx(theirs.score, abs=1e-12)


def test_reference_streams_transposes_and_pads() -> None:
    streams = reference_streams(["a", ["b1", "b2", "b3"], ("c1", "c2")], 3)
    assert streams == [["a", "b1", "c1"], [None, "b2", "c2"], [None, "b3", None]]


def test_length_mismatch_names_both_lengths() -> None:
    with pytest.raises(ValueError, match=r"4 hypotheses but 3 references"):
        corpus_bleu(HYPS, REFS_A[:3])
    with pytest.raises(ValueError, match=r"4 hypotheses but 1 references"):
        corpus_chrf(HYPS, [REFS_A])  # sacrebleu-style streams are rejected, not misread


@pytest.mark.parametrize(
    ("hyps", "refs", "match"),
    [
        ([], [], "empty"),
        ("a sentence", ["a sentence"], "list of strings"),
        (["a"], [[]], r"references\[0\] is empty"),
        (["a"], [[3]], "expected strings"),
    ],
)
def test_bad_inputs_raise(hyps, refs, match) -> None:
    with pytest.raises(ValueError, match=match):
        corpus_bleu(hyps, refs)


def test_metric_result_float_and_str() -> None:
    res = corpus_bleu(HYPS, REFS_A)
    assert float(res) == res.score
    assert "BLEU" in str(res) and res.signature in str(res)


# ---------------------------------------------------------------- the course's BLEU, by hand
def test_course_bleu_identical_is_one() -> None:
    assert course_bleu("i lost .", "i lost .", k=2) == 1.0
    assert course_bleu("a b c d e", "a b c d e", k=4) == 1.0


def test_course_bleu_published_example() -> None:
    # d2l's French translation example: "il est bon ." for "il est calme ." prints bleu 0.658.
    # p1 = 3/4 (three of four unigrams match), p2 = 1/3 ("il est" only), same lengths.
    expected = math.sqrt(3 / 4) * (1 / 3) ** 0.25
    assert course_bleu("il est bon .", "il est calme .", k=2) == pytest.approx(expected, rel=1e-15)
    assert round(expected, 3) == 0.658


def test_course_bleu_brevity_penalty() -> None:
    # All n-grams match, prediction half as long: exp(1 - 4/2) = e^-1.
    assert course_bleu("a b", "a b c d", k=2) == pytest.approx(math.exp(-1.0), rel=1e-15)
    # Longer prediction than label: no penalty (min(0, .)).
    assert course_bleu("a b c", "a b", k=1) == pytest.approx((2 / 3) ** 0.5, rel=1e-15)


def test_course_bleu_clips_repeated_ngrams() -> None:
    # "the" occurs once in the label, so only one of four predicted "the" counts: p1 = 1/4.
    assert course_bleu("the the the the", "the cat", k=1) == pytest.approx(0.5, rel=1e-15)


def test_course_bleu_orders_and_zero_matches() -> None:
    # k larger than the prediction: only n = 1 is used; bp = exp(1 - 2/1).
    assert course_bleu("a", "a b", k=4) == pytest.approx(math.exp(-1.0), rel=1e-15)
    # No bigram match at all gives 0.
    assert course_bleu("a b c", "c b a", k=2) == 0.0
    # k = 3 by hand: p1 = 4/5, p2 = 3/4, p3 = 2/3, bp = exp(1 - 6/5).
    expected = math.exp(1 - 6 / 5) * (4 / 5) ** 0.5 * (3 / 4) ** 0.25 * (2 / 3) ** 0.125
    got = course_bleu("x b c d e", "a b c d e f", k=3)
    assert got == pytest.approx(expected, rel=1e-15)


def test_course_bleu_edge_cases() -> None:
    assert course_bleu("", "a b", k=2) == 0.0
    assert course_bleu("", "", k=2) == 1.0
    with pytest.raises(ValueError, match="k must be a positive int"):
        course_bleu("a", "a", k=0)


# ---------------------------------------------------------------- accuracies
def test_accuracy_exact_match() -> None:
    assert accuracy(["a b", "c", "d"], ["a b", "c ", "d"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="3 predictions but 2 targets"):
        accuracy(["a", "b", "c"], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        accuracy([], [])


def test_token_accuracy_against_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=gen)
    targets = torch.randint(1, 7, (3, 5), generator=gen)
    targets[0, 3:] = 0
    targets[2, 1:] = 0
    targets[1, 2] = int(logits[1, 2].argmax())  # at least one hit
    hits = total = 0
    for b in range(3):
        for t in range(5):
            if int(targets[b, t]) != 0:
                total += 1
                hits += int(max(range(7), key=lambda v: float(logits[b, t, v]))) == int(
                    targets[b, t]
                )
    assert token_accuracy(logits, targets, pad_id=0) == pytest.approx(hits / total)
    everything = (logits.argmax(-1) == targets).float().mean().item()
    assert token_accuracy(logits, targets, pad_id=None) == pytest.approx(everything)


def test_token_accuracy_bad_shapes_and_all_padding() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        token_accuracy(torch.zeros(2, 4, 5), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="only padding"):
        token_accuracy(torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long))
