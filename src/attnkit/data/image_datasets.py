"""MNIST and CIFAR-10 in their published formats, downloaded once into a cache when allowed.

MNIST comes as four IDX files (``train-images-idx3-ubyte.gz`` ...), CIFAR-10 as a tar.gz of
pickled python batches. Downloads go through :func:`attnkit.data.download.download_file` (MD5
checked, atomic); nothing downloads unless a loader is asked to (``download=True``) and the files
are not already in the folder. Both loaders return an :class:`~attnkit.data.images.ImageSet` of
uint8 images.
"""

from __future__ import annotations

import gzip
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .corpora import default_cache_dir
from .download import download_file
from .errors import DataError
from .images import ImageSet

__all__ = [
    "read_idx",
    "load_mnist",
    "load_cifar10",
    "MNIST_URL",
    "MNIST_MD5",
    "CIFAR10_URL",
    "CIFAR10_MD5",
]

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
    return download_file(url, folder, md5, algorithm="md5")


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
        _extract_cifar(download_file(url, folder, md5, algorithm="md5"), folder)
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
