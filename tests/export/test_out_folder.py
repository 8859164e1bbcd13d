"""Where an export may be written, and the refusals that need no export engine: ``--out`` never
replaces anything but an earlier export of the same format (or an empty folder), a failed export
leaves nothing behind, and ``--run`` / ``--model`` / ``--checkpoint`` mistakes and missing
optional packages get one line that says what to do.

Reference: the rules of ``attnkit export --help`` and the project's error-message standard (one
line naming the argument and the fix).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from attnkit.cli import main
from attnkit.config import ConfigError
from attnkit.export.ct2 import CT2_LAYOUT, export_ctranslate2
from attnkit.export.folders import check_out_folder, staged_folder
from attnkit.export.onnx import (
    ONNX_LAYOUT,
    OnnxClassifier,
    OnnxSentenceEncoder,
    export_onnx,
    import_onnxruntime,
)


def fake_run(folder: Path, **config: object) -> Path:
    """A run folder with only a config.json (enough for the checks made before any work)."""
    folder.mkdir(parents=True)
    sections = {"model_type": "transformer", "model": {}, **config}
    (folder / "config.json").write_text(json.dumps({"run_format": 1, "config": sections}))
    (folder / "checkpoints").mkdir()
    return folder


def fake_export(folder: Path, *files: str) -> Path:
    """A folder laid out as an earlier CTranslate2 export (plus ``files``)."""
    folder.mkdir(parents=True)
    for name in ("attnkit.json", "model.bin", "config.json", "shared_vocabulary.json", *files):
        (folder / name).write_text("old")
    (folder / "tokenizer").mkdir()
    return folder


def leftovers(parent: Path) -> list[str]:
    """Temporary folders an export left beside its output."""
    return sorted(p.name for p in parent.iterdir() if p.name.endswith((".tmp", ".old")))


def test_out_folder_accepts_new_empty_and_earlier_exports(tmp_path: Path) -> None:
    check_out_folder(tmp_path / "new" / "deeper", CT2_LAYOUT)
    (tmp_path / "empty").mkdir()
    check_out_folder(tmp_path / "empty", CT2_LAYOUT)
    check_out_folder(fake_export(tmp_path / "ct2"), CT2_LAYOUT)


def test_out_folder_refuses_what_it_would_destroy(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "runs" / "x")
    not_export = r"is a folder that is not a CTranslate2 export \(it holds checkpoints, config"
    with pytest.raises(FileExistsError, match=not_export + r".json\); choose a new folder or remo"):
        check_out_folder(run, CT2_LAYOUT)
    with pytest.raises(FileExistsError, match="is the folder being exported"):
        check_out_folder(run / ".", CT2_LAYOUT, sources=[run])
    with pytest.raises(FileExistsError, match="holds the folder being exported"):
        check_out_folder(tmp_path / "runs", CT2_LAYOUT, sources=[run])
    check_out_folder(run / "export" / "ctranslate2", CT2_LAYOUT, sources=[run])  # inside: fine
    (tmp_path / "precious.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"^--out \S+precious.txt is a file, not a folder"):
        check_out_folder(tmp_path / "precious.txt", CT2_LAYOUT)
    with pytest.raises(NotADirectoryError, match=r"precious.txt is a file, not a folder$"):
        check_out_folder(tmp_path / "precious.txt" / "sub", CT2_LAYOUT)
    earlier = fake_export(tmp_path / "ct2", "notes.txt")  # an export holding the user's file
    with pytest.raises(FileExistsError, match=r"also holds notes.txt, which replacing it would"):
        check_out_folder(earlier, CT2_LAYOUT)
    with pytest.raises(FileExistsError, match="is a folder that is not an? ONNX export"):
        check_out_folder(fake_export(tmp_path / "other"), ONNX_LAYOUT)  # another format's


def test_staged_folder_replaces_only_when_complete(tmp_path: Path) -> None:
    out = fake_export(tmp_path / "ct2")
    with pytest.raises(RuntimeError, match="half way"), staged_folder(out, CT2_LAYOUT) as tmp:
        (tmp / "model.bin").write_text("new, half")
        raise RuntimeError("half way")
    assert (out / "model.bin").read_text() == "old" and leftovers(tmp_path) == []
    with staged_folder(out, CT2_LAYOUT) as tmp:
        (tmp / "model.bin").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["model.bin"]
    assert (out / "model.bin").read_text() == "new" and leftovers(tmp_path) == []
    fresh = tmp_path / "a" / "b" / "out"  # the folders it made for a failed export go too
    with pytest.raises(RuntimeError), staged_folder(fresh, CT2_LAYOUT):
        raise RuntimeError("no")
    assert not (tmp_path / "a").exists()


def test_what_is_checked_is_what_is_replaced(tmp_path: Path) -> None:
    """``link/..`` and a folder filled while the export ran: the swap never replaces a folder
    the check did not accept (the real path is used for both, and checked again at the end)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "precious.txt").write_text("mine")
    exp = fake_export(tmp_path / "elsewhere" / "exp")
    (work / "link").symlink_to(exp / "tokenizer")
    via_link = work / "link" / ".."  # textually "work", really "elsewhere/exp"
    check_out_folder(via_link, CT2_LAYOUT)  # the earlier export is what it names
    with staged_folder(via_link, CT2_LAYOUT) as tmp:
        (tmp / "attnkit.json").write_text("{}")
        (tmp / "model.bin").write_text("new")
    assert (work / "precious.txt").read_text() == "mine" and (work / "link").is_symlink()
    assert (tmp_path / "elsewhere" / "exp" / "model.bin").read_text() == "new"
    out = fake_export(tmp_path / "ct2")
    with pytest.raises(FileExistsError, match="also holds late.txt"):
        with staged_folder(out, CT2_LAYOUT) as tmp:
            (tmp / "model.bin").write_text("new")
            (out / "late.txt").write_text("written while the export ran")
    assert (out / "late.txt").is_file() and (out / "model.bin").read_text() == "old"
    assert leftovers(tmp_path) == []


