"""Image data: digits against scikit-learn itself, MNIST/CIFAR readers on tiny files written here in
the published formats (IDX, pickled batches), downloads from file:// URLs with checksums, image
folders written with Pillow, augmentation against naive loops. Nothing touches the network."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from attnkit.data.download import download_file, file_digest
from attnkit.data.errors import DataError, advise
from attnkit.data.image_datasets import load_cifar10, load_mnist, read_idx
from attnkit.data.images import (
    ChannelCountError,
    ImageSet,
    augment_batch,
    image_batches,
    load_digits_dataset,
    load_image_folder,
    num_batches,
    random_crop,
    random_hflip,
    read_digit_image,
    read_image,
    stratified_split,
    to_float,
)


def md5_of(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- digits and splits


def test_digits_match_scikit_learn_and_split_is_stratified_and_deterministic():
    from sklearn.datasets import load_digits

    raw = load_digits()
    train, test = load_digits_dataset(seed=0)
    assert len(train) + len(test) == 1797
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.float32
    assert 0.0 <= float(train.images.min()) and float(train.images.max()) <= 1.0
    assert train.classes == [str(d) for d in range(10)]
    # the same (image, label) multiset as scikit-learn's (exact: 0..16 counts / 16 * 16)
    both = torch.cat([train.images, test.images]).reshape(-1, 64) * 16
    labels = torch.cat([train.labels, test.labels])
    ours = Counter(
        (*row, label) for row, label in zip(both.int().tolist(), labels.tolist(), strict=True)
    )
    theirs = Counter(
        (*row, int(label))
        for row, label in zip(
            raw.images.reshape(-1, 64).astype(int).tolist(), raw.target, strict=True
        )
    )
    assert ours == theirs
    assert torch.equal(both, both.round())
    counts = np.bincount(raw.target)
    test_counts = torch.bincount(test.labels, minlength=10).numpy()
    assert (test_counts == np.round(counts * 0.2)).all()
    again, _ = load_digits_dataset(seed=0)
    assert torch.equal(again.images, train.images)
    other, _ = load_digits_dataset(seed=1)
    assert not torch.equal(other.labels, train.labels)


def test_stratified_split_partitions_indices():
    labels = torch.tensor([0] * 10 + [1] * 5 + [2] * 1)
    train, test = stratified_split(labels, 0.3, seed=3)
    assert sorted(train.tolist() + test.tolist()) == list(range(16))
    assert torch.bincount(labels[test], minlength=3).tolist() == [3, 2, 0]
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(labels, 1.0)


def test_image_set_batch_scales_uint8_and_checks_shapes():
    data = ImageSet(
        torch.tensor([0, 51, 255], dtype=torch.uint8).reshape(3, 1, 1, 1),
        torch.tensor([0, 1, 2]),
        ["a", "b", "c"],
    )
    images, labels = data.batch([2, 1])
    torch.testing.assert_close(images.flatten(), torch.tensor([1.0, 0.2]))
    assert labels.tolist() == [2, 1]
    with pytest.raises(ValueError, match="uint8 or float"):
        to_float(torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ImageSet(torch.zeros(3, 8, 8), torch.zeros(3), [])


# ---------------------------------------------------------------- MNIST (IDX files)


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def write_mnist(folder, prefix: str, n: int, compress: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    suffix = ".gz" if compress else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
    return images, labels


@pytest.mark.parametrize("compress", [True, False])
def test_load_mnist_reads_idx_files_from_a_folder(tmp_path, compress):
    images, labels = write_mnist(tmp_path, "t10k", 5, compress)
    data = load_mnist("test", root=tmp_path, download=False)
    assert data.images.shape == (5, 1, 28, 28) and data.images.dtype == torch.uint8
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))
    assert data.labels.tolist() == labels.tolist()


def test_load_mnist_missing_files_without_download_names_folder(tmp_path):
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_mnist("train", root=tmp_path, download=False)
    with pytest.raises(ValueError, match="split"):
        load_mnist("valid", root=tmp_path)


def test_read_idx_rejects_bad_magic_and_truncated_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd")
    with pytest.raises(DataError, match="bad magic"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"abc")
    with pytest.raises(DataError, match=r"short: header says \[10\]"):
        read_idx(short)


def test_load_mnist_downloads_once_with_checksums(tmp_path):
    server, cache = tmp_path / "server", tmp_path / "cache"
    server.mkdir()
    images, labels = write_mnist(server, "train", 4)
    sums = {p.name: md5_of(p) for p in server.iterdir()}
    url = server.as_uri() + "/"
    data = load_mnist("train", root=cache, base_url=url, md5=sums)
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))
    for p in list(server.iterdir()):  # second call must not need the server
        p.unlink()
    assert torch.equal(load_mnist("train", root=cache, base_url=url, md5=sums).labels, data.labels)


def test_download_checksum_mismatch_leaves_no_file(tmp_path):
    source = tmp_path / "file.bin"
    source.write_bytes(b"payload")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="checksum mismatch"):
        download_file(source.as_uri(), cache, "0" * 32, algorithm="md5")
    assert list(cache.iterdir()) == []
    assert (
        download_file(source.as_uri(), cache, md5_of(source), algorithm="md5").read_bytes()
        == b"payload"
    )
    with pytest.raises(DataError, match="could not download"):
        download_file((tmp_path / "missing.bin").as_uri(), cache)


# ---------------------------------------------------------------- CIFAR-10 (pickled batches)


def cifar_batch(images: np.ndarray, labels: list[int]) -> bytes:
    """The published layout: each row holds the red plane, then green, then blue, row-major."""
    n = len(images)
    data = np.concatenate([images[:, c].reshape(n, 1024) for c in range(3)], axis=1)
    return pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": data}, protocol=2)


def write_cifar(folder, seed: int = 0):
    rng = np.random.default_rng(seed)
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    all_images = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, size=(2, 3, 32, 32), dtype=np.uint8)
        (batches / name).write_bytes(cifar_batch(images, [1, 7]))
        all_images.append(images)
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    (batches / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return all_images


def test_load_cifar10_reads_python_batches(tmp_path):
    written = write_cifar(tmp_path)
    train = load_cifar10("train", root=tmp_path, download=False)
    assert train.images.shape == (10, 3, 32, 32) and train.labels.tolist() == [1, 7] * 5
    assert torch.equal(train.images, torch.from_numpy(np.concatenate(written[:5])))
    assert train.classes == [f"c{i}" for i in range(10)]
    test = load_cifar10("test", root=tmp_path / "cifar-10-batches-py", download=False)
    assert torch.equal(test.images, torch.from_numpy(written[5]))


def test_load_cifar10_downloads_and_extracts_archive(tmp_path):
    source = tmp_path / "src"
    written = write_cifar(source)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    data = load_cifar10("test", root=tmp_path / "cache", url=archive.as_uri(), md5=md5_of(archive))
    assert torch.equal(data.images, torch.from_numpy(written[5]))
    with pytest.raises(DataError, match="checksum mismatch"):
        load_cifar10("test", root=tmp_path / "other", url=archive.as_uri(), md5="0" * 32)


def test_cifar_reader_refuses_pickles_that_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    (batches / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match="refusing to load"):
        load_cifar10("test", root=tmp_path, download=False)


# ---------------------------------------------------------------- image folders


def save(path, mode: str, size=(12, 10), color=None) -> None:
    color = color if color is not None else (200 if mode == "L" else (10, 120, 250))
    Image.new(mode, size, color).save(path)


def test_image_folder_loads_resizes_and_labels_by_sorted_subfolder(tmp_path):
    for name in ("dog", "cat"):
        (tmp_path / name).mkdir()
    save(tmp_path / "cat" / "a.png", "RGB")
    save(tmp_path / "cat" / "b.jpg", "RGB", size=(30, 30))
    save(tmp_path / "dog" / "c.png", "RGB", size=(5, 7))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    data = load_image_folder(tmp_path, 8, channels=3)
    assert data.classes == ["cat", "dog"] and data.labels.tolist() == [0, 0, 1]
    assert data.images.shape == (3, 3, 8, 8) and data.images.dtype == torch.uint8
    # a solid colour stays that colour after resizing (PNG is lossless)
    assert data.images[0, :, 3, 3].tolist() == [10, 120, 250]
    assert data.images[2].reshape(3, -1).unique(dim=1).shape[1] == 1


def test_image_folder_wrong_channels_and_unreadable_files_name_the_file(tmp_path):
    (tmp_path / "a").mkdir()
    save(tmp_path / "a" / "grey.png", "L")
    with pytest.raises(DataError, match=r"grey\.png: image has 1 channel.*3 expected"):
        load_image_folder(tmp_path, 8, channels=3)
    converted = load_image_folder(tmp_path, 8, channels=3, convert=True)
    assert converted.images[0, :, 0, 0].tolist() == [200, 200, 200]
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ValueError, match=r"broken\.png: cannot read the image"):
        load_image_folder(tmp_path, 8, channels=1)


def test_channel_count_advice_is_the_library_argument_unless_a_caller_replaces_it(tmp_path):
    (tmp_path / "a").mkdir()
    save(tmp_path / "a" / "grey.png", "L")
    with pytest.raises(
        ChannelCountError, match=r"3 expected; convert the file or pass convert=True$"
    ):
        load_image_folder(tmp_path, 8, channels=3)
    with pytest.raises(ChannelCountError) as caught:
        with advise(ChannelCountError, "pass --convert"):
            load_image_folder(tmp_path, 8, channels=3)
    assert str(caught.value).endswith(
        "grey.png: image has 1 channel(s) (mode L) but 3 expected; pass --convert"
    )
    assert isinstance(caught.value, DataError) and caught.value.__cause__ is None
    copy = pickle.loads(pickle.dumps(caught.value))  # e.g. from a data-loading worker
    assert type(copy) is ChannelCountError and str(copy) == str(caught.value)
    with pytest.raises(DataError, match="cannot read the image"):  # other errors pass through
        with advise(ChannelCountError, "pass --convert"):
            (tmp_path / "a" / "grey.png").write_bytes(b"not an image")
            load_image_folder(tmp_path, 8, channels=3)


def test_image_folder_layout_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "nope", 8)
    with pytest.raises(DataError, match="no class sub-folders"):
        load_image_folder(tmp_path, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_image_folder(tmp_path, 8)


def test_palette_image_with_three_channel_colours_reads_as_rgb(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("RGB", (4, 4), (255, 0, 0)).convert("P").save(tmp_path / "a" / "p.png")
    data = load_image_folder(tmp_path, 4, channels=3)
    assert data.images[0, :, 0, 0].tolist() == [255, 0, 0]


# ---------------------------------------------------------------- augmentation and batching


def test_random_crop_is_a_window_of_the_zero_padded_image():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(6, 2, 5, 4)
    assert torch.equal(random_crop(images, 0), images)
    out = random_crop(images, 2, gen)
    assert out.shape == images.shape
    for b in range(6):
        padded = torch.zeros(2, 9, 8)
        padded[:, 2:7, 2:6] = images[b]
        windows = [padded[:, y : y + 5, x : x + 4] for y in range(5) for x in range(5)]
        assert any(torch.equal(out[b], w) for w in windows)
    uint8 = random_crop((images * 255).to(torch.uint8), 1, gen)
    assert uint8.dtype == torch.uint8


def test_random_hflip_mirrors_some_images_and_never_changes_others():
    images = torch.rand(32, 1, 3, 3)
    assert torch.equal(random_hflip(images, 1.0), images.flip(-1))
    assert torch.equal(random_hflip(images, 0.0), images)
    out = random_hflip(images, 0.5, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images, strict=True)]
    kept = [torch.equal(o, i) for o, i in zip(out, images, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < 32
    a = augment_batch(images, 1, True, torch.Generator().manual_seed(5))
    b = augment_batch(images, 1, True, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_image_batches_cover_each_image_once_in_a_seeded_order():
    data = ImageSet(
        torch.arange(10, dtype=torch.float32).reshape(10, 1, 1, 1) / 10,
        torch.arange(10),
        [str(i) for i in range(10)],
    )
    batches = list(image_batches(data, 4, seed=1, epoch=0))
    assert [len(labels) for _, labels in batches] == [4, 4, 2]
    order = torch.cat([labels for _, labels in batches])
    assert sorted(order.tolist()) == list(range(10))
    torch.testing.assert_close(torch.cat([x for x, _ in batches]).flatten(), order / 10)
    again = torch.cat([y for _, y in image_batches(data, 4, seed=1, epoch=0)])
    assert torch.equal(order, again)
    other = torch.cat([y for _, y in image_batches(data, 4, seed=1, epoch=1)])
    assert not torch.equal(order, other)
    resumed = torch.cat([y for _, y in image_batches(data, 4, seed=1, epoch=0, start=1)])
    assert torch.equal(resumed, order[4:])
    plain = torch.cat([y for _, y in image_batches(data, 4, shuffle=False)])
    assert plain.tolist() == list(range(10))


def test_image_batches_shard_every_global_batch_over_ranks():
    data = ImageSet(torch.rand(11, 1, 2, 2), torch.arange(11), [str(i) for i in range(11)])
    assert num_batches(11, 4) == 3 and num_batches(11, 4, world_size=2) == 3
    assert num_batches(9, 4, world_size=2) == 2  # a last batch of 1 cannot feed 2 ranks
    whole = [y for _, y in image_batches(data, 4, seed=2, epoch=1)]
    shards = [
        [y for _, y in image_batches(data, 4, seed=2, epoch=1, rank=r, world_size=2)]
        for r in range(2)
    ]
    for batch, a, b in zip(whole, *shards, strict=True):
        assert sorted(torch.cat([a, b]).tolist()) == sorted(batch.tolist())
        assert not set(a.tolist()) & set(b.tolist())
    with pytest.raises(ValueError, match="rank"):
        next(image_batches(data, 4, rank=2, world_size=2))


# ---------------------------------------------------------------- digit pictures


def _rectangle_expected() -> torch.Tensor:
    """A 32 x 16 ink box: its bounding box is padded to 32 x 32 (8 columns each side), so the
    4 x 4 blocks of columns 2..5 are full of ink and the rest empty."""
    expected = torch.zeros(1, 8, 8)
    expected[0, :, 2:6] = 1.0
    return expected


@pytest.mark.parametrize("style", ["dark-on-white", "light-on-black", "transparent"])
def test_read_digit_image_crops_centres_and_block_averages(tmp_path, style):
    path = tmp_path / f"{style}.png"
    if style == "dark-on-white":
        img = Image.new("L", (40, 44), 255)
        img.paste(0, (3, 6, 19, 38))  # x 3..18, y 6..37: 16 wide, 32 tall
    elif style == "light-on-black":
        img = Image.new("RGB", (40, 44), (0, 0, 0))
        img.paste((255, 255, 255), (3, 6, 19, 38))
    else:
        img = Image.new("RGBA", (40, 44), (0, 0, 0, 0))  # transparent black: paper
        img.paste((0, 0, 0, 255), (3, 6, 19, 38))
    img.save(path)
    torch.testing.assert_close(read_digit_image(path), _rectangle_expected())


def test_read_digit_image_of_a_scaled_up_digit_gives_the_digit_back(tmp_path):
    _, test = load_digits_dataset(seed=0)
    similarity = []
    for i in range(20):
        digit = test.images[i]  # (1, 8, 8) ink high, fills the height
        ink = digit[0].repeat_interleave(4, 0).repeat_interleave(4, 1)  # (32, 32)
        Image.fromarray((255 * (1 - ink)).round().byte().numpy(), mode="L").save(tmp_path / "d.png")
        got = read_digit_image(tmp_path / "d.png")
        assert got.shape == (1, 8, 8) and float(got.max()) == 1.0
        # equal up to re-centring (a whole-block shift, or half a block when the ink's width
        # leaves an odd margin) and the contrast stretch
        similarity.append(
            max(
                float(
                    torch.cosine_similarity(
                        torch.roll(got, s, dims=2).flatten(), digit.flatten(), dim=0
                    )
                )
                for s in (-1, 0, 1)
            )
        )
    assert min(similarity) > 0.85
    assert sum(s > 0.999 for s in similarity) >= 10


def test_read_digit_image_errors_name_the_file(tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("L", (9, 9), 255).save(blank)
    with pytest.raises(DataError, match=r"blank\.png: the image is blank"):
        read_digit_image(blank)
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    with pytest.raises(DataError, match=r"bad\.png: cannot read the image"):
        read_digit_image(bad)


def test_download_helper_takes_the_hash_name(tmp_path):
    source = tmp_path / "blob.bin"
    source.write_bytes(b"abc")
    sha256 = hashlib.sha256(b"abc").hexdigest()
    got = download_file(source.as_uri(), tmp_path / "c", sha256, algorithm="sha256")
    assert got == tmp_path / "c" / "blob.bin" and file_digest(got, "sha256") == sha256
    with pytest.raises(DataError, match="expected sha1 0+"):
        download_file(source.as_uri(), tmp_path / "d", "0" * 40, algorithm="sha1")
    with pytest.raises(ValueError, match="algorithm"):
        download_file(source.as_uri(), tmp_path / "e", "x", algorithm="nope")


def test_an_image_path_that_is_a_folder_or_missing_is_named(tmp_path):
    with pytest.raises(DataError, match=f"^{tmp_path}: is a folder; give image files$"):
        read_image(tmp_path, 3)
    with pytest.raises(DataError, match="gone.png: no such file$"):
        read_image(tmp_path / "gone.png", 3)
