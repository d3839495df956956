"""Rankers for the eval: the project's search modes, the usual baselines, and the embed-context ablation.

A ranker maps (question, k) to passage ids, best first. The baselines use the same model, passages
and questions as the project; they are what most Chinese knowledge-base projects ship: one vector per
whole passage in plain FAISS, BM25 over plain jieba words, and equal-weight reciprocal rank fusion.
"""

import shutil
from collections import defaultdict
from collections.abc import Callable, Sequence

import bm25s
import faiss
import jieba
import numpy as np

from embeddings.encoder import TextEncoder
from service.config import Settings
from service.engine import open_store, write_passages
from service.records import Passage
from service.search import Searcher
from service.tokenize import WORD

Ranker = Callable[[str, int], list[str]]
RRF_K = 60  # the constant of Cormack et al. (2009), the default of most fusion implementations
FUSION_DEPTH = 100  # how far down each list reciprocal rank fusion looks


def search_mode(searcher: Searcher, mode: str) -> Ranker:
    """The project's own search in one mode (hybrid, dense or lexical)."""

    def rank(question: str, k: int) -> list[str]:
        return [hit.passage.passage_id for hit in searcher.search(question, top_k=k, mode=mode)]

    return rank


def whole_passage_dense(passages: Sequence[Passage], encoder: TextEncoder) -> Ranker:
    """Dense-only baseline: one vector per passage (its whole text) in a plain FAISS inner-product index."""
    vectors = encoder.encode([p.text for p in passages])
    index = faiss.IndexFlatIP(encoder.dimension)
    index.add(np.ascontiguousarray(vectors))
    ids = [p.passage_id for p in passages]

    def rank(question: str, k: int) -> list[str]:
        _, rows = index.search(encoder.encode_query(question)[None, :], min(k, len(ids)))
        return [ids[row] for row in rows[0] if row != -1]

    return rank


def jieba_bm25(passages: Sequence[Passage]) -> Ranker:
    """BM25-only baseline: bm25s over jieba's default precise cut, punctuation dropped.

    No domain dictionary, no search-mode sub-words, no stopwords, no section text: the plain setup.
    """
    tokenizer = jieba.Tokenizer()

    def words(text: str) -> list[str]:
        return [word.lower() for word in tokenizer.lcut(text) if WORD.search(word)]

    bm25 = bm25s.BM25()
    bm25.index([words(p.text) or [""] for p in passages], show_progress=False)
    ids = [p.passage_id for p in passages]

    def rank(question: str, k: int) -> list[str]:
        token_ids = bm25.get_tokens_ids(words(question))
        if not token_ids:
            return []
        scores = np.asarray(bm25.get_scores_from_ids(token_ids))
        order = np.argsort(-scores, kind="stable")[:k]
        return [ids[row] for row in order if scores[row] > 0]

    return rank


def reciprocal_rank_fusion(rankers: Sequence[Ranker], k: int = RRF_K) -> Ranker:
    """Equal-weight RRF: score(p) = sum over lists of 1 / (k + rank of p in the list)."""

    def rank(question: str, top_k: int) -> list[str]:
        scores: dict[str, float] = defaultdict(float)
        for ranker in rankers:
            for position, passage_id in enumerate(ranker(question, FUSION_DEPTH), start=1):
                scores[passage_id] += 1.0 / (k + position)
        return sorted(scores, key=lambda passage_id: -scores[passage_id])[:top_k]

    return rank


def embed_context_searcher(searcher: Searcher, settings: Settings, with_context: bool) -> Searcher:
    """The same passages re-indexed (under the cache folder) with title/section prefixing set to with_context."""
    index_dir = settings.cache_dir / "ablation-index"
    shutil.rmtree(index_dir, ignore_errors=True)
    ablated = settings.model_copy(update={"embed_context": with_context, "index_dir": index_dir, "store": "faiss"})
    documents, passages = list(searcher.store.documents.values()), list(searcher.store.all_passages())
    write_passages(documents, passages, ablated, searcher.encoders, searcher.tokenizer)
    return Searcher(
        open_store(ablated, searcher.encoders),
        searcher.encoders,
        searcher.tokenizer,
        dense_weight=searcher.dense_weight,
        lexical_weight=searcher.lexical_weight,
        candidates=searcher.candidates,
        model_weights=settings.model_weights,
    )
