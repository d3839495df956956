"""Wiring: settings -> encoders, tokenizer, index, searcher; and building an index from files."""

import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

from tqdm import tqdm

from embeddings.encoder import TextEncoder, open_encoder
from service.config import Settings
from service.embed import Encoders, embed_with_settings
from service.extras import import_extra
from service.index import (
    Chunk,
    SearchIndex,
    carry_out,
    current_version,
    load_index,
    new_chunk,
    write_version,
    writer_lock,
)
from service.ingest import Corpus, Limits, ProcessLimits, doc_id_for, ingest_paths
from service.ingest.read import SUPPORTED_SUFFIXES
from service.links import grouped, links_change, load_links, with_questions
from service.originals import kept_collection, original_files, remove_incoming
from service.records import Document, Passage
from service.rerank import load_fusion
from service.search import Searcher
from service.stores import Store
from service.stores.faiss import FaissStore
from service.tokenize import WordTokenizer, trimmed_dictionary


class NothingToIndex(Exception):
    """The folder to index has no supported file (and there are no kept originals)."""


@dataclass(frozen=True)
class BuildReport:
    corpus: Corpus
    version: str
    seconds: float
    encode_seconds: float


def open_encoders(settings: Settings, build: bool = False) -> Encoders:
    """The configured embedding models by name (ModelError when one is missing or its weights differ).
    `build`: for an index build, every model on one thread (the build runs a batch per core)."""
    encoders: Encoders = {}
    for name in settings.models:
        encoder = open_encoder(
            name,
            settings.models_dir,
            settings.cache_dir,
            settings.batch_size,
            settings.query_cache_size,
            1 if build else settings.encoder_threads.get(name, 1),
            settings.encoder_engines.get(name, "fp32"),
        )
        encoders[encoder.model_name] = encoder
    return encoders


def open_tokenizer(settings: Settings) -> WordTokenizer:
    dictionary = trimmed_dictionary(settings.cache_dir, settings.jieba_min_freq)
    return WordTokenizer(settings.user_dict, settings.stopwords, dictionary, settings.spoken_terms)


def model_info(encoder: TextEncoder) -> dict:
    return {
        "name": encoder.model_name,
        "weights_sha256": encoder.weights_sha256,
        "engine": encoder.engine,
        "dimension": encoder.dimension,
    }


def models_info(encoders: Encoders) -> list[dict]:
    return [model_info(encoder) for encoder in encoders.values()]


def settings_note(settings: Settings) -> str:
    """What else shapes the index besides the documents: a change means the index is stale."""
    dictionary = settings.user_dict.read_bytes() if settings.user_dict.is_file() else b""
    stopwords = settings.stopwords.read_bytes() if settings.stopwords.is_file() else b""
    words = hashlib.sha256(dictionary + b"\0" + stopwords).hexdigest()[:16]
    # Said only when on, so that indexes built before the setting existed still load.
    title = "lexical_title=True;" if settings.lexical_title else ""
    return (
        f"embed_context={settings.embed_context};clause_units={settings.clause_units};{title}"
        f"words={words};jieba_min_freq={settings.jieba_min_freq}"
    )


def source_files(folder: Path) -> list[Path]:
    """Supported files (.txt .md .docx .pdf) below a folder, in name order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)


def with_originals(paths: list[Path], uploads_dir: Path) -> tuple[list[Path], list[Path]]:
    """`paths` without those a kept original of a user's document replaces, and those originals.

    A user who replaced a seed document through `add` keeps their version after a rebuild.
    """
    originals = original_files(uploads_dir)
    kept_ids = {original.stem for original in originals}
    return [path for path in paths if doc_id_for(path) not in kept_ids], originals


def ingest_limits(settings: Settings) -> Limits:
    """What one user's document may cost (size, unpacked size, characters, passages, PDF pages and content)."""
    return Limits(
        file_bytes=settings.max_upload_bytes,
        unpacked_bytes=settings.max_unpacked_bytes,
        characters=settings.max_document_chars,
        passages=settings.max_document_passages,
        pdf_pages=settings.max_pdf_pages,
        pdf_page_bytes=settings.max_pdf_page_bytes,
        pdf_content_bytes=settings.max_pdf_content_bytes,
    )


