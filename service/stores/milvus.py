"""Milvus as the store (DJQA_STORE=milvus): the same versions and rankings, shared by any number of servers.

Each index version is three collections, `<prefix>_<version>_<part>`:

- `u` (units): one entity per embedded unit: unit id, passage row, the document's id, type, year and
  collection (filters are Milvus expressions on them), one FLOAT_VECTOR field per model (`vec_<i>`,
  manifest order).
- `p` (passages): one per passage: row, the same document fields, the passage and its BM25 tokens as
  JSON, and its BM25 weights as a SPARSE_FLOAT_VECTOR over word numbers. The weights are bm25s's, from
  the project's own jieba tokens, so a question's sparse vector (its words' numbers, each counted)
  scores every passage exactly as the FAISS store's column sums do.
- `r` (records): the manifest, the documents (JSON in parts: a field holds at most 64 KB) and the
  vocabulary (word -> its number and how many passages hold it, in all and per collection, so that a
  scoped search weighs words by the scope's idf as the FAISS store does).

The alias `<prefix>` names the live version's records collection. A change (build, add, remove;
service/stores/milvus_writer.py) writes a whole new version beside the live one, checks its counts, and
only then moves the alias: one atomic step, so a search never sees half a build, and servers follow
the alias within a second (service/live.py). A change cannot be an upsert into the live collections:
every passage's BM25 weights depend on the whole corpus (idf, mean length), so adding one document changes them all, and
in-place edits would make the two stores rank differently and expose half-done changes. Kept
passages are copied with their vectors (never re-embedded); the previous version is kept for the
searches still reading it, older ones are dropped.

The vector indexes are FLAT (exact, as the FAISS store is below 50,000 units) unless
DJQA_MILVUS_INDEX says otherwise; passages of the nearest units are scored exactly over all their
units, as in service/stores/faiss.py.
"""

import json
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from typing import Literal

import numpy as np
from pymilvus import MilvusClient, MilvusException

from service.config import Settings
from service.index import (
    REBUILD_HINT,
    Chunk,
    IndexUnavailable,
    check_manifest,
    document_from_fields,
    passage_from_json,
)
from service.records import Document, Passage
from service.stores import DENSE_ROWS_PER_CANDIDATE, UNITS_PER_CANDIDATE, Filters, LexicalScores, StoreUnreachable

# Failures reach the user as StoreUnreachable; embedded Milvus Lite's gRPC server logs a traceback for
# each call it does not implement (pymilvus asks for a timestamp while waiting for a new index).
logging.getLogger("pymilvus").setLevel(logging.CRITICAL)
logging.getLogger("grpc._server").setLevel(logging.CRITICAL)

UNITS, PASSAGES, RECORDS = "u", "p", "r"
MAX_RESULTS = 16_384  # Milvus's largest limit for one search or query
KEY_BYTES = 512
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
QUERY_BATCH = 4_000  # entities per page when reading many (documents, a document's passages, a copy)
COPY_ROWS = 2_000  # passages copied at a time from the previous version by a change
TERM_CACHE_WORDS = 100_000  # vocabulary lookups kept per version (a version never changes)


