"""True case by default, paragraphs in, blank lines kept (issue 19; blank lines: issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sacrebleu
import torch

from attnkit.cli import main
from attnkit.data.sentences import split_sentences
from attnkit.data.tokenizers import SentencePieceTokenizer
from attnkit.translation.config import preset_for, run_config_from_dict
from attnkit.translation.run import train_translator
from attnkit.translation.translator import Translator
from tests.translation.test_translation import tiny_config


def test_text_corpora_keep_their_case_the_course_presets_lowercase() -> None:
    assert preset_for("my/train.tsv", "transformer")["data"].get("lowercase", False) is False
    assert run_config_from_dict({"data": {"source": "x.tsv"}}).data.lowercase is False
    assert preset_for("dates", "transformer")["data"]["lowercase"] is True
    assert preset_for("fra-eng", "transformer")["data"]["lowercase"] is True  # d2l's download


def test_a_cased_tokenizer_keeps_names_acronyms_and_numbers() -> None:
    texts = ["Tom lives in Paris.", "NASA sent 3 people.", "Tom est à Paris."] * 20
    tok = SentencePieceTokenizer.train(texts, vocab_size=60, lowercase=False)
    for text in ("Tom lives in Paris.", "NASA sent 3 people."):
        assert tok.decode(tok.encode(text)) == text


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "dates"
    torch.manual_seed(0)
    train_translator(tiny_config(epochs=6), run)
    return run


def test_paragraphs_are_split_translated_as_one_batch_and_joined(run: Path) -> None:
    translator = Translator.load(run, device="cpu")
    paragraph = "3 may 2001. Le 4 juillet 1999. 12 june 1987!"
    sentences = split_sentences(paragraph)
    assert len(sentences) == 3
    (whole,) = translator.translate([paragraph], beam_size=1)
    one_by_one = [translator.translate([s], beam_size=1, split=False)[0] for s in sentences]
    assert whole.source == paragraph and [p.source for p in whole.parts] == sentences
    assert [p.text for p in whole.parts] == [t.text for t in one_by_one]
    assert whole.text == " ".join(t.text for t in one_by_one)
    assert whole.score == pytest.approx(sum(t.score for t in one_by_one))
    (plain,) = translator.translate([sentences[0]], beam_size=1)
    assert plain.parts is None and plain.text == one_by_one[0].text


def test_blank_lines_give_blank_lines_in_order(
    run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import io

    lines = ["3 may 2001", "", "le 4 juillet 1999", "   ", "12 june 1987"]
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(x + "\n" for x in lines)))
    assert main(["translate", "--run", str(run), "--beam", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    expected = [t.text for t in Translator.load(run).translate(lines, beam_size=1)]
    assert out == expected and len(out) == 5
    assert out[1] == "" and out[3] == "" and all(out[i] for i in (0, 2, 4))
    # The same lines from --file.
    listed = tmp_path / "in.txt"
    listed.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    assert main(["translate", "--run", str(run), "--beam", "1", "--file", str(listed)]) == 0
    assert capsys.readouterr().out.splitlines() == expected
    # Only blank input: blank output, not an error.
    assert main(["translate", "--run", str(run), "", "  "]) == 0
    assert capsys.readouterr().out == "\n\n"
    assert Translator.load(run).translate([""])[0].text == ""
    assert main(["attention", "--run", str(run), " ", "--out", "x.png"]) == 2
    assert "the sentence is empty" in capsys.readouterr().err


def test_validation_bleu_is_cased_for_a_cased_run(run: Path) -> None:
    from attnkit.translation.task import TranslationTask, prepare_data

    translator = Translator.load(run, device="cpu")
    cfg = translator.config
    data = prepare_data(cfg.data, run, cfg.data.max_len)
    refs = [["Tom is in Paris.", "Tom est à Paris."], ["NASA sent 3 people."]] * 5
    data.valid_refs = [(f"source {i}", r) for i, r in enumerate(refs)]
    hyps = ["tom is in paris.", "NASA sent 3 People."] * 5  # case errors only
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(2)]
    found = {}
    for cased in (True, False):
        task = TranslationTask(
            data,
            max_tokens=1200,
            seed=0,
            label_smoothing=0.0,
            decode=cfg.decode,
            device=torch.device("cpu"),
            cased=cased,
        )
        task.translate_valid = lambda model, shard=(0, 1): hyps  # type: ignore[method-assign]
        with torch.no_grad():
            found[cased] = task.evaluate(translator.model)
    assert found[True]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, streams).score)
    assert found[False]["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu(hyps, streams, lowercase=True).score
    )
    assert found[False]["bleu"] == pytest.approx(100.0) and found[True]["bleu"] < 60
    assert found[True]["accuracy"] == 0.0 and found[False]["accuracy"] == 1.0


def test_a_cased_run_reads_course_style_lower_case_as_ordinary_text() -> None:
    import dataclasses

    texts = ["I lost.", "I'm home.", "He's calm.", "Go.", "Tom is here."] * 30
    tok = SentencePieceTokenizer.train(texts, vocab_size=60, lowercase=False)
    cfg = run_config_from_dict({"data": {"source": "x.tsv"}})
    cased = Translator(torch.nn.Linear(1, 1), tok, tok, config=cfg)
    course = ["i lost .", "i'm home .", "he's calm .", "go ."]
    assert cased.encode_sources(course) == [tok.encode(t) for t in texts[:4]]
    lower = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, lowercase=True))
    assert Translator(torch.nn.Linear(1, 1), tok, tok, config=lower).encode_sources(
        ["i lost ."]
    ) == [tok.encode("i lost.")]  # a lower-casing run is left as it was
