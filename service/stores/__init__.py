"""Where passages live and what a search asks of them: the Store protocol and the FAISS store.

A store answers a handful of questions for a Searcher (service/search.py), which does fusion,
explanations and highlights itself and so ranks the same whichever store answered:

- `dense`: exact scores of the passages owning the units nearest a question's vector, for one model;
- `row_scores`: exact scores of given passages for one model (every unit of each, best one wins);
- `lexical`: the best BM25 passages, and a way to score other passages for the same question (each
  word's weight can be scaled: a search scoped to collections gives them the scope's idf);
- `frequencies`: how many passages hold each word (for idf), in the index or in some collections;
- `passages`: the hits' passages and tokens;
- `document_numbers`: which document each of some rows belongs to (document evidence in fusion).

Filters are turned into the store's own form once per search (`allowed`). FaissStore answers from
an index directory (stores/faiss.py over service/index.py, the default); MilvusStore from Milvus
(stores/milvus.py, written by stores/milvus_writer.py).
"""

import math
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from service.index import Chunk
from service.records import Document, Passage

UNITS_PER_CANDIDATE = 4  # passages have several embedded units; fetch enough to fill the candidates
# Passages scored exactly from the nearest units, per candidate: re-scoring reads each one's units
# from disk in a large index. Two per candidate kept recall@10 at 0.98 on 100,000 passages.
DENSE_ROWS_PER_CANDIDATE = 2

LexicalScores = Callable[[Iterable[int]], dict[int, float]]  # rows -> their BM25 scores (0 when none)


class StoreUnreachable(Exception):
    """The store did not answer (Milvus stopped, unreachable, overloaded); the service recovers once it does.

    str() names the store's address and the client's own (English) reason, for the CLI and the log;
    HTTP users get `public_message`, which names neither.
    """

    public_message = "向量数据库 Milvus 暂时无法访问。恢复后服务会自动继续，请稍后重试"

    def __init__(self, uri: str, error: Exception) -> None:
        reason = getattr(error, "message", None) or str(error) or type(error).__name__
        super().__init__(f"向量数据库 Milvus（{uri}）暂时无法访问：{reason[:200]}。恢复后服务会自动继续，请稍后重试")


@dataclass(frozen=True)
class Filters:
    """Restrictions applied together with the query; None means no restriction."""

    doc_ids: frozenset[str] | None = None
    doc_type: str | None = None
    year: int | None = None
    collections: frozenset[str] | None = None  # the search's scope (service/collections.py)


class Store(Protocol):
    """One index version, as a Searcher and the document routes read it."""

    version: str
    manifest: dict
    documents: dict[str, Document]  # in the order they were added
    passage_count: int
    concurrent: bool  # whether each model's search is worth running beside the others
    remote: bool  # whether its calls wait on the network (Milvus) rather than on a core

    @property
    def kind(self) -> Literal["faiss", "milvus"]: ...  # read-only, so each store may fix its own

    # `allowed` is the store's own form of the filters (an array, an expression): what its `allowed`
    # returned, given back unread by the Searcher, so Any rather than one type for every store.
    def allowed(self, filters: Filters) -> Any: ...

    def dense(self, model: str, vector: np.ndarray, candidates: int, allowed: Any) -> dict[int, float]: ...

    def row_scores(self, model: str, rows: Collection[int], vector: np.ndarray) -> dict[int, float]: ...

    def lexical(
        self, query_tokens: list[str], allowed: Any, candidates: int, weights: dict[str, float] | None = None
    ) -> tuple[dict[int, float], LexicalScores]: ...

    def frequencies(self, tokens: Iterable[str], collections: frozenset[str] | None = None) -> dict[str, int]: ...

    def passages(self, rows: Iterable[int]) -> dict[int, tuple[Passage, list[str]]]: ...

    def passages_of(self, doc_id: str) -> list[Passage]: ...

    def document_numbers(self, rows: list[int]) -> np.ndarray:
        """The number (in `documents` order) of each row's document."""
        ...

    def passage_counts(self) -> list[int]: ...

    def all_passages(self) -> Iterator[Passage]: ...

    def chunks(self, drop_doc_ids: set[str]) -> Iterator[Chunk]: ...

    def check_reachable(self) -> None: ...

    def close(self) -> None: ...  # by its owner, once nothing searches it


def idf(document_frequency: int, passage_count: int) -> float:
    """BM25's (Lucene) inverse document frequency; a word no passage uses gets the largest value."""
    return math.log(1 + (passage_count - document_frequency + 0.5) / (document_frequency + 0.5))


def document_rows(store: Store) -> list[dict]:
    """The indexed documents as the user manages them, in the order they were added."""
    return [
        {
            "doc_id": document.doc_id,
            "title": document.title,
            "source": document.source,
            "doc_type": document.doc_type,
            "year": document.year,
            "level": document.level,
            "passages": count,
            "characters": len(document.text),
            "added_at": document.added_at,
            "collection": document.collection,
        }
        for document, count in zip(store.documents.values(), store.passage_counts(), strict=True)
    ]
