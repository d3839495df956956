"""Each model's unit vectors on disk, and the search for the units nearest to a question.

The vectors of a version are one float16 matrix per model (`vectors-<i>.f16`, units in row order),
memory-mapped, so a fresh process opens a million passages at once and several servers share the
page cache. Scores given to passages are always exact: computed from this matrix (float32 sums).

Finding the nearest units is exact up to EXACT_MAX_UNITS units: the matrix is read into memory as
float32 at load and scanned (about 0.8 ms per 10,000 units and model on one core). Above it, an IVF-PQ
index (`ann-<i>.faiss`, ids = unit ids) shortlists units; the caller re-scores the passages that own
them from the matrix. See eval/results/bench.md for the measurements behind these numbers.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from service.rowfile import RowFile

# A full scan costs about 0.8 ms per 10,000 units and model; above 50,000 units (about 10,000
# passages) IVF-PQ is faster at the same results after exact re-scoring.
EXACT_MAX_UNITS = 50_000
# IVF lists probed: an eighth of them, at most MAX_PROBES. On the synthetic corpora (bench-scale)
# recall@10 against exact rose 0.94 -> 0.99 from 64 to 256 of 2048 lists at 100,000 passages; at a
# million (4096 lists) 256 probes gave 0.995, 512 gave 1.0 at 5 ms more per model.
PROBED_SHARE = 8
MIN_PROBES, MAX_PROBES = 32, 256  # few lists: each probe is cheap; many: the shortlist is already full
GATHER_SHARE = 4  # scoring a quarter of a small matrix's units or more: multiply all, then pick
SHORTLIST_UNITS = 1_000  # units the codes shortlist for exact re-scoring (400 gave recall 0.91)
# 4-bit fast-scan PQ codes, one sub-quantizer per dimension (m3e: 256 bytes a unit, e5: 192): with
# one per two dimensions recall@10 fell to 0.96 (m3e) and 0.95 (e5, whose cosines sit in a narrow
# band) on 100,000 passages; OPQ recovered m3e's at the same size but took 6 minutes to train.
TRAIN_PER_LIST = 40  # training vectors per inverted list (faiss asks for at least 39)
RETRAIN_GROWTH = 2.0  # an approximate index trained on N units is retrained once it holds 2N
ADD_CHUNK = 65_536  # units converted to float32 and added at a time: bounded memory at any size
SEED = 7


def matrix_file(position: int) -> str:
    return f"vectors-{position}.f16"


def ann_file(position: int) -> str:
    return f"ann-{position}.faiss"


def open_matrix(path: Path, units: int, dimension: int) -> np.ndarray:
    """The float16 unit matrix, memory-mapped read-only (an empty index has an empty array)."""
    if units == 0:
        return np.zeros((0, dimension), dtype=np.float16)
    return np.memmap(path, dtype=np.float16, mode="r", shape=(units, dimension))


def inverted_lists(units: int) -> int:
    """About 4·sqrt(units) lists, a power of two up to 4096, with TRAIN_PER_LIST units each to train on."""
    wanted = min(4 * math.sqrt(units), 4096, max(1, units // TRAIN_PER_LIST))
    return 2 ** int(math.log2(wanted))


def train_ann(matrix: np.ndarray) -> faiss.Index:
    """An empty IVF-PQ (4-bit fast-scan) index trained on a random sample of the matrix."""
    dimension = matrix.shape[1]
    lists = inverted_lists(len(matrix))
    sample_size = min(len(matrix), lists * TRAIN_PER_LIST)
    sample_positions = np.sort(np.random.default_rng(SEED).choice(len(matrix), sample_size, replace=False))
    ann = faiss.index_factory(dimension, f"IVF{lists},PQ{dimension}x4fs", faiss.METRIC_INNER_PRODUCT)
    ann.train(np.ascontiguousarray(matrix[sample_positions], dtype=np.float32))
    return ann


def add_units(ann: faiss.Index, matrix: np.ndarray, unit_ids: np.ndarray, start: int = 0) -> None:
    """Add the matrix's units from position `start` on, in chunks."""
    for begin in range(start, len(matrix), ADD_CHUNK):
        end = min(begin + ADD_CHUNK, len(matrix))
        ann.add_with_ids(np.ascontiguousarray(matrix[begin:end], dtype=np.float32), unit_ids[begin:end])


def updated_ann(
    previous: "UnitVectors | None", trained_units: int, matrix: np.ndarray, unit_ids: np.ndarray, kept: int
) -> tuple[faiss.Index | None, int]:
    """The approximate index for a version, and how many units it was trained on (None below EXACT_MAX_UNITS).

    `kept` units at the start of the matrix come from the previous version (same ids); the rest are new.
    Removed units are deleted from the previous index's lists at once; it is retrained from scratch
    when there was none or the index has grown RETRAIN_GROWTH-fold since it was trained, so that its
    lists stay balanced.
    """
    if len(matrix) <= EXACT_MAX_UNITS:
        return None, 0
    if previous is None or previous.ann is None or len(matrix) > RETRAIN_GROWTH * trained_units:
        ann = train_ann(matrix)
        add_units(ann, matrix, unit_ids)
        return ann, len(matrix)
    ann = faiss.clone_index(previous.ann)
    # The previous version's unit ids are exactly those in its lists.
    removed = np.setdiff1d(previous.unit_ids, unit_ids[:kept], assume_unique=True)
    if len(removed):
        ann.remove_ids(faiss.IDSelectorBatch(removed.astype(np.int64)))
    add_units(ann, matrix, unit_ids, start=kept)
    return ann, trained_units