def parse_limits(settings: Settings) -> ProcessLimits:
    """The child process a user's document is read in (CPU time, wall time, memory, parses at once)."""
    return ProcessLimits(
        cpu_seconds=settings.parse_cpu_seconds,
        wall_seconds=settings.parse_wall_seconds,
        memory_bytes=settings.parse_memory_bytes,
        parallel=settings.parallel_parses,
    )


def indexable_files(folder: Path, uploads_dir: Path) -> list[Path]:
    """The supported files of a folder to index; NothingToIndex when neither it nor uploads_dir has any."""
    if not folder.is_dir():
        raise NothingToIndex(f"文档目录不存在：{folder}")
    paths = source_files(folder)
    if not paths and not original_files(uploads_dir):
        raise NothingToIndex(f"{folder} 中没有可索引的文件（{' '.join(SUPPORTED_SUFFIXES)}）")
    return paths


BUILD_CHUNK = 2_048  # passages embedded and written at a time: a build's memory does not grow with the corpus


def indexed_chunks(
    passages: list[Passage], settings: Settings, encoders: Encoders, tokenizer: WordTokenizer, progress: bool = False
) -> Iterator[Chunk]:
    """The passages embedded and tokenised, BUILD_CHUNK at a time."""
    with tqdm(total=len(passages), desc="编码段落", unit="段", disable=not progress) as bar:
        for start in range(0, len(passages), BUILD_CHUNK):
            batch = passages[start : start + BUILD_CHUNK]
            unit_vectors, tokens = embed_with_settings(batch, encoders, tokenizer, settings)
            yield new_chunk(batch, unit_vectors, tokens)
            bar.update(len(batch))


def write_passages(
    documents: list[Document],
    passages: list[Passage],
    settings: Settings,
    encoders: Encoders,
    tokenizer: WordTokenizer,
    progress: bool = False,
    moves: Sequence[tuple[Path, Path]] = (),
) -> str:
    """Embed and tokenise passages into a new live version of the configured store; its name."""
    chunks = indexed_chunks(passages, settings, encoders, tokenizer, progress)
    note = settings_note(settings)
    version, _ = save_version(settings, documents, chunks, models_info(encoders), note, moves=moves)
    return version


def milvus_part(name: str) -> ModuleType:
    """service.stores.milvus or .milvus_writer, imported only when the Milvus store is configured:
    pymilvus (with pandas) costs 0.4 s and 110 MB at start-up, which the FAISS store never needs, and
    is the `milvus` extra (MissingExtra when it is not installed)."""
    return import_extra(f"service.stores.{name}", "milvus", "Milvus 存储（DJQA_STORE=milvus）")


def save_version(
    settings: Settings,
    documents: list[Document],
    chunks: Iterable[Chunk],
    models: list[dict],
    note: str,
    previous: Store | None = None,
    extra: dict | None = None,
    moves: Sequence[tuple[Path, Path]] = (),
    removals: Sequence[Path] = (),
) -> tuple[str, dict]:
    """A new complete version in the configured store, made live; its name and manifest.

    `moves` and `removals` (users' kept originals) are carried out once it is live: by the index
    folder's pending plan for FAISS, straight after the alias moves for Milvus.
    """
    if settings.store == "milvus":
        writer = milvus_part("milvus_writer")
        version, manifest = writer.write_milvus_version(settings, documents, chunks, models, note, previous, extra)
        carry_out(moves, removals)
        return version, manifest
    before = previous.index if isinstance(previous, FaissStore) else None
    version_dir = write_version(settings.index_dir, documents, chunks, models, note, before, extra, moves, removals)
    return version_dir.name, json.loads((version_dir / "manifest.json").read_text(encoding="utf-8"))


def store_lock(settings: Settings, create: bool = False) -> AbstractContextManager[None]:
    """The writers' lock. Milvus writers on one machine share the index folder's (made if missing);
    writers on other machines are caught when they switch versions (milvus_writer.VersionMoved)."""
    create = create or settings.store == "milvus"
    return writer_lock(settings.index_dir, create=create, timeout=settings.writer_wait_seconds)


def store_version(settings: Settings) -> str | None:
    """The name of the live version, or None when there is none."""
    if settings.store == "milvus":
        milvus = milvus_part("milvus")
        return milvus.live_version(milvus.client_for(settings), settings.milvus_collection, settings.milvus_uri)
    return current_version(settings.index_dir)