def literal(value: str) -> str:
    """A Milvus expression's string literal (double-quoted, C-style escapes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def numbers(values: Iterable[int]) -> str:
    return "[" + ",".join(str(int(value)) for value in values) + "]"


def filter_expression(filters: Filters) -> str:
    """Filters as a Milvus expression over the document fields that units and passages both carry."""
    terms = []
    if filters.doc_ids is not None:
        terms.append(f"doc_id in [{','.join(literal(d) for d in sorted(filters.doc_ids))}]")
    if filters.doc_type is not None:
        terms.append(f"doc_type == {literal(filters.doc_type)}")
    if filters.year is not None:
        # A year no INT64 field holds matches no document (Milvus would refuse the literal).
        terms.append(f"year == {filters.year}" if INT64_MIN <= filters.year <= INT64_MAX else "year in []")
    if filters.collections is not None:
        terms.append(f"collection in [{','.join(literal(c) for c in sorted(filters.collections))}]")
    return " and ".join(terms)


def term_key(token: str) -> str:
    return f"t:{token}"


def usable_token(token: str) -> bool:
    """Words longer than a key holds are left out of the vocabulary (jieba rarely makes one: a long URL)."""
    return len(term_key(token).encode()) <= KEY_BYTES


def collection(prefix: str, version: str, part: str) -> str:
    return f"{prefix}_{version}_{part}"


def version_of(records_collection: str, prefix: str) -> str:
    return records_collection.removeprefix(f"{prefix}_").removesuffix(f"_{RECORDS}")


# ---------- connection ----------

_clients: dict[tuple[str, str], MilvusClient] = {}
_clients_lock = threading.Lock()


LITE_IN_USE = RuntimeError(
    "无法打开 Milvus Lite 数据文件，可能已被另一个进程占用（一个文件只能由一个进程打开，多个进程请共用 "
    "`python -m milvus_lite server`）"
)


def client_for(settings: Settings) -> MilvusClient:
    """One client per store and process (gRPC channels are thread-safe and reconnect by themselves).

    A path ending in .db starts Milvus Lite inside this process (pymilvus runs it); only one process
    can open such a path, so several servers share a Milvus Lite gRPC server or a Milvus server instead.
    """
    token = settings.milvus_token.get_secret_value() if settings.milvus_token else ""
    key = (settings.milvus_uri, token)
    with _clients_lock:
        if key not in _clients:
            try:
                _clients[key] = MilvusClient(settings.milvus_uri, token=token, timeout=settings.milvus_timeout_s)
            except Exception as error:  # pymilvus reports a bad address or a locked Lite file in its own ways
                reason = LITE_IN_USE if settings.milvus_uri.endswith(".db") else error
                raise StoreUnreachable(settings.milvus_uri, reason) from error
        return _clients[key]


@contextmanager
def reaching(uri: str) -> Iterator[None]:
    """Milvus's failures as StoreUnreachable (503 in the API)."""
    try:
        yield
    except MilvusException as error:
        raise StoreUnreachable(uri, error) from error


def live_version(client: MilvusClient, prefix: str, uri: str) -> str | None:
    """The version the alias names, or None when there is none yet."""
    with reaching(uri):
        if prefix not in client.list_aliases().get("aliases", []):
            return None
        return version_of(client.describe_alias(prefix)["collection_name"], prefix)


