"""Writing a version into Milvus (service/stores/milvus.py says how a version is laid out): create its
collections, stream units in, add passages with their BM25 weights once all are known, seal, check,
move the alias, drop what is no longer needed."""

import logging
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime

import numpy as np
import scipy.sparse
from pymilvus import DataType, MilvusClient, MilvusException

from service.config import Settings
from service.index import Chunk, IndexBusy, UnitIds, as_json, build_bm25, new_manifest
from service.records import Document
from service.stores import StoreUnreachable
from service.stores.milvus import (
    KEY_BYTES,
    PASSAGES,
    RECORDS,
    UNITS,
    MilvusStore,
    client_for,
    collection,
    live_version,
    reaching,
    read_manifest,
    term_key,
    usable_token,
)

TEXT_FIELD_BYTES = 65_535  # Milvus's largest VARCHAR
DOCUMENT_PART_CHARS = 16_000  # at most 4 bytes each in UTF-8: a part always fits a field
INSERT_BATCH = 1_000  # entities per insert: a few MB of vectors per message
# A passage with no words (all stopwords) still needs a non-empty sparse vector: a weight on a word
# number no vocabulary reaches and no question asks for scores nothing.
NO_WORD = 4_294_967_294
logger = logging.getLogger("dangjian_qa")


class VersionMoved(IndexBusy):
    """Another writer (on another machine) switched the live version while this change was being built."""

    def __init__(self) -> None:
        Exception.__init__(self, "另一个索引写入操作刚刚更新了索引，本次更改未生效；请重试")


