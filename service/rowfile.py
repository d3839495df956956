"""Rows of an array on disk read with pread: what a search reads per question from large files.

Not a memory map on purpose: pages of a mapping count in the process's resident memory once
touched, and a million-passage index's searches touch scattered gigabytes over time (unit vectors to
re-score, BM25 columns). pread goes through the same page cache, shared by every server process,
without growing any server's RSS.
"""

import os
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class RowFile:
    """Fixed-size rows starting `offset` bytes into a file; spans of rows are read in one call each.

    Thread-safe (pread has no shared file position); its owner calls close() once no reader is left.
    """

    def __init__(self, path: Path | str, offset: int, row_bytes: int) -> None:
        self.descriptor = os.open(path, os.O_RDONLY)
        self.offset, self.row_bytes = offset, row_bytes
        self.closer = weakref.finalize(self, os.close, self.descriptor)

    def close(self) -> None:
        """Close the file now (at most once; garbage collection would do it late)."""
        self.closer()

    @classmethod
    def of(cls, array: np.memmap) -> "RowFile":
        """The file behind a memory-mapped array (np.load(..., mmap_mode="r")), by rows of its first axis."""
        return cls(array.filename, array.offset, array.itemsize * int(np.prod(array.shape[1:], dtype=np.int64)))

    def prefetch(self) -> None:
        """Ask the kernel to read the whole file into the page cache in the background (no waiting)."""
        os.posix_fadvise(self.descriptor, 0, 0, os.POSIX_FADV_WILLNEED)

    def read(self, spans: Sequence[tuple[int, int]]) -> np.ndarray:
        """The rows of each [start, end) span, concatenated, as bytes (one row of bytes per row)."""
        total = sum(end - start for start, end in spans)
        out = np.empty((total, self.row_bytes), dtype=np.uint8)
        view, done = memoryview(out).cast("B"), 0
        for start, end in spans:
            wanted = (end - start) * self.row_bytes
            if wanted:
                got = os.preadv(self.descriptor, [view[done : done + wanted]], self.offset + start * self.row_bytes)
                if got != wanted:
                    raise OSError(f"short read ({got} of {wanted} bytes)")
            done += wanted
        return out