class MilvusStore:
    """A Milvus version, read per question; only its documents and manifest are held in memory."""

    kind: Literal["milvus"] = "milvus"
    concurrent = True  # each model's search is a round trip: they overlap with BM25's
    remote = True  # its calls wait on the network: search.py runs them in STORE_POOL, not with encoding

    def __init__(self, client: MilvusClient, settings: Settings, version: str, manifest: dict) -> None:
        self.client = client
        self.uri = settings.milvus_uri
        self.timeout = settings.milvus_timeout_s
        self.version = version
        prefix = settings.milvus_collection
        self.units, self.passages_name, self.records = (
            collection(prefix, version, part) for part in (UNITS, PASSAGES, RECORDS)
        )
        self.terms: dict[str, tuple[int, int, dict[str, int]] | None] = {}
        self.manifest = manifest
        self.passage_count = int(self.manifest["passage_count"])
        self.max_units = max(1, int(self.manifest["max_units_per_passage"]))
        self.exact = self.manifest["milvus_index"] == "FLAT"
        self.fields = {model["name"]: f"vec_{i}" for i, model in enumerate(self.manifest["models"])}
        self.documents, self.counts = self.read_documents()

    def call(self, method: Callable, *args: object, **kwargs: object):
        """One Milvus call; a collection the store released (a restarted Milvus Lite) is loaded again first."""
        with reaching(self.uri):
            try:
                return method(*args, timeout=self.timeout, **kwargs)
            except MilvusException as error:
                if "released" not in str(error.message):
                    raise
                for name in (self.units, self.passages_name, self.records):
                    self.client.load_collection(name, timeout=self.timeout)
                return method(*args, timeout=self.timeout, **kwargs)

    def query_all(self, name: str, expression: str, fields: list[str]) -> list[dict]:
        """Every entity matching, by Milvus's query iterator (one query stops at MAX_RESULTS)."""
        found: list[dict] = []
        iterator = self.call(
            self.client.query_iterator, name, batch_size=QUERY_BATCH, filter=expression, output_fields=fields
        )
        with reaching(self.uri):
            try:
                while batch := iterator.next():
                    found += batch
            finally:
                iterator.close()
        return found

    def read_documents(self) -> tuple[dict[str, Document], list[int]]:
        parts = self.query_all(self.records, 'key like "d:%"', ["key", "value", "count"])
        parts.sort(key=lambda part: part["key"])
        texts: dict[int, list[str]] = {}
        counts: dict[int, int] = {}
        for part in parts:
            number = int(part["key"].split(":")[1])
            texts.setdefault(number, []).append(part["value"])
            counts[number] = int(part["count"])
        documents = {}
        for number in sorted(texts):
            fields = json.loads("".join(texts[number]))
            documents[fields["doc_id"]] = document_from_fields(fields)
        if len(documents) != self.manifest["document_count"]:
            raise IndexUnavailable(f"Milvus 中的索引版本 {self.version} 不完整（文档数与清单不一致）。{REBUILD_HINT}")
        return documents, [counts[number] for number in sorted(counts)]

    def allowed(self, filters: Filters) -> str:
        return filter_expression(filters)

    def row_scores(self, model: str, rows: Collection[int], vector: np.ndarray) -> dict[int, float]:
        """Exact scores of the rows: every unit of each is scored, the best one wins.

        A FLAT index scores the rows' units itself (a filtered exact search); an approximate index's
        filtered search may skip units, so their vectors are read and scored here instead.
        """
        wanted = sorted({int(row) for row in rows})
        best: dict[int, float] = {}
        per_call = max(1, MAX_RESULTS // self.max_units)
        for start in range(0, len(wanted), per_call):
            batch = wanted[start : start + per_call]
            expression = f"row in {numbers(batch)}"
            scored: list[tuple[int, float]]
            if self.exact:
                limit = len(batch) * self.max_units
                scored = [
                    (hit["entity"]["row"], hit["distance"])
                    for hit in self.search(self.units, self.fields[model], vector, limit, expression, ["row"])
                ]
            else:
                units = self.query_all(self.units, expression, ["row", self.fields[model]])
                matrix = np.array([unit[self.fields[model]] for unit in units], dtype=np.float32)
                scores = matrix @ vector.astype(np.float32) if units else np.zeros(0, dtype=np.float32)
                scored = [(unit["row"], float(score)) for unit, score in zip(units, scores, strict=True)]
            for row, score in scored:
                best[row] = max(best.get(row, -np.inf), score)
        return best

    def search(
        self, name: str, field: str, query: object, limit: int, expression: str, fields: list[str]
    ) -> list[dict]:
        data = [query.tolist() if isinstance(query, np.ndarray) else query]
        limit = min(limit, MAX_RESULTS)
        # HNSW explores at least as many candidates as the results asked for (its ef); FLAT ignores it.
        params = {"metric_type": "IP", "params": {"ef": max(limit, 64)}}
        return self.call(
            self.client.search,
            name,
            data=data,
            anns_field=field,
            limit=limit,
            filter=expression,
            output_fields=fields,
            search_params=params,
        )[0]

    def dense(self, model: str, vector: np.ndarray, candidates: int, allowed: str) -> dict[int, float]:
        """Scores of the passages owning the nearest units. With an exact (FLAT) index a passage's first
        unit in the ranked list is its best one, so its score is already exact; an approximate index's
        passages are scored again over all their units."""
        hits = self.search(self.units, self.fields[model], vector, candidates * UNITS_PER_CANDIDATE, allowed, ["row"])
        first: dict[int, float] = {}
        for hit in hits:
            first.setdefault(hit["entity"]["row"], hit["distance"])
        rows = list(first)[: candidates * DENSE_ROWS_PER_CANDIDATE]
        if self.exact:
            return {row: first[row] for row in rows}
        return self.row_scores(model, rows, vector)

    def lexical(
        self, query_tokens: list[str], allowed: str, candidates: int, weights: dict[str, float] | None = None
    ) -> tuple[dict[int, float], LexicalScores]:
        """The best BM25 passages and a way to score others: the question is a sparse vector of its
        words' numbers, each counted (and scaled by its weight when given), and a passage's score is its
        inner product with the passage's stored BM25 weights."""
        terms = self.vocabulary(query_tokens)
        question: dict[int, float] = {}
        for token in query_tokens:
            if (term := terms.get(token)) is not None:
                number = term[0]
                weight = 1.0 if weights is None else weights.get(token, 1.0)
                question[number] = question.get(number, 0.0) + weight
        if not question:
            return {}, lambda rows: dict.fromkeys(rows, 0.0)
        hits = self.search(self.passages_name, "bm25", question, candidates, allowed, [])
        top = {hit["row"]: hit["distance"] for hit in hits if hit["distance"] > 0}
        every_match_found = len(hits) < candidates  # then every other passage scores 0

        def scores_of(rows: Iterable[int]) -> dict[int, float]:
            scores = dict.fromkeys(rows, 0.0)
            others = [] if every_match_found else sorted(set(scores) - top.keys())
            for start in range(0, len(others), MAX_RESULTS):
                batch = others[start : start + MAX_RESULTS]
                for hit in self.search(
                    self.passages_name, "bm25", question, len(batch), f"row in {numbers(batch)}", []
                ):
                    scores[hit["row"]] = hit["distance"]
            return scores | {row: score for row, score in top.items() if row in scores}

        return top, scores_of

    def vocabulary(self, tokens: Iterable[str]) -> dict[str, tuple[int, int, dict[str, int]] | None]:
        """Each word's number, passage count and count per collection (None: not in the vocabulary),
        remembered per version."""
        wanted = {token for token in tokens if token and usable_token(token)}
        missing = sorted(wanted - self.terms.keys())
        if missing:
            keys = ",".join(literal(term_key(token)) for token in missing)
            found = self.call(
                self.client.query,
                self.records,
                filter=f"key in [{keys}]",
                output_fields=["key", "number", "count", "value"],
            )
            if len(self.terms) > TERM_CACHE_WORDS:
                self.terms = {}
            known = {
                entry["key"][2:]: (int(entry["number"]), int(entry["count"]), json.loads(entry["value"] or "{}"))
                for entry in found
            }
            self.terms |= {token: known.get(token) for token in missing}
        return {token: self.terms.get(token) for token in wanted}

    def frequencies(self, tokens: Iterable[str], collections: frozenset[str] | None = None) -> dict[str, int]:
        terms = {token: term for token, term in self.vocabulary(tokens).items() if term is not None}
        if collections is None:
            return {token: term[1] for token, term in terms.items()}
        counts = {token: sum(term[2].get(name, 0) for name in collections) for token, term in terms.items()}
        return {token: count for token, count in counts.items() if count}

    def passages(self, rows: Iterable[int]) -> dict[int, tuple[Passage, list[str]]]:
        wanted = sorted({int(row) for row in rows})
        found: dict[int, tuple[Passage, list[str]]] = {}
        for start in range(0, len(wanted), MAX_RESULTS):
            batch = wanted[start : start + MAX_RESULTS]
            for entity in self.call(
                self.client.query,
                self.passages_name,
                filter=f"row in {numbers(batch)}",
                output_fields=["row", "passage", "tokens"],
            ):
                found[entity["row"]] = (passage_from_json(entity["passage"]), json.loads(entity["tokens"]))
        return dict(sorted(found.items()))

    def document_numbers(self, rows: list[int]) -> np.ndarray:
        numbers = {doc_id: number for number, doc_id in enumerate(self.documents)}
        found = self.passages(rows)
        return np.array([numbers[found[row][0].doc_id] for row in rows], dtype=np.int64)

    def passages_of(self, doc_id: str) -> list[Passage]:
        entities = self.query_all(self.passages_name, f"doc_id == {literal(doc_id)}", ["row", "passage"])
        return [passage_from_json(entity["passage"]) for entity in sorted(entities, key=lambda e: e["row"])]

    def passage_counts(self) -> list[int]:
        return list(self.counts)

    def check_reachable(self) -> None:
        """StoreUnreachable unless Milvus answers a small request within a few seconds."""
        with reaching(self.uri):
            self.client.list_aliases(timeout=min(self.timeout, 3.0))

    def close(self) -> None:
        """Nothing of a version is open here: the client is shared by the process (client_for)."""

    def rows(self, start: int, end: int, fields: list[str], name: str | None = None) -> list[dict]:
        return self.query_all(name or self.passages_name, f"row >= {start} and row < {end}", fields)

    def all_passages(self) -> Iterator[Passage]:
        for start in range(0, self.passage_count, COPY_ROWS):
            for entity in sorted(self.rows(start, start + COPY_ROWS, ["row", "passage"]), key=lambda e: e["row"]):
                yield passage_from_json(entity["passage"])

    def chunks(self, drop_doc_ids: set[str]) -> Iterator[Chunk]:
        """The passages not in the dropped documents, with their units' vectors and ids, in row order."""
        vector_fields = list(self.fields.values())
        for start in range(0, self.passage_count, COPY_ROWS):
            passages = sorted(
                self.rows(start, start + COPY_ROWS, ["row", "doc_id", "passage", "tokens"]), key=lambda e: e["row"]
            )
            kept = [entity for entity in passages if entity["doc_id"] not in drop_doc_ids]
            if not kept:
                continue
            units = self.rows(start, start + COPY_ROWS, ["unit", "row", *vector_fields], name=self.units)
            kept_rows = {entity["row"] for entity in kept}
            units = sorted((unit for unit in units if unit["row"] in kept_rows), key=lambda u: (u["row"], u["unit"]))
            counts = dict.fromkeys((entity["row"] for entity in kept), 0)
            for unit in units:
                counts[unit["row"]] += 1
            yield Chunk(
                [passage_from_json(entity["passage"]) for entity in kept],
                [json.loads(entity["tokens"]) for entity in kept],
                list(counts.values()),
                {
                    model: np.array([unit[field] for unit in units], dtype=np.float32).reshape(len(units), -1)
                    for model, field in self.fields.items()
                },
                np.array([unit["unit"] for unit in units], dtype=np.int64),
            )


def open_milvus_store(settings: Settings, models: list[dict], settings_note: str) -> MilvusStore:
    """The live version in Milvus, checked against the configured models and settings like the FAISS store's."""
    client = client_for(settings)
    version = live_version(client, settings.milvus_collection, settings.milvus_uri)
    if version is None:
        raise IndexUnavailable(
            f"Milvus（{settings.milvus_uri}）中还没有索引 {settings.milvus_collection}：请运行 "
            "`dangjian-qa index`（DJQA_STORE=milvus）从文档构建，或 `dangjian-qa migrate` 从现有索引复制"
        )
    manifest = read_manifest(client, settings, version)
    check_manifest(manifest, models, settings_note)  # before the documents are read: a mismatch costs nothing
    return MilvusStore(client, settings, version, manifest)


def read_manifest(client: MilvusClient, settings: Settings, version: str) -> dict:
    """A version's manifest, from its records collection (loaded again if a restarted Milvus Lite released it)."""
    records = collection(settings.milvus_collection, version, RECORDS)
    with reaching(settings.milvus_uri):
        client.load_collection(records, timeout=settings.milvus_timeout_s)
        found = client.query(
            records, filter='key == "manifest"', output_fields=["value"], timeout=settings.milvus_timeout_s
        )
    if not found:
        raise IndexUnavailable(f"Milvus 中的索引版本 {version} 不完整（没有清单）。{REBUILD_HINT}")
    return json.loads(found[0]["value"])