def build_index(
    paths: list[Path],
    settings: Settings,
    encoders: Encoders,
    tokenizer: WordTokenizer,
    progress: bool = False,
    with_uploads: bool = False,
) -> BuildReport:
    """Ingest files, embed, tokenise and save a new index version atomically.

    Holds the writer lock throughout, so a build and an `add` or `remove` never interleave.
    `with_uploads` adds the kept originals of settings.uploads_dir, listed under the lock; they are
    users' files, read as uploads are (limits, a child process), while `paths` are read here. It also
    adds the linked questions (service/links.py) of passages whose text is unchanged; the others are dropped.
    """
    started = time.perf_counter()
    with store_lock(settings, create=True):
        moves: list[tuple[Path, Path]] = []
        originals: list[Path] = []
        if with_uploads:
            remove_incoming(settings.uploads_dir)
            paths, originals = with_originals(paths, settings.uploads_dir)
        corpus = ingest_paths(paths)
        corpus = ingest_paths(originals, ingest_limits(settings), parse_limits(settings), corpus)
        corpus.documents = in_collections(corpus.documents, [*paths, *originals], settings)
        passages = corpus.passages
        if with_uploads and (links := load_links(settings.uploads_dir)):
            passages = with_questions(passages, links)
            doc_ids = [*(document.doc_id for document in corpus.documents), *(link.doc_id for link in links)]
            moves = links_change(settings.uploads_dir, links, grouped(passages, doc_ids))
        encode_started = time.perf_counter()
        version = write_passages(corpus.documents, passages, settings, encoders, tokenizer, progress, moves)
        encode_seconds = time.perf_counter() - encode_started
    return BuildReport(corpus, version, time.perf_counter() - started, encode_seconds)


def in_collections(documents: list[Document], paths: list[Path], settings: Settings) -> list[Document]:
    """The documents of a build in their collections: a kept original's recorded one (service/originals.py),
    settings.seeds_collection for the other files."""
    uploads = settings.uploads_dir.resolve()
    collection_of = {
        doc_id_for(path): kept_collection(settings.uploads_dir, path.stem)
        if path.resolve().parent == uploads
        else settings.seeds_collection
        for path in paths
    }
    return [replace(document, collection=collection_of[document.doc_id]) for document in documents]


def load_current(settings: Settings, encoders: Encoders) -> SearchIndex:
    """The index folder's live version, checked against the configured models and settings."""
    return load_index(settings.index_dir, models_info(encoders), settings_note(settings))


def open_store(settings: Settings, encoders: Encoders) -> Store:
    """The live version of the configured store, checked against the configured models and settings."""
    if settings.store == "milvus":
        return milvus_part("milvus").open_milvus_store(settings, models_info(encoders), settings_note(settings))
    return FaissStore(load_current(settings, encoders))


def migrate_to_milvus(settings: Settings, encoders: Encoders) -> tuple[str, dict]:
    """Copy the index folder's live version into Milvus as its live version, vectors and all (no encoding)."""
    faiss_settings = settings.model_copy(update={"store": "faiss"})
    milvus_settings = settings.model_copy(update={"store": "milvus"})
    with store_lock(milvus_settings):
        source = open_store(faiss_settings, encoders)
        try:
            manifest = source.manifest
            extra = {key: manifest[key] for key in ("applied_jobs",) if key in manifest}
            documents, chunks = list(source.documents.values()), source.chunks(set())
            return save_version(
                milvus_settings, documents, chunks, manifest["models"], manifest["settings"], None, extra
            )
        finally:
            source.close()


def open_searcher(
    settings: Settings, encoders: Encoders | None = None, tokenizer: WordTokenizer | None = None
) -> Searcher:
    """Load the index (IndexUnavailable if missing or mismatched) and wrap it in a Searcher."""
    encoders = encoders or open_encoders(settings)
    return Searcher(
        open_store(settings, encoders),
        encoders,
        tokenizer or open_tokenizer(settings),
        dense_weight=settings.dense_weight,
        lexical_weight=settings.lexical_weight,
        candidates=settings.candidates,
        model_weights=settings.model_weights,
        document_weight=settings.document_weight,
        document_evidence=settings.document_evidence,
        fusion=load_fusion(list(encoders)) if settings.fitted_fusion else None,
    )