class UnitReader:
    """Scores units of a float16 matrix file against a question (one read per run of consecutive positions)."""

    def __init__(self, path: Path, dimension: int) -> None:
        self.rows = RowFile(path, 0, dimension * 2)
        self.dimension = dimension

    def scores(self, positions: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Inner products of the units at `positions` (ascending) with the query, in float32.

        The rows are handed to a float16 scalar-quantizer index as its codes and searched for all of
        them: faiss computes on float16 with SIMD, 2.5x faster than decoding to float32 and
        multiplying (3,000 units: 0.53 ms instead of 1.35). The index is made per call, so
        concurrent searches share nothing.
        """
        breaks = np.flatnonzero(np.diff(positions) != 1) + 1
        firsts, lasts = np.r_[0, breaks], np.r_[breaks, len(positions)]
        spans = list(zip(positions[firsts].tolist(), (positions[lasts - 1] + 1).tolist(), strict=True))
        codes = self.rows.read(spans)
        flat = faiss.IndexScalarQuantizer(self.dimension, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        faiss.copy_array_to_vector(codes.ravel(), flat.codes)
        flat.ntotal = len(codes)
        found, order = flat.search(np.ascontiguousarray(query[None, :], dtype=np.float32), len(codes))
        scores = np.empty(len(codes), dtype=np.float32)
        scores[order[0]] = found[0]
        return scores

    def close(self) -> None:
        self.rows.close()


def one_thread_per_search() -> None:
    """Run FAISS and numpy's BLAS on the calling thread only, for the rest of the process.

    One question's vector work is too small to split: OpenMP's hand-off made a 45,000-unit scan take
    8 ms instead of 3.8, and OpenBLAS's threads spin on the cores the encoders need (16 concurrent
    searches: 35 instead of 43 per second once passages had clause units). Concurrent requests keep
    both cores busy anyway.
    """
    faiss.omp_set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")


@dataclass
class UnitVectors:
    """One model's unit vectors of a version: the exact matrix and what finds nearest units in it."""

    matrix: np.ndarray  # float16 (units, dimension), memory-mapped, units in row order (for copying)
    unit_ids: np.ndarray  # int64, ascending: the id of the unit at each position
    ann: faiss.Index | None  # IVF-PQ over unit ids; None when small, then `exact` is scanned
    exact: np.ndarray | None = None  # float32 copy of a small matrix (numpy converts float16 slowly)
    reader: UnitReader | None = None  # exact units of a large matrix

    @classmethod
    def open(cls, path: Path, unit_ids: np.ndarray, dimension: int, ann: faiss.Index | None) -> "UnitVectors":
        matrix = open_matrix(path, len(unit_ids), dimension)
        if ann is None:
            return cls(matrix, unit_ids, None, exact=np.asarray(matrix, dtype=np.float32))
        return cls(matrix, unit_ids, ann, reader=UnitReader(path, dimension))

    def close(self) -> None:
        """Close the matrix file read per search (the memory map goes with the last reference)."""
        if self.reader is not None:
            self.reader.close()

    def scores(self, positions: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Exact similarity of the units at `positions` (ascending)."""
        if not len(positions):
            return np.zeros(0, dtype=np.float32)
        if self.exact is not None:
            if len(positions) * GATHER_SHARE >= len(self.exact):
                return (self.exact @ query)[positions]  # one pass over the matrix beats copying most of it
            return self.exact[positions] @ query
        return self.reader.scores(positions, query)

    def nearest(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
        """Positions of the units nearest the query, best first, among `allowed` positions when given.

        The k best by exact scores with a small matrix or a small allowed set; otherwise the
        SHORTLIST_UNITS (or k, if more) best by their PQ codes, for the caller to re-score exactly.
        """
        if self.ann is None or (allowed is not None and len(allowed) <= EXACT_MAX_UNITS):
            positions = allowed if allowed is not None else np.arange(len(self.matrix))
            scores = self.scores(positions, query) if allowed is not None else self.exact @ query
            if k < len(scores):
                top = np.argpartition(-scores, k - 1)[:k]
                positions, scores = positions[top], scores[top]
            return positions[np.argsort(-scores, kind="stable")]
        selector = None
        if allowed is not None:
            bitmap = np.zeros(int(self.unit_ids[-1]) + 1, dtype=bool)
            bitmap[self.unit_ids[allowed]] = True
            packed = np.packbits(bitmap, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(packed))
        lists = faiss.extract_index_ivf(self.ann).nlist
        probes = min(max(lists // PROBED_SHARE, min(lists, MIN_PROBES)), MAX_PROBES)
        params = faiss.SearchParametersIVF(nprobe=probes, sel=selector)
        _, found = self.ann.search(query[None, :], max(k, SHORTLIST_UNITS), params=params)
        return self.positions_of_ids(found[0][found[0] >= 0])

    def positions_of_ids(self, ids: np.ndarray) -> np.ndarray:
        """Where the units with these ids are: a subtraction while the ids are consecutive (no
        document removed from the middle), else a binary search, which took 0.5–0.9 ms a search on
        1.4 M units, their pages rarely in cache."""
        first, last = int(self.unit_ids[0]), int(self.unit_ids[-1])
        if last - first + 1 == len(self.unit_ids):
            return ids - first
        return np.searchsorted(self.unit_ids, ids)
