"""Image classification data: scikit-learn's 8x8 digits, image folders, augmentation, batching.

Every loader returns an :class:`ImageSet`: images (N, C, H, W), either uint8 in 0..255 or float in
[0, 1], integer labels (N,) and the class names. ``ImageSet.batch(index)`` gives float images in
[0, 1], so models always see the same scale. MNIST and CIFAR-10 (downloaded on request) live in
:mod:`attnkit.data.image_datasets`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import AdvisedError, DataError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = [
    "ImageSet",
    "ChannelCountError",
    "to_float",
    "stratified_split",
    "load_digits_dataset",
    "read_image",
    "read_digit_image",
    "load_image_folder",
    "random_crop",
    "random_hflip",
    "augment_batch",
    "image_batches",
    "num_batches",
    "IMAGE_EXTENSIONS",
]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = tuple(".png .jpg .jpeg .bmp .gif .tif .tiff .webp .ppm .pgm".split())
_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


class ChannelCountError(AdvisedError):
    """An image file with another channel count than expected (and no ``convert``)."""


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


def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got {size!r}")
    return h, w


def _open_image(path: str | Path) -> PILImage:
    """Open and decode an image file (EXIF rotation applied, palettes expanded to RGB/RGBA).

    Raises:
        DataError: the file is missing or not an image Pillow can decode; the message names it.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if Path(path).is_dir():
        raise DataError(f"{path}: is a folder; give image files")
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)  # photos stored rotated with an EXIF tag
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as err:
        raise DataError(
            f"{path}: cannot read the image ({err}); remove or replace the file"
        ) from err
    if img.mode in ("P", "PA"):
        img = img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    return img


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
        DataError (a ValueError): unreadable file, or (:class:`ChannelCountError`) wrong channel
            count without ``convert``; the message names the file.
    """
    from PIL import Image

    if channels not in _MODES:
        raise ValueError(f"read_image: channels must be one of {sorted(_MODES)}, got {channels}")
    h, w = _size_pair(size)
    img = _open_image(path)
    found = len(img.getbands())
    if found != channels and not convert:
        raise ChannelCountError(
            f"{path}: image has {found} channel(s) (mode {img.mode}) but {channels} expected",
            "convert the file or pass convert=True",
        )
    if img.mode != _MODES[channels]:
        img = img.convert(_MODES[channels])
    if img.size != (w, h):
        img = img.resize((w, h), Image.Resampling.BILINEAR)
    pixels = np.asarray(img, dtype=np.uint8)  # (H, W) or (H, W, C)
    return torch.from_numpy(pixels.reshape(h, w, channels).copy()).permute(2, 0, 1)  # (C, H, W)


def read_digit_image(path: str | Path, ink_threshold: float = 0.1) -> Tensor:
    """Turn a picture of one handwritten digit into the 8x8 format of scikit-learn's digits.

    The digits data set was made from 32x32 bitmaps of digits scaled to fill the box (height
    first, aspect kept, centred) by counting the ink in 4x4 blocks, so ink is high and the
    background 0. This does the same to an ordinary picture: grey levels (transparent pixels
    count as white paper), inverted when the border is light (dark ink on paper), cropped to the
    ink's bounding box (pixels above ``ink_threshold`` of the strongest ink), padded to a centred
    square, area-averaged down to 8x8 and stretched so that the strongest block is 1.

    Args:
        path: the image file (any size, grey, RGB or RGBA).
        ink_threshold: fraction of the strongest ink that counts as ink for the bounding box.

    Returns:
        float pixels in [0, 1], ink high. Shapes: (1, 8, 8).

    Raises:
        DataError: unreadable file, or a blank image (no ink); the message names the file.
    """
    from PIL import Image

    img = _open_image(path)
    if "A" in img.getbands():  # composite over white paper
        paper = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(paper, img.convert("RGBA"))
    grey = np.asarray(img.convert("L"), dtype=np.float64) / 255.0  # (H, W)
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    ink = 1.0 - grey if np.median(border) > 0.5 else grey  # (H, W), ink high
    edge = np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]])
    ink = np.clip(ink - np.median(edge), 0.0, None)  # the paper's own shade becomes 0
    if ink.max() <= 1e-3:
        raise DataError(
            f"{path}: the image is blank (no ink found); expected one dark digit "
            "on a light background or a light digit on a dark one"
        )
    rows, cols = np.nonzero(ink >= ink_threshold * ink.max())
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]  # (h, w) bounding box
    side = max(ink.shape)
    square = np.zeros((side, side))
    top, left = (side - ink.shape[0]) // 2, (side - ink.shape[1]) // 2
    square[top : top + ink.shape[0], left : left + ink.shape[1]] = ink  # (side, side)
    pil = Image.fromarray(square.astype(np.float32))  # mode F
    small = np.asarray(pil.resize((8, 8), Image.Resampling.BOX), dtype=np.float64)  # (8, 8)
    small = small / max(small.max(), 1e-12)
    return torch.from_numpy(small).float()[None]  # (1, 8, 8)


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


def num_batches(n: int, batch_size: int, world_size: int = 1) -> int:
    """Batches per epoch: ``ceil(n / batch_size)``, less a last batch too small to give every one
    of ``world_size`` processes an image."""
    count = -(-n // batch_size)
    rest = n % batch_size
    return count - 1 if world_size > 1 and 0 < rest < world_size and count > 1 else count


def image_batches(
    data: ImageSet,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    epoch: int = 0,
    start: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(images float [0, 1], labels)`` batches; the order depends only on (seed, epoch).

    ``start`` skips the first batches (resuming mid-epoch). The last batch may be smaller. With
    ``world_size`` > 1 every process draws the same global batches and keeps its share
    (positions ``rank::world_size``), see :func:`num_batches`.
    Shapes: (b, C, H, W), (b,).
    """
    if batch_size <= 0:
        raise ValueError(f"image_batches: batch_size must be > 0, got {batch_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"image_batches: need 0 <= rank < world_size, got {rank}, {world_size}")
    n = len(data)
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    else:
        order = torch.arange(n)
    for i in range(start, num_batches(n, batch_size, world_size)):
        yield data.batch(order[i * batch_size : (i + 1) * batch_size][rank::world_size])
