"""Image classification end to end: the train-vit CLI on the digits, exact resume, classify and
attention-map output, the trainer task's loss against a float64 formula, and bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnkit.cli import main
from attnkit.config import ConfigError, apply_overrides
from attnkit.data.images import ImageSet, load_digits_dataset
from attnkit.models.vit import attention_rollout
from attnkit.training.checkpoint import load_checkpoint
from attnkit.vision.classifier import Classifier
from attnkit.vision.config import vision_config_from_dict, vision_preset
from attnkit.vision.run import train_classifier
from attnkit.vision.task import ClassificationTask

TINY = [
    "model.d_model=32",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.ffn_hidden=64",
    "train.warmup_steps=20",
    "train.lr=0.004",
    "train.log_every=10",
    "data.batch_size=32",
]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(source: str = "digits", extra: tuple[str, ...] = ()):
    merged = apply_overrides(vision_preset(source), [*TINY, 'train.device="cpu"', *extra])
    return vision_config_from_dict(merged)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> tuple[Path, str]:
    run = tmp_path_factory.mktemp("vit") / "digits"
    import io
    from contextlib import redirect_stdout

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = io.StringIO()
    try:
        with redirect_stdout(out):
            status = main(
                [
                    "train-vit",
                    "--run",
                    str(run),
                    "--epochs",
                    "6",
                    "--device",
                    "cpu",
                    "--no-progress",
                    *[a for s in TINY for a in ("--set", s)],
                ]
            )
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    return run, out.getvalue()


def digit_png(path: Path, image: torch.Tensor, scale: int = 4) -> Path:
    """Save an 8x8 digit (ink high) as dark ink on white paper, ``scale`` times larger."""
    ink = image[0].repeat_interleave(scale, 0).repeat_interleave(scale, 1).numpy()
    Image.fromarray((255 * (1 - ink)).round().astype(np.uint8), mode="L").save(path)
    return path


# ---------------------------------------------------------------- training through the CLI


def test_train_vit_cli_learns_digits_and_writes_a_run_folder(digits_run):
    run, out = digits_run
    accuracies = [
        float(line.split()[2].rstrip("%")) / 100
        for line in out.splitlines()
        if line.startswith("test accuracy:")
    ]
    assert len(accuracies) == 2 and min(accuracies) >= 0.85, out
    for name in ("config.json", "metrics.jsonl", "curves.png", "checkpoints/last"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())["config"]
    assert config["task"] == "classification" and config["classes"] == [str(d) for d in range(10)]
    assert (config["model"]["image_size"], config["model"]["in_channels"]) == (8, 1)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows if r["split"] == "valid"] == [1, 2, 3, 4, 5, 6]
    # the printed accuracy is the classifier's own on the held-out test split
    _, test = load_digits_dataset(seed=0)
    best = Classifier.load(run)
    assert f"{best.evaluate(test)['accuracy']:.2%} (best" in out


def test_resume_mid_epoch_equals_uninterrupted(tmp_path):
    extra = ("model.dropout=0.1", "data.crop_padding=1", "train.epochs=2")
    torch.manual_seed(0)
    _, full = train_classifier(tiny_config(extra=extra), tmp_path / "full")
    torch.manual_seed(0)
    result, _ = train_classifier(
        tiny_config(extra=(*extra, "train.time_budget=1e-9")), tmp_path / "cut"
    )
    assert result.stopped_because == "time budget" and result.steps == 1
    argv = ["train-vit", "--run", str(tmp_path / "cut"), "--resume", "--no-progress"]
    assert main([*argv, "--set", "train.time_budget=null"]) == 0
    state, _ = load_checkpoint(tmp_path / "full" / "checkpoints" / "last")
    state2, _ = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last")
    assert state["step"] == state2["step"]
    resumed = Classifier.load(tmp_path / "cut", checkpoint="last")
    for (name, a), (_, b) in zip(
        full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_resume_refuses_changes_that_would_alter_the_run(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint to resume"):
        train_classifier(None, tmp_path / "none", resume=True)
    assert main(["train-vit", "--run", str(tmp_path / "x"), "--resume", "--batch-size", "8"]) == 2


# ---------------------------------------------------------------- classify and attention maps


def test_classify_prints_top_k_labels_and_probabilities(digits_run, tmp_path, capsys):
    run, _ = digits_run
    _, test = load_digits_dataset(seed=0)
    files = [digit_png(tmp_path / f"d{i}.png", test.images[i]) for i in range(12)]
    assert main(["classify", "--run", str(run), "--top-k", "3", *map(str, files)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(files)
    classifier = Classifier.load(run)
    direct = classifier.probabilities(test.images[:12])  # (12, 10), from the tensors
    hits = 0
    for line, path, probs in zip(lines, files, direct, strict=True):
        fields = line.split("\t")
        assert fields[0] == str(path) and len(fields) == 7
        labels, values = fields[1::2], [float(x) for x in fields[2::2]]
        assert all(label in classifier.classes for label in labels)
        assert values == sorted(values, reverse=True) and 0 < sum(values) <= 1.0001
        hits += labels[0] == str(int(probs.argmax()))
    # a digit drawn larger as dark ink on paper reads back as the same digit
    assert hits >= 8, lines  # re-centring may shift a digit by half a block
    assert main(["classify", "--run", str(run), "--json", str(files[0])]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["image"] == str(files[0]) and len(record["labels"]) == 1


def test_attention_map_writes_a_png_and_maps_are_consistent(digits_run, tmp_path, capsys):
    run, _ = digits_run
    _, test = load_digits_dataset(seed=0)
    image = digit_png(tmp_path / "seven.png", test.images[int((test.labels == 7).nonzero()[0])])
    out = tmp_path / "maps" / "seven.png"
    assert main(["attention-map", "--run", str(run), str(image), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out) as img:
        assert img.size[0] > img.size[1] > 50
    assert str(out) in capsys.readouterr().out
    classifier = Classifier.load(run)
    (maps,) = classifier.attention_maps([image])
    heads = classifier.model.config.num_heads
    assert maps.heads.shape == (heads, 8, 8) and maps.rollout.shape == (8, 8)
    assert torch.allclose(maps.heads.flatten(1).amax(1), torch.ones(heads))
    # the grids are the class-token rows of the last layer's weights and of the rollout
    _, weights = classifier.model(maps.image[None], need_weights=True)
    torch.testing.assert_close(maps.heads_grid, weights[-1][0, :, 0, 1:].reshape(heads, 4, 4))
    torch.testing.assert_close(
        maps.rollout_grid, attention_rollout(weights)[0, 0, 1:].reshape(4, 4)
    )
    assert float(maps.rollout_grid.sum()) < 1.0  # the rest stays on the class token


# ---------------------------------------------------------------- the task's loss


def test_task_loss_is_summed_label_smoothed_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1, 1, 2])

    class Fixed(torch.nn.Module):
        def forward(self, images):
            return logits, None

    data = ImageSet(torch.zeros(5, 1, 2, 2), labels, list("abcd"))
    loss, count = ClassificationTask(data, data, batch_size=5, label_smoothing=0.2).loss(
        Fixed(), (torch.zeros(5, 1, 2, 2), labels)
    )
    logp = logits.log_softmax(-1)
    expected = sum(-(0.8 * logp[i, labels[i]] + 0.2 * logp[i].mean()) for i in range(5))
    assert count == 5
    torch.testing.assert_close(loss.double(), expected)


def test_task_batches_cover_the_data_and_resume_mid_epoch():
    data = ImageSet(torch.rand(10, 1, 4, 4), torch.arange(10) % 3, ["a", "b", "c"])
    task = ClassificationTask(data, data, batch_size=4, seed=3, crop_padding=1)
    first = list(task.train_batches(0))
    assert sorted(torch.cat([y for _, y in first]).tolist()) == sorted(data.labels.tolist())
    again = ClassificationTask(data, data, batch_size=4, seed=3, crop_padding=1)
    again.load_state_dict({"epoch": 0, "position": 1})
    rest = list(again.train_batches(0))
    assert len(rest) == 2
    for (x, y), (x2, y2) in zip(first[1:], rest, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)


# ---------------------------------------------------------------- image folders and bad input


def test_folder_run_rejects_wrong_channels_and_unreadable_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for name, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(8):
            noise = rng.integers(-20, 20, size=(10, 10, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode="RGB").save(tmp_path / "data" / name / f"{i}.png")
    run = tmp_path / "run"
    assert (
        main(
            [
                "train-vit",
                "--data",
                str(tmp_path / "data"),
                "--run",
                str(run),
                "--epochs",
                "2",
                "--no-progress",
                *[a for s in TINY for a in ("--set", s)],
                "--set",
                "data.image_size=8",
                "--set",
                "data.batch_size=4",
                "--set",
                "data.valid_fraction=0.25",
                "--set",
                "data.test_fraction=0.25",
                "--set",
                "model.patch_size=4",
                "--set",
                "train.warmup_steps=2",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    capsys.readouterr()
    grey = tmp_path / "grey.png"
    Image.new("L", (10, 10), 90).save(grey)
    for command in (
        ["classify", "--run", str(run), str(grey)],
        ["attention-map", "--run", str(run), str(grey), "--out", str(tmp_path / "m.png")],
    ):  # the advice is the command's flag, not the library's convert=True
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "grey.png" in err and "1 channel" in err
        assert err.endswith("convert the file or pass --convert")
    assert main(["classify", "--run", str(run), "--convert", str(grey)]) == 0
    assert capsys.readouterr().out.split("\t")[1] in ("blue", "red")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    for command in (
        ["classify", "--run", str(run), str(broken)],
        ["attention-map", "--run", str(run), str(broken), "--out", str(tmp_path / "m.png")],
    ):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "broken.jpg: cannot read the image" in err
    assert main(["classify", "--run", str(run), str(tmp_path / "missing.png")]) == 2
    assert "missing.png" in capsys.readouterr().err
    (tmp_path / "data" / "red" / "grey.png").write_bytes(grey.read_bytes())
    retrain = ["train-vit", "--data", str(tmp_path / "data"), "--run", str(tmp_path / "run2")]
    assert main([*retrain, "--set", "data.image_size=8", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "grey.png: image has 1 channel" in err
    assert err.endswith("convert the file or pass --set data.convert=true")


def test_config_and_run_folder_errors(tmp_path, capsys, digits_run):
    run, _ = digits_run
    with pytest.raises(ConfigError, match="model.image_size is set by the data"):
        tiny_config(extra=("model.image_size=16",))
    with pytest.raises(ConfigError, match="unknown key"):
        tiny_config(extra=("data.colour=1",))
    assert main(["train-vit", "--run", str(run), "--epochs", "1"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (
        main(["train-vit", "--data", str(tmp_path / "nowhere"), "--run", str(tmp_path / "r")]) == 2
    )
    assert "not digits, mnist, cifar10 or a folder" in capsys.readouterr().err
    assert main(["classify", "--run", str(tmp_path), "x.png"]) == 2
    assert "train-vit" in capsys.readouterr().err
    blank = tmp_path / "blank.png"
    Image.new("L", (16, 16), 255).save(blank)
    assert main(["classify", "--run", str(run), str(blank)]) == 2
    assert "blank.png: the image is blank" in capsys.readouterr().err


def test_best_checkpoint_is_the_lowest_validation_loss(tmp_path):
    run = tmp_path / "run"
    train_classifier(tiny_config(extra=("train.epochs=3", "train.keep_best=3")), run)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in rows if r["split"] == "valid"]
    lowest = min(valid, key=lambda r: r["loss"])
    assert len(valid) == 3 and lowest["loss"] < max(r["loss"] for r in valid)
    _, meta = load_checkpoint(run / "checkpoints" / f"best-{lowest['step']}", with_state=False)
    loaded = Classifier.load(run)  # "best"
    expected = Classifier.load(run, checkpoint=str(run / "checkpoints" / f"best-{lowest['step']}"))
    for a, b in zip(loaded.model.parameters(), expected.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert meta["step"] == lowest["step"]


def _tiny_folder(root: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8), (30 * i, 0, 0)).save(root / name / f"{i}.png")
    return root


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ({"a": 2, "b": 2}, "too few images (4) for a validation split; give each class at least 3"),
        ({"a": 5}, "one class folder ('a'); a classifier needs at least two"),
    ],
)
def test_folders_too_small_to_split_are_refused(tmp_path, capsys, counts, message):
    """Scores are never reported on an empty split (they read 0 before)."""
    data = _tiny_folder(tmp_path / "data", counts)
    run = tmp_path / "run"
    assert main(["train-vit", "--data", str(data), "--run", str(run), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not run.exists()  # a failed start leaves no folder it made
    run.mkdir()
    (run / "notes.txt").write_text("mine\n")
    assert main(["train-vit", "--data", str(data), "--run", str(run), "--epochs", "1"]) == 2
    assert [p.name for p in run.iterdir()] == ["notes.txt"]  # one it did not make is kept


def test_a_warm_up_longer_than_the_run_names_the_setting_and_leaves_no_run(tmp_path, capsys):
    data = _tiny_folder(tmp_path / "data", {"a": 3, "b": 3})
    argv = ["train-vit", "--data", str(data), "--run", str(tmp_path / "run"), "--epochs", "1"]
    assert main([*argv, "--set", "data.image_size=8", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "train.warmup_steps=200 is not below the 1 updates of this run" in err, err
    assert "--set train.warmup_steps=0" in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "config.json").exists()  # the same command may run again
    assert main([*argv, "--set", "train.warmup_steps=0", "--no-progress"]) == 0
    assert (tmp_path / "run" / "config.json").is_file()


def test_a_stored_built_in_run_with_folder_settings_still_loads(digits_run, tmp_path, capsys):
    """Runs of earlier versions may record data.image_size for digits (accepted then, unused):
    only new runs are refused such settings."""
    import json
    import shutil

    run, _ = digits_run
    old = tmp_path / "old"
    shutil.copytree(run, old)
    raw = json.loads((old / "config.json").read_text())
    raw["config"]["data"]["image_size"] = 16
    (old / "config.json").write_text(json.dumps(raw))
    image = torch.zeros(1, 8, 8)
    image[0, 1:7, 3:5] = 1.0  # a stroke: a one
    assert main(["classify", "--run", str(old), str(digit_png(tmp_path / "d.png", image))]) == 0
    capsys.readouterr()


def test_an_interrupted_train_vit_exits_130_saying_how_to_resume(monkeypatch, tmp_path, capsys):
    """Ctrl-C (the trainer saves and returns "interrupted"): exit 130 and the resume command,
    as train / train-lm / finetune do (was: exit 0, and test accuracy as if finished)."""
    import types

    import attnkit.vision.run as vision_run

    def stopped(cfg, run_dir, **kwargs):
        result = types.SimpleNamespace(
            steps=3, epochs_done=0, seconds=1.0, tokens_per_second=10.0,
            stopped_because="interrupted", last_metrics={},
        )  # fmt: skip
        return result, None

    monkeypatch.setattr(vision_run, "train_classifier", stopped)
    run = tmp_path / "vit"
    assert main(["train-vit", "--run", str(run), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert f"continue with: attnkit train-vit --run {run} --resume" in err