def create_collections(client: MilvusClient, settings: Settings, version: str, models: list[dict]) -> None:
    """The three empty collections of a version (see the module's docstring)."""
    prefix, timeout = settings.milvus_collection, settings.milvus_timeout_s

    def document_fields(schema) -> None:
        schema.add_field("doc_id", DataType.VARCHAR, max_length=KEY_BYTES)
        schema.add_field("doc_type", DataType.VARCHAR, max_length=KEY_BYTES)
        schema.add_field("year", DataType.INT64)
        schema.add_field("collection", DataType.VARCHAR, max_length=KEY_BYTES)

    units = client.create_schema(auto_id=False, enable_dynamic_field=False)
    units.add_field("unit", DataType.INT64, is_primary=True)
    units.add_field("row", DataType.INT64)
    document_fields(units)
    unit_indexes = client.prepare_index_params()
    for position, model in enumerate(models):
        units.add_field(f"vec_{position}", DataType.FLOAT_VECTOR, dim=int(model["dimension"]))
        unit_indexes.add_index(f"vec_{position}", index_type=settings.milvus_index, metric_type="IP")
    unit_indexes.add_index("row", index_type="INVERTED")

    passages = client.create_schema(auto_id=False, enable_dynamic_field=False)
    passages.add_field("row", DataType.INT64, is_primary=True)
    document_fields(passages)
    passages.add_field("passage", DataType.VARCHAR, max_length=TEXT_FIELD_BYTES)
    passages.add_field("tokens", DataType.VARCHAR, max_length=TEXT_FIELD_BYTES)
    passages.add_field("bm25", DataType.SPARSE_FLOAT_VECTOR)
    passage_indexes = client.prepare_index_params()
    passage_indexes.add_index("bm25", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")

    records = client.create_schema(auto_id=False, enable_dynamic_field=False)
    records.add_field("key", DataType.VARCHAR, is_primary=True, max_length=KEY_BYTES)
    records.add_field("value", DataType.VARCHAR, max_length=TEXT_FIELD_BYTES)
    records.add_field("number", DataType.INT64)
    records.add_field("count", DataType.INT64)
    records.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field in every collection
    record_indexes = client.prepare_index_params()
    record_indexes.add_index("unused", index_type="FLAT", metric_type="IP")

    for part, schema, indexes in (
        (UNITS, units, unit_indexes),
        (PASSAGES, passages, passage_indexes),
        (RECORDS, records, record_indexes),
    ):
        client.create_collection(
            collection(prefix, version, part), schema=schema, index_params=indexes, timeout=timeout
        )


def insert(client: MilvusClient, name: str, entities: list[dict], timeout: float) -> None:
    for start in range(0, len(entities), INSERT_BATCH):
        client.insert(name, entities[start : start + INSERT_BATCH], timeout=timeout)


def record(key: str, value: str = "", number: int = 0, count: int = 0) -> dict:
    """An entity of a version's records collection (its vector field is unused, see create_collections)."""
    return {"key": key, "value": value, "number": number, "count": count, "unused": [0.0, 0.0]}


def checked_text(text: str, what: str) -> str:
    if len(text.encode()) > TEXT_FIELD_BYTES:
        raise ValueError(f"{what} 超过 Milvus 字段上限（{TEXT_FIELD_BYTES} 字节）")
    return text


def sparse_rows(tokens: list[list[str]]) -> tuple[scipy.sparse.csr_matrix, dict[str, int], np.ndarray]:
    """bm25s's weights by passage (CSR), its vocabulary, and each word's passage count."""
    bm25 = build_bm25(tokens)
    scores = bm25.scores
    words = len(scores["indptr"]) - 1  # bm25s's vocabulary may name "" without a column for it
    columns = scipy.sparse.csc_matrix((scores["data"], scores["indices"], scores["indptr"]), shape=(len(tokens), words))
    vocabulary = {token: number for token, number in bm25.vocab_dict.items() if token and number < words}
    return columns.tocsr(), vocabulary, np.diff(scores["indptr"])


def collection_frequencies(weights: scipy.sparse.csr_matrix, collections: list[str]) -> dict[str, np.ndarray]:
    """Each collection's passage count of every word (a passage's row names each of its words once)."""
    row_collections = np.array(collections, dtype=object)
    entry_collections = np.repeat(row_collections, np.diff(weights.indptr)) if len(collections) else row_collections
    return {
        name: np.bincount(weights.indices[entry_collections == name], minlength=weights.shape[1])
        for name in dict.fromkeys(collections)
    }


class MilvusVersionWriter:
    """Writes one version's collections, chunk by chunk; passages wait for BM25, which needs them all."""

    def __init__(
        self, client: MilvusClient, settings: Settings, version: str, models: list[dict], first_unit_id: int
    ) -> None:
        self.client, self.settings, self.models = client, settings, models
        self.timeout = settings.milvus_timeout_s
        self.names = {
            part: collection(settings.milvus_collection, version, part) for part in (UNITS, PASSAGES, RECORDS)
        }
        self.ids = UnitIds(first_unit_id)
        self.passages: list[dict] = []
        self.tokens: list[list[str]] = []
        self.unit_count = 0
        self.max_units = 0
        create_collections(client, settings, version, models)

    def append(self, chunk: Chunk, documents: dict[str, Document]) -> None:
        ids = self.ids.of(chunk)
        first_row = len(self.passages)
        units: list[dict] = []
        position = 0
        for offset, (passage, tokens, count) in enumerate(
            zip(chunk.passages, chunk.tokens, chunk.unit_counts, strict=True)
        ):
            document = documents[passage.doc_id]
            fields = {
                "doc_id": passage.doc_id,
                "doc_type": document.doc_type or "",
                "year": document.year or 0,
                "collection": document.collection,
            }
            self.passages.append(
                fields
                | {
                    "row": first_row + offset,
                    "passage": checked_text(as_json(asdict(passage)), f"段落 {passage.passage_id}"),
                    "tokens": checked_text(as_json(tokens), f"段落 {passage.passage_id} 的词"),
                }
            )
            for unit in range(position, position + count):
                vectors = {
                    f"vec_{i}": chunk.vectors[m["name"]][unit].astype(np.float32).tolist()
                    for i, m in enumerate(self.models)
                }
                units.append(fields | vectors | {"unit": int(ids[unit]), "row": first_row + offset})
            position += count
            self.max_units = max(self.max_units, count)
        self.tokens += chunk.tokens
        self.unit_count += len(units)
        insert(self.client, self.names[UNITS], units, self.timeout)

    def finish(self, documents: list[Document]) -> dict:
        """Passages with their BM25 weights, the vocabulary and the documents; the manifest's counts."""
        weights, vocabulary, frequencies = sparse_rows(self.tokens)
        by_collection = collection_frequencies(weights, [entity["collection"] for entity in self.passages])
        for start in range(0, len(self.passages), INSERT_BATCH):
            batch = self.passages[start : start + INSERT_BATCH]
            for entity in batch:
                row = weights.getrow(entity["row"])
                entity["bm25"] = dict(zip(row.indices.tolist(), row.data.tolist(), strict=True)) or {NO_WORD: 1.0}
            insert(self.client, self.names[PASSAGES], batch, self.timeout)
        terms = [
            record(
                term_key(token),
                as_json({name: int(counts[number]) for name, counts in by_collection.items() if counts[number]}),
                number=number,
                count=int(frequencies[number]),
            )
            for token, number in vocabulary.items()
            if usable_token(token)
        ]
        insert(self.client, self.names[RECORDS], terms, self.timeout)
        passages_per_document = Counter(entity["doc_id"] for entity in self.passages)
        parts = []
        for number, document in enumerate(documents):
            text = as_json(asdict(document))
            for part, start in enumerate(range(0, max(len(text), 1), DOCUMENT_PART_CHARS)):
                value = text[start : start + DOCUMENT_PART_CHARS]
                count = passages_per_document[document.doc_id]
                parts.append(record(f"d:{number:09d}:{part:06d}", value, number, count))
        insert(self.client, self.names[RECORDS], parts, self.timeout)
        return {
            "passage_count": len(self.passages),
            "unit_count": self.unit_count,
            "document_count": len(documents),
            "next_unit_id": self.ids.next_unit_id,
            "max_units_per_passage": self.max_units,
            "terms": len(terms),
        }

    def seal(self, manifest: dict) -> None:
        """Store the manifest, flush, and check that Milvus holds every entity before anyone may read it."""
        entry = record("manifest", checked_text(as_json(manifest), "清单"))
        insert(self.client, self.names[RECORDS], [entry], self.timeout)
        expected = {UNITS: manifest["unit_count"], PASSAGES: manifest["passage_count"]}
        for part, name in self.names.items():
            self.client.flush(name, timeout=self.timeout)
            if part in expected:
                found = self.client.query(
                    name, filter="", output_fields=["count(*)"], consistency_level="Strong", timeout=self.timeout
                )
                if int(found[0]["count(*)"]) != expected[part]:
                    raise StoreUnreachable(self.settings.milvus_uri, RuntimeError(f"{name} 写入不完整"))


def drop_version(client: MilvusClient, prefix: str, version: str, timeout: float) -> None:
    for part in (UNITS, PASSAGES, RECORDS):
        client.drop_collection(collection(prefix, version, part), timeout=timeout)


def versions_in(client: MilvusClient, prefix: str, timeout: float) -> set[str]:
    """Every version with a collection in Milvus (complete or not)."""
    names = client.list_collections(timeout=timeout)
    return {
        name.removeprefix(f"{prefix}_")[: -len(part) - 1]
        for name in names
        for part in (UNITS, PASSAGES, RECORDS)
        if name.startswith(f"{prefix}_") and name.endswith(f"_{part}")
    }


def write_milvus_version(
    settings: Settings,
    documents: list[Document],
    chunks: Iterable[Chunk],
    models: list[dict],
    settings_note: str,
    previous: MilvusStore | None = None,
    extra: dict | None = None,
) -> tuple[str, dict]:
    """Write a new complete version from chunks (kept passages first), then move the alias to it.

    `previous` is the version the change starts from: if another writer moved the alias since, the
    new version is dropped and VersionMoved raised (writers on one machine also share the index
    folder's lock). A failure before the switch drops what was written: the live version is untouched.
    Returns the version's name and manifest.
    """
    client = client_for(settings)
    prefix, timeout, uri = settings.milvus_collection, settings.milvus_timeout_s, settings.milvus_uri
    version = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "_" + uuid.uuid4().hex[:8]
    starting_from = live_version(client, prefix, uri)
    with reaching(uri):
        # Collections of versions that are neither live nor the one before were left by a killed writer.
        for stale in versions_in(client, prefix, timeout) - {
            starting_from,
            previous_of(client, settings, starting_from),
        }:
            drop_version(client, prefix, stale, timeout)
        try:
            by_id = {document.doc_id: document for document in documents}
            first_unit_id = int(previous.manifest.get("next_unit_id", 0)) if previous is not None else 0
            writer = MilvusVersionWriter(client, settings, version, models, first_unit_id)
            for chunk in chunks:
                writer.append(chunk, by_id)
            milvus_fields = {
                "store": "milvus",
                "milvus_index": settings.milvus_index,
                "previous_version": starting_from,
            }
            fields = {**(extra or {}), **milvus_fields, **writer.finish(documents)}
            manifest = new_manifest(documents, models, settings_note, fields)
            writer.seal(manifest)
            if previous is not None and live_version(client, prefix, uri) != previous.version:
                raise VersionMoved()
            records = collection(prefix, version, RECORDS)
            if starting_from is None:
                client.create_alias(records, prefix, timeout=timeout)
            else:
                client.alter_alias(records, prefix, timeout=timeout)
        except BaseException:
            try:
                drop_version(client, prefix, version, timeout)
            except MilvusException:
                logger.warning("未能删除未完成的 Milvus 索引版本 %s，下次写入时会清理", version)
            raise
        for old in versions_in(client, prefix, timeout) - {version, starting_from}:
            drop_version(client, prefix, old, timeout)
    return version, manifest


def previous_of(client: MilvusClient, settings: Settings, version: str | None) -> str | None:
    """The version before `version` (kept for searches still reading it), from its manifest."""
    return None if version is None else read_manifest(client, settings, version).get("previous_version")
