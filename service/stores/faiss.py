"""The FAISS store: an index directory's live version (service/index.py), searched in this process."""

import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Literal

import numpy as np

from service.index import Chunk, SearchIndex, kept_chunks
from service.records import Passage
from service.rowfile import RowFile
from service.stores import DENSE_ROWS_PER_CANDIDATE, UNITS_PER_CANDIDATE, Filters, LexicalScores

MAX_SCOPE_MASKS = 16


def top_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores (any order), exactly, in far less than a full partition.

    A strided sample's top gives a threshold; if at least k scores reach it, the k largest are among
    them (the k-th largest reaches it too), so only those few are partitioned: 0.3 ms instead of
    7.6 ms for a million scores. Otherwise (ties, tiny arrays) the whole array is partitioned.
    """
    if k >= len(scores):
        return np.arange(len(scores))
    stride = max(1, len(scores) // 10_000)
    if stride > 1:
        sample = scores[::stride]
        wanted = min(len(sample), 2 * (k // stride) + 2)
        threshold = np.partition(sample, len(sample) - wanted)[len(sample) - wanted]
        reaching = np.flatnonzero(scores >= threshold)
        if len(reaching) >= k:
            return reaching[np.argpartition(-scores[reaching], k - 1)[:k]]
    return np.argpartition(-scores, k - 1)[:k]


def first_occurrences(values: np.ndarray) -> np.ndarray:
    """The distinct values in order of first appearance."""
    _, first = np.unique(values, return_index=True)
    return values[np.sort(first)]


def column_reader(array: np.ndarray, opened: list[RowFile]) -> Callable[[list[tuple[int, int]]], np.ndarray]:
    """Reads spans of a 1-D array: from its file when memory-mapped (a loaded index; the file is added
    to `opened`), else in memory."""
    if isinstance(array, np.memmap):
        rows = RowFile.of(array)
        opened.append(rows)
        rows.prefetch()  # BM25 columns are read for every question: have them in memory early
        return lambda spans: rows.read(spans).view(array.dtype).ravel()
    return lambda spans: np.concatenate([array[start:end] for start, end in spans])


class FaissStore:
    """An index directory's version (service/index.py): FAISS or exact scans, bm25s columns, SQLite rows.

    Thread-safe for searches (per-thread score buffers, pread, a locked passage table); close() is
    for its owner, once no search uses it.
    """

    kind: Literal["faiss"] = "faiss"
    remote = False

    def __init__(self, index: SearchIndex) -> None:
        self.index = index
        self.version = index.version
        self.manifest = index.manifest
        self.documents = index.documents
        self.passage_count = len(index.passages)
        # Each model's search beside the others pays off only for approximate indexes: FAISS, pread
        # and numpy release the GIL there, while a small one's scan costs less than the hand-over.
        self.concurrent = any(vectors.ann is not None for vectors in index.vectors.values())
        self.buffers = threading.local()
        bm25_scores = index.bm25.scores
        self.bm25_indptr = np.asarray(bm25_scores["indptr"])
        self.row_files: list[RowFile] = []
        self.bm25_columns = [column_reader(bm25_scores[name], self.row_files) for name in ("data", "indices")]
        documents = list(index.documents.values())
        self.doc_types = np.array([document.doc_type or "" for document in documents], dtype=object)
        self.doc_years = np.array([document.year or 0 for document in documents], dtype=np.int64)
        self.doc_numbers = {document.doc_id: number for number, document in enumerate(documents)}
        self.doc_collections = np.array([document.collection for document in documents], dtype=object)
        self.scope_masks: dict[frozenset[str], np.ndarray] = {}  # a few scopes, each a byte per passage

    def in_collections(self, collections: frozenset[str]) -> np.ndarray:
        """Which documents (a mask by document number) belong to the collections."""
        return np.isin(self.doc_collections, list(collections))

    def scope_mask(self, collections: frozenset[str]) -> np.ndarray:
        """Which passages belong to the collections; remembered, since a page asks for the same few scopes."""
        mask = self.scope_masks.get(collections)
        if mask is None:
            mask = self.in_collections(collections)[self.index.doc_rows]
            if len(self.scope_masks) >= MAX_SCOPE_MASKS:
                self.scope_masks.clear()
            self.scope_masks[collections] = mask
        return mask

    def allowed(self, filters: Filters) -> np.ndarray | None:
        """Rows passing the filters (ascending), or None when nothing is filtered.

        The filters are on documents: a mask over the (few) documents, spread to the passages by
        their document numbers, so the cost is one array operation whatever the corpus size.
        """
        if filters == Filters():
            return None
        allowed = np.ones(len(self.doc_numbers), dtype=bool)
        if filters.doc_ids is not None:
            chosen = np.zeros(len(self.doc_numbers), dtype=bool)
            chosen[[self.doc_numbers[d] for d in filters.doc_ids if d in self.doc_numbers]] = True
            allowed &= chosen
        if filters.doc_type is not None:
            allowed &= self.doc_types == filters.doc_type
        if filters.year is not None:
            allowed &= self.doc_years == filters.year
        if filters.collections is not None:
            allowed &= self.in_collections(filters.collections)
        return np.flatnonzero(allowed[self.index.doc_rows])

    def row_scores(self, model: str, rows: Collection[int], vector: np.ndarray) -> dict[int, float]:
        """The rows' exact dense scores: the best similarity of each row's units, from the stored matrix."""
        unique = np.unique(np.fromiter(rows, dtype=np.int64, count=len(rows)))
        if not len(unique):
            return {}
        positions, offsets = self.index.positions_of_rows(unique)
        best = np.maximum.reduceat(self.index.vectors[model].scores(positions, vector), offsets)
        return dict(zip(unique.tolist(), best.tolist(), strict=True))

    def dense(self, model: str, vector: np.ndarray, candidates: int, allowed: np.ndarray | None) -> dict[int, float]:
        """Exact scores of the passages owning the units nearest the question.

        The nearest units are found exactly in small indexes and by their PQ codes in large ones
        (service/vectors.py); the first DENSE_ROWS_PER_CANDIDATE·candidates passages they belong
        to are scored exactly over all their units, so every score shown is exact.
        """
        allowed_units = None if allowed is None else self.index.positions_of_rows(allowed)[0]
        count = len(self.index.unit_ids) if allowed_units is None else len(allowed_units)
        if count == 0:
            return {}
        k = min(candidates * UNITS_PER_CANDIDATE, count)
        positions = self.index.vectors[model].nearest(vector, k, allowed_units)
        rows = first_occurrences(self.index.rows_of_positions(positions))[: candidates * DENSE_ROWS_PER_CANDIDATE]
        return self.row_scores(model, rows, vector)

    def lexical(
        self,
        query_tokens: list[str],
        allowed: np.ndarray | None,
        candidates: int,
        weights: dict[str, float] | None = None,
    ) -> tuple[dict[int, float], LexicalScores]:
        """The best BM25 passages (positive scores only), and every passage's score on demand.

        Reads only the columns of the question's words (with pread when the index is on disk, see
        service/rowfile.py) and adds them up column by column: the sum bm25s computes, each word's
        column scaled by its weight when given.
        """
        scores = self.score_buffer(self.passage_count)
        vocabulary = self.index.bm25.vocab_dict
        known = [token for token in query_tokens if token in vocabulary]
        if known and self.passage_count:
            read_weights, read_rows = self.bm25_columns
            for token in known:
                number = vocabulary[token]
                span = [(int(self.bm25_indptr[number]), int(self.bm25_indptr[number + 1]))]
                column = read_weights(span)
                if weights is not None:
                    column = column * np.float32(weights.get(token, 1.0))
                scores[read_rows(span)] += column  # a column names each passage once
            if allowed is not None:
                mask = np.zeros(self.passage_count, dtype=bool)
                mask[allowed] = True
                scores[~mask] = 0.0
        top = top_indices(scores, candidates)
        return (
            {int(row): float(scores[row]) for row in top if scores[row] > 0},
            lambda rows: {row: float(scores[row]) for row in rows},
        )

    def score_buffer(self, count: int) -> np.ndarray:
        """This thread's zeroed array of `count` scores, reused by its next search.

        A fresh array of a million floats costs 4 ms of page faults each time; zeroing one already
        mapped costs 0.3 ms. A thread runs one search at a time, so reuse is safe within it.
        """
        buffer = getattr(self.buffers, "scores", None)
        if buffer is None or len(buffer) != count:
            buffer = self.buffers.scores = np.zeros(count, dtype=np.float32)
        else:
            buffer.fill(0.0)
        return buffer

    def frequencies(self, tokens: Iterable[str], collections: frozenset[str] | None = None) -> dict[str, int]:
        """Passages holding each known word (bm25s keeps a CSC matrix: a word's column lists them);
        with `collections`, only theirs, counted over the column's passages (words they lack are left out)."""
        vocabulary = self.index.bm25.vocab_dict
        spans = {
            token: (int(self.bm25_indptr[vocabulary[token]]), int(self.bm25_indptr[vocabulary[token] + 1]))
            for token in tokens
            if token and token in vocabulary
        }
        if collections is None:
            return {token: end - start for token, (start, end) in spans.items()}
        in_scope, read_rows = self.scope_mask(collections), self.bm25_columns[1]
        counts = {
            token: int(np.count_nonzero(in_scope[read_rows([span])])) if span[1] > span[0] else 0
            for token, span in spans.items()
        }
        return {token: count for token, count in counts.items() if count}

    def passages(self, rows: Iterable[int]) -> dict[int, tuple[Passage, list[str]]]:
        return self.index.passages.with_tokens(rows)

    def document_numbers(self, rows: list[int]) -> np.ndarray:
        return self.index.doc_rows[np.asarray(rows, dtype=np.int64)]

    def passages_of(self, doc_id: str) -> list[Passage]:
        table = self.index.passages
        return list(table.many(table.rows_of(doc_id)).values())

    def passage_counts(self) -> list[int]:
        return np.bincount(self.index.doc_rows, minlength=len(self.documents)).tolist()

    def all_passages(self) -> Iterator[Passage]:
        return iter(self.index.passages)

    def chunks(self, drop_doc_ids: set[str]) -> Iterator[Chunk]:
        return kept_chunks(self.index, drop_doc_ids)

    def check_reachable(self) -> None:
        """A loaded index folder is always at hand."""

    def close(self) -> None:
        """Close the version's files (passage table, the files read per search) and release its hold."""
        for rows in self.row_files:
            rows.close()
        self.index.close()
