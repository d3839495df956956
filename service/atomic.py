"""Crash-safe writes: a file or folder is either the old one or the complete new one, never a mix.

The one recipe used everywhere: write beside the target, fsync the data, rename over the target,
fsync the directory (without the last step a power cut can lose the rename itself).
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def fsync_directory(directory: Path) -> None:
    """Make a rename or unlink inside `directory` durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(directory: Path) -> None:
    """fsync every file and folder below `directory`, deepest first, then the folder itself."""
    for path in sorted(directory.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir():
            fsync_directory(path)
        else:
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    fsync_directory(directory)


@contextmanager
def atomic_file(target: Path, prefix: str = ".tmp-") -> Iterator[BinaryIO]:
    """A binary handle whose content replaces `target` atomically when the block ends without error.

    The temporary file sits beside the target (same filesystem, so the rename is atomic) and is
    removed if the block fails; a leftover from a killed process starts with `prefix`.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, staging = tempfile.mkstemp(prefix=prefix, dir=target.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, target)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)


def write_atomic(target: Path, data: bytes) -> None:
    """Replace `target` with `data` atomically."""
    with atomic_file(target) as handle:
        handle.write(data)


def copy_atomic(source: Path, target: Path, prefix: str = ".tmp-") -> None:
    """Replace `target` with a copy of `source` atomically."""
    with atomic_file(target, prefix) as handle, source.open("rb") as data:
        shutil.copyfileobj(data, handle)
