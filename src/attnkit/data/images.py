"""Image classification data: scikit-learn's 8x8 digits, MNIST, CIFAR-10, folders, augmentation.

Every loader returns an :class:`ImageSet`: images (N, C, H, W), either uint8 in 0..255 or float in
[0, 1], integer labels (N,) and the class names. ``ImageSet.batch(index)`` gives float images in
[0, 1], so models always see the same scale. Nothing downloads unless a loader is asked to
(``download=True``) and the files are not already in the folder; downloads are checked against
their published MD5 and land in the folder under their final name only once verified.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .corpora import default_cache_dir
from .errors import DataError

__all__ = [
    "ImageSet",
    "to_float",
    "stratified_split",
    "load_digits_dataset",
    "download_file",
    "read_idx",
    "load_mnist",
    "load_cifar10",
    "read_image",
    "load_image_folder",
    "random_crop",
    "random_hflip",
    "augment_batch",
    "image_batches",
    "MNIST_URL",
    "MNIST_MD5",
    "CIFAR10_URL",
    "CIFAR10_MD5",
    "IMAGE_EXTENSIONS",
]

logger = logging.getLogger(__name__)

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
_CIFAR10_DIR = "cifar-10-batches-py"
_CIFAR10_CLASSES = "airplane automobile bird cat deer dog frog horse ship truck".split()
IMAGE_EXTENSIONS = tuple(".png .jpg .jpeg .bmp .gif .tif .tiff .webp .ppm .pgm".split())
_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


@dataclass
class ImageSet:
    """Labelled images. Shapes: images (N, C, H, W) uint8 or float in [0, 1]; labels (N,)."""

    images: Tensor
    labels: Tensor
    classes: list[str]

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"ImageSet: images must be (N, C, H, W) and labels (N,), got "
                f"{tuple(self.images.shape)} and {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) in pixels."""
        return self.images.shape[2], self.images.shape[3]

    def subset(self, index: Tensor | Sequence[int]) -> ImageSet:
        """The images at ``index`` (same class list)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(self.images[index], self.labels[index], self.classes)

    def batch(self, index: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        """Float images in [0, 1] and labels. Shapes: (b,) -> (b, C, H, W), (b,)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return to_float(self.images[index]), self.labels[index]