def test_export_never_writes_over_a_foreign_folder_or_the_run(tmp_path: Path, capsys) -> None:
    mine = tmp_path / "somedir"
    mine.mkdir()
    (mine / "precious.txt").write_text("mine")
    (tmp_path / "afile").write_text("mine")
    for fmt, task in (("ctranslate2", "translation"), ("onnx", "classification")):
        run = fake_run(tmp_path / fmt / "run", task=task)
        for out in (mine, run, run.parent, tmp_path / "afile"):
            args = ["export", "--run", str(run), "--format", fmt, "--out", str(out)]
            assert main(args) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith(f"attnkit export: error: --out {out}")
        assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json"]
        assert leftovers(tmp_path) == leftovers(run.parent) == []
    assert (mine / "precious.txt").read_text() == "mine" and (tmp_path / "afile").is_file()


def test_run_and_model_mistakes_get_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    bert = tmp_path / "bert"  # a pretrained checkpoint, not a run
    bert.mkdir()
    (bert / "config.json").write_text("{}")
    cases = {
        "nosuch": "--run {}: no such folder; pass the folder of a training run",
        "empty": "--run {}: not a run folder (no config.json); pass the folder of a training run",
        "afile": "--run {}: is a file, not a folder; pass the folder of a training run",
    }
    for fmt in ("ctranslate2", "onnx"):
        for name, want in cases.items():
            run = str(tmp_path / name)
            assert main(["export", "--run", run, "--format", fmt]) == 2
            assert capsys.readouterr().err.strip() == "attnkit export: error: " + want.format(run)
    assert main(["export", "--run", str(bert), "--format", "onnx"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "is not a run folder (no config.json of a training run); a pretrained encoder is "
            "exported with --model"
        )
    )
    # --checkpoint picks a run's checkpoint: with --model it would be ignored, so it is refused
    assert main(["export", "--model", str(bert), "--format", "onnx", "--checkpoint", "last"]) == 2
    assert capsys.readouterr().err.strip() == (
        "attnkit export: error: --checkpoint chooses a checkpoint of --run; a pretrained encoder "
        "(--model) has one set of weights: drop --checkpoint"
    )


def test_onnxruntime_engines_given_a_run_say_what_it_is(tmp_path: Path) -> None:
    translation = fake_run(tmp_path / "dates")
    with pytest.raises(
        ConfigError,
        match=r"dates is a translation run, not a sentence encoder, and cannot be exported to "
        r"ONNX \(translate with it on the default engine: `attnkit translate --run \S+dates`\); "
        r"--engine onnxruntime embeds with a folder made by `attnkit export --format onnx",
    ):
        OnnxSentenceEncoder.load(translation)
    with pytest.raises(ConfigError, match=r"is a translation run, not a ViT run, and cannot be "):
        OnnxClassifier.load(translation)
    textclass = fake_run(tmp_path / "sst", task="textclass")
    with pytest.raises(ConfigError, match=r"on the default engine: `attnkit embed --run \S+sst`"):
        OnnxSentenceEncoder.load(textclass)
    vit = fake_run(tmp_path / "vit", task="classification")
    with pytest.raises(ConfigError, match=r"is an image-classification \(ViT\) run, not a sent"):
        OnnxSentenceEncoder.load(vit)
    with pytest.raises(ConfigError, match=r"make one with `attnkit export --run \S+vit --format"):
        OnnxClassifier.load(vit)


INSTALL = r"install (it|them) with `pip install 'attnkit\[export\]'`"


@pytest.mark.parametrize("missing", ["onnx", "onnxruntime"])
def test_onnx_export_without_its_packages_says_what_to_install(
    missing: str, tmp_path: Path, monkeypatch
) -> None:
    run = fake_run(tmp_path / "vit", task="classification")
    monkeypatch.setitem(sys.modules, missing, None)  # `import missing` raises ImportError
    with pytest.raises(
        ImportError, match="the ONNX export needs the onnx and onnxruntime packages; " + INSTALL
    ):
        export_onnx(run)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json"]
    if missing == "onnxruntime":
        with pytest.raises(ImportError, match="the onnxruntime engine needs .*" + INSTALL):
            import_onnxruntime()


def test_ctranslate2_export_without_ctranslate2_says_what_to_install(
    tmp_path: Path, monkeypatch
) -> None:
    run = fake_run(tmp_path / "dates")
    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    with pytest.raises(ImportError, match="needs the ctranslate2 package; " + INSTALL):
        export_ctranslate2(run)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.json"]
