"""One checksum-verified, atomic download used by every dataset (corpora and images).

The file is fetched into a temporary sibling in the target folder, hashed while it streams, and
renamed into place (``os.replace``) only once its digest matches, so an interrupted or corrupt
download never sits under the final name. A file already there with the right digest is reused
without any network access.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .errors import DataError

__all__ = ["download_file", "file_digest"]

logger = logging.getLogger(__name__)


def _hasher(algorithm: str) -> hashlib._Hash:
    if algorithm not in hashlib.algorithms_available:
        raise ValueError(
            f"algorithm must be a hashlib name such as 'md5', 'sha1' or 'sha256', got {algorithm!r}"
        )
    # MD5/SHA-1 here only detect corrupt downloads of published files; they protect no secret.
    return hashlib.new(algorithm, usedforsecurity=False)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file, read in 1 MiB blocks.

    Args:
        path: the file.
        algorithm: a :mod:`hashlib` name (``md5``, ``sha1``, ``sha256``...).
    """
    digest = _hasher(algorithm)
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(
    url: str,
    directory: str | Path,
    checksum: str | None = None,
    algorithm: str = "md5",
    timeout: float = 60.0,
    filename: str | None = None,
    hint: str | None = None,
) -> Path:
    """Download ``url`` once into ``directory``, verified against ``checksum``; return its path.

    Args:
        url: anything ``urllib`` opens (``https://``, ``file://``...).
        directory: the cache folder (created when needed).
        checksum: expected hex digest; None skips the check (a file already there is then
            reused as it is).
        algorithm: the :mod:`hashlib` name of ``checksum`` (``md5`` for the image datasets,
            ``sha1`` for the fra-eng corpus).
        timeout: network timeout in seconds.
        filename: name in ``directory`` (default: the last component of the URL's path).
        hint: what the user can do when the download fails, ending the error message (default:
            retry or download the file by hand into ``directory``).

    Returns:
        ``directory / filename``.

    Raises:
        DataError: the download failed or its digest does not match (nothing is left under the
            final name in either case).
    """
    directory = Path(directory).expanduser()
    name = filename or Path(urllib.parse.urlparse(url).path).name or "download"
    target = directory / name
    hint = hint or f"retry, or download it by hand into {directory}"
    hasher = _hasher(algorithm)  # validates the name before anything touches the disk
    if target.is_file():
        if checksum is None or file_digest(target, algorithm) == checksum:
            logger.debug("using cached %s", target)
            return target
        logger.warning("%s has a wrong checksum; downloading it again", target)
        target.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, target)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                hasher.update(block)
                out.write(block)
        if checksum is not None and hasher.hexdigest() != checksum:
            raise DataError(
                f"checksum mismatch for {url}: expected {algorithm} {checksum}, got "
                f"{hasher.hexdigest()}; the download is corrupt or the file changed; {hint}"
            )
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as err:
        raise DataError(f"could not download {url} ({err}); {hint}") from err
    finally:
        tmp.unlink(missing_ok=True)
    return target