def to_float(images: Tensor) -> Tensor:
    """uint8 0..255 -> float32 [0, 1]; float images are returned as they are. Shapes kept."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if not images.is_floating_point():
        raise ValueError(f"to_float: images must be uint8 or float, got {images.dtype}")
    return images


def stratified_split(
    labels: Tensor, test_fraction: float = 0.2, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Split indices so that every class keeps its proportion in both parts (deterministic).

    Each class with at least two examples puts ``round(n * test_fraction)`` of them (at least one,
    at most n - 1) in the test part.

    Returns:
        (train_index, test_index), sorted. Shapes: labels (N,) -> (N_train,), (N_test,).
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"stratified_split: test_fraction must be in (0, 1), got {test_fraction}")
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_test = min(max(round(len(idx) * test_fraction), 1), len(idx) - 1) if len(idx) > 1 else 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def load_digits_dataset(seed: int = 0, test_fraction: float = 0.2) -> tuple[ImageSet, ImageSet]:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, offline), split stratified.

    Returns:
        (train, test): float images in [0, 1] (the 0..16 ink counts divided by 16).
        Shapes: images (N, 1, 8, 8), labels (N,).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)  # (N, 1, 8, 8)
    data = ImageSet(images, torch.from_numpy(digits.target).long(), [str(d) for d in range(10)])
    train, test = stratified_split(data.labels, test_fraction, seed)
    return data.subset(train), data.subset(test)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(
    url: str, directory: str | Path, md5: str | None = None, timeout: float = 60.0
) -> Path:
    """Download ``url`` once into ``directory`` (verified against ``md5``) and return its path.

    A file already there with the right checksum is reused without network access. The download
    goes to a temporary file that is renamed into place only after the check, so a failed or
    corrupt download never sits under the final name.

    Raises:
        DataError: the download failed or the checksum does not match.
    """
    directory = Path(directory).expanduser()
    target = directory / url.rstrip("/").rsplit("/", 1)[-1]
    if target.is_file():
        if md5 is None or _md5(target) == md5:
            return target
        logger.warning("%s has a wrong checksum; downloading it again", target)
    directory.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, target)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
        if md5 is not None and digest.hexdigest() != md5:
            raise DataError(
                f"checksum mismatch for {url}: expected md5 {md5}, got "
                f"{digest.hexdigest()}; retry, or download it by hand into {directory}"
            )
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as err:
        raise DataError(
            f"could not download {url} ({err}); download it by hand into {directory}"
        ) from err
    finally:
        tmp.unlink(missing_ok=True)
    return target


def read_idx(path: str | Path) -> Tensor:
    """Read an IDX file (MNIST's format; gzip-compressed when the name ends in .gz) of uint8 data.

    Returns:
        the array as a uint8 tensor with the dimensions stored in the header.
    """
    path = Path(path)
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as f:
            raw = f.read()
    except OSError as err:
        raise DataError(f"{path}: cannot read the IDX file ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(
            f"{path}: not an IDX file of unsigned bytes (bad magic number "
            f"{raw[:4].hex()}); is it an MNIST images/labels file?"
        )
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise DataError(
            f"{path}: header says {dims} ({int(np.prod(dims))} bytes) but the file "
            f"holds {len(raw) - offset}; the file is truncated or corrupt"
        )
    data = np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)
    return torch.from_numpy(data.copy())


def _find_or_fetch(folder: Path, name: str, url: str, md5: str | None, download: bool) -> Path:
    for candidate in [d / n for d in (folder, folder / "raw") for n in (f"{name}.gz", name)]:
        if candidate.is_file():
            return candidate
    if not download:
        raise DataError(
            f"{name}[.gz] not found in {folder}; put the file there or allow the "
            "download (download=True)"
        )
    return download_file(url, folder, md5)


def load_mnist(
    split: str = "train",
    root: str | Path | None = None,
    download: bool = True,
    base_url: str = MNIST_URL,
    md5: dict[str, str] | None = None,
) -> ImageSet:
    """MNIST from its four IDX files (``train-images-idx3-ubyte[.gz]`` ...) in ``root``.

    Args:
        split: ``train`` (60,000 images) or ``test`` (10,000).
        root: folder with the files (default ``<cache>/mnist``); missing files are downloaded
            into it when ``download`` is true.
        base_url: where ``<base_url><file>.gz`` is fetched from.
        md5: expected MD5 by ``.gz`` file name (default :data:`MNIST_MD5`; ``{}`` skips checks).

    Returns:
        uint8 images (N, 1, 28, 28) and labels (N,).
    """
    if split not in ("train", "test"):
        raise ValueError(f"load_mnist: split must be 'train' or 'test', got {split!r}")
    folder = Path(root).expanduser() if root is not None else default_cache_dir() / "mnist"
    sums = MNIST_MD5 if md5 is None else md5
    prefix = "train" if split == "train" else "t10k"
    files = [f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"]
    images_path, labels_path = (
        _find_or_fetch(folder, name, base_url + name + ".gz", sums.get(name + ".gz"), download)
        for name in files
    )
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
        raise DataError(
            f"{images_path}, {labels_path}: expected images (N, H, W) and labels "
            f"(N,), got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    return ImageSet(images.unsqueeze(1), labels.long(), [str(d) for d in range(10)])


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings and numpy arrays only (CIFAR batches); nothing executable.

    ``_codecs.encode`` is how Python 3 protocol-2 pickles store bytes.
    """

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_pickle(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            raw = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, ImportError) as err:
        raise DataError(f"{path}: cannot read the CIFAR batch ({err}); re-download it") from err
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(raw).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def _extract_cifar(archive: Path, folder: Path) -> None:
    """Extract the regular files under ``cifar-10-batches-py/`` only (no links, no ``..``)."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if not member.isfile() or parts[:1] != (_CIFAR10_DIR,) or ".." in parts:
                    continue
                (folder / member.name).parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                (folder / member.name).write_bytes(source.read())
    except (tarfile.TarError, OSError) as err:
        raise DataError(f"{archive}: cannot extract ({err}); delete it and retry") from err


def load_cifar10(
    split: str = "train",
    root: str | Path | None = None,
    download: bool = True,
    url: str = CIFAR10_URL,
    md5: str | None = CIFAR10_MD5,
) -> ImageSet:
    """CIFAR-10 from its python batches (``data_batch_1..5``, ``test_batch``, ``batches.meta``).

    Args:
        split: ``train`` (50,000 images) or ``test`` (10,000).
        root: folder holding ``cifar-10-batches-py/`` (or the batch files themselves); default
            ``<cache>/cifar10``. When missing and ``download`` is true, the archive at ``url`` is
            fetched there, checked against ``md5`` and extracted.

    Returns:
        uint8 images (N, 3, 32, 32), labels (N,), the class names.
    """
    if split not in ("train", "test"):
        raise ValueError(f"load_cifar10: split must be 'train' or 'test', got {split!r}")
    folder = Path(root).expanduser() if root is not None else default_cache_dir() / "cifar10"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    batch_dir = next((d for d in (folder / _CIFAR10_DIR, folder) if (d / names[0]).is_file()), None)
    if batch_dir is None:
        if not download:
            raise DataError(
                f"{_CIFAR10_DIR}/{names[0]} not found in {folder}; put the extracted "
                "batches there or allow the download (download=True)"
            )
        _extract_cifar(download_file(url, folder, md5), folder)
        batch_dir = folder / _CIFAR10_DIR
    images, labels = [], []
    for name in names:
        batch = _read_cifar_pickle(batch_dir / name)
        data, target = np.asarray(batch.get("data")), batch.get("labels")
        if (
            data.dtype != np.uint8
            or data.ndim != 2
            or data.shape[1] != 3 * 32 * 32
            or target is None
            or len(target) != len(data)
        ):
            raise DataError(
                f"{batch_dir / name}: expected 'data' uint8 (N, 3072) and N 'labels', "
                f"got {data.dtype} {data.shape}"
            )
        images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))  # (n, 3, 32, 32)
        labels.append(torch.as_tensor(np.asarray(target), dtype=torch.long))
    classes = _CIFAR10_CLASSES
    if (batch_dir / "batches.meta").is_file():
        meta = _read_cifar_pickle(batch_dir / "batches.meta").get("label_names", classes)
        classes = [c.decode() if isinstance(c, bytes) else str(c) for c in meta]
    return ImageSet(torch.cat(images), torch.cat(labels), classes)


def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {size!r}")
    return h, w


def read_image(
    path: str | Path, size: int | tuple[int, int], channels: int = 3, convert: bool = False
) -> Tensor:
    """Read one image file, check its channels, and resize it (bilinear) to ``size``.

    Args:
        path: the file (anything Pillow opens).
        size: side in pixels, or (H, W).
        channels: expected channels (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA).
        convert: convert images with another channel count instead of raising.

    Returns:
        uint8 pixels. Shapes: (channels, H, W).

    Raises:
        DataError (a ValueError): unreadable file, or wrong channel count without ``convert``;
        the message names the file.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if channels not in _MODES:
        raise ValueError(f"read_image: channels must be one of {sorted(_MODES)}, got {channels}")
    h, w = _size_pair(size)
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)  # photos stored rotated with an EXIF tag
            if img.mode in ("P", "PA"):
                img = img.convert(
                    "RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB"
                )
            found = len(img.getbands())
            if found != channels and not convert:
                raise DataError(
                    f"{path}: image has {found} channel(s) (mode {img.mode}) but "
                    f"{channels} expected; convert the file or pass convert=True"
                )
            if img.mode != _MODES[channels]:
                img = img.convert(_MODES[channels])
            if img.size != (w, h):
                img = img.resize((w, h), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.uint8)  # (H, W) or (H, W, C)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(
            f"{path}: cannot read the image ({err}); remove or replace the file"
        ) from err
    return torch.from_numpy(pixels.reshape(h, w, channels).copy()).permute(2, 0, 1)  # (C, H, W)


def load_image_folder(
    root: str | Path, size: int | tuple[int, int], channels: int = 3, convert: bool = False
) -> ImageSet:
    """Images in one sub-folder per class (``root/<class>/<file>``), classes in sorted order.

    Files with an extension outside :data:`IMAGE_EXTENSIONS` and hidden files are skipped.

    Returns:
        uint8 images (N, channels, H, W), labels (N,) indexing the sorted class names.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: no class sub-folders; expected {root}/<class name>/<image>")
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(
            p
            for p in (root / name).iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise DataError(
                f"{root / name}: class folder holds no images "
                f"(extensions {', '.join(IMAGE_EXTENSIONS)}); add some or remove it"
            )
        images.extend(read_image(f, size, channels, convert) for f in files)
        labels.extend([label] * len(files))
    return ImageSet(torch.stack(images), torch.tensor(labels, dtype=torch.long), classes)


def random_crop(images: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad every side by ``padding`` and cut a random window of the original size per image.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """
    if padding < 0:
        raise ValueError(f"random_crop: padding must be >= 0, got {padding}")
    if padding == 0:
        return images
    b, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))  # (B, C, H + 2p, W + 2p)
    oy, ox = torch.randint(0, 2 * padding + 1, (2, b), generator=generator).to(images.device)
    rows = oy[:, None] + torch.arange(h, device=images.device)  # (B, H)
    cols = ox[:, None] + torch.arange(w, device=images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]  # (B, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


def random_hflip(
    images: Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> Tensor:
    """Mirror each image left-right with probability ``p``. Shapes: (B, C, H, W) -> same."""
    flip = (torch.rand(images.shape[0], generator=generator) < p).to(images.device)  # (B,)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def augment_batch(
    images: Tensor,
    crop_padding: int = 0,
    hflip: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The standard light augmentation for a training batch: random crop with zero padding
    (CIFAR uses 4), then random horizontal flip (not for digits: it changes their meaning).

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """
    images = random_crop(images, crop_padding, generator)
    return random_hflip(images, 0.5, generator) if hflip else images


def image_batches(
    data: ImageSet,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    start: int = 0,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(images float [0, 1], labels)`` batches; the order depends only on (seed, epoch).

    ``start`` skips the first batches (resuming mid-epoch). The last batch may be smaller.
    Shapes: (b, C, H, W), (b,).
    """
    if batch_size <= 0:
        raise ValueError(f"image_batches: batch_size must be > 0, got {batch_size}")
    n = len(data)
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    else:
        order = torch.arange(n)
    for first in range(start * batch_size, n, batch_size):
        yield data.batch(order[first : first + batch_size])
