"""Wiring: settings -> encoder, tokenizer, index, searcher; and building an index from files."""

import hashlib
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embeddings.encoder import Encoder
from service.config import Settings
from service.index import SearchIndex, assemble_index, load_index, save_index, unit_texts, writer_lock
from service.ingest import Corpus, doc_id_for, ingest_paths
from service.ingest.read import SUPPORTED_SUFFIXES
from service.originals import original_files
from service.records import Document, Passage
from service.search import Searcher
from service.tokenize import WordTokenizer, trimmed_dictionary


@dataclass(frozen=True)
class BuildReport:
    corpus: Corpus
    version_dir: Path
    seconds: float
    encode_seconds: float


def open_encoder(settings: Settings) -> Encoder:
    return Encoder(
        settings.model_dir, settings.cache_dir, batch_size=settings.batch_size, query_cache=settings.query_cache_size
    )


def open_tokenizer(settings: Settings) -> WordTokenizer:
    dictionary = trimmed_dictionary(settings.cache_dir, settings.jieba_min_freq)
    return WordTokenizer(settings.user_dict, settings.stopwords, dictionary)


def model_info(encoder: Encoder) -> dict:
    return {"name": encoder.model_name, "weights_sha256": encoder.weights_sha256, "dimension": encoder.dimension}


def settings_note(settings: Settings) -> str:
    """What else shapes the index besides the documents: a change means the index is stale."""
    dictionary = settings.user_dict.read_bytes() if settings.user_dict.is_file() else b""
    stopwords = settings.stopwords.read_bytes() if settings.stopwords.is_file() else b""
    words = hashlib.sha256(dictionary + b"\0" + stopwords).hexdigest()[:16]
    return f"embed_context={settings.embed_context};words={words};jieba_min_freq={settings.jieba_min_freq}"


def source_files(folder: Path) -> list[Path]:
    """Supported files (.txt .md .docx .pdf) below a folder, in name order."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)


def with_originals(paths: list[Path], uploads_dir: Path) -> list[Path]:
    """`paths` and then the kept originals of users' documents; an original wins over a file with its doc id.

    A user who replaced a seed document through `add` keeps their version after a rebuild.
    """
    originals = original_files(uploads_dir)
    kept_ids = {original.stem for original in originals}
    return [path for path in paths if doc_id_for(path) not in kept_ids] + originals


def embed_and_tokenize(
    passages: list[Passage], settings: Settings, encoder: Encoder, tokenizer: WordTokenizer, progress: bool = False
) -> tuple[list[np.ndarray], list[list[str]]]:
    """The unit vectors (through the cache) and BM25 tokens of each passage."""
    texts = [unit_texts(p, settings.embed_context) for p in passages]
    vectors = encoder.encode([text for units in texts for text in units], progress=progress)
    bounds = np.cumsum([0, *(len(units) for units in texts)])
    unit_vectors = [vectors[start:end] for start, end in itertools.pairwise(bounds)]
    return unit_vectors, [tokenizer.tokens(f"{p.section}\n{p.text}") for p in passages]


def index_passages(
    documents: list[Document],
    passages: list[Passage],
    settings: Settings,
    encoder: Encoder,
    tokenizer: WordTokenizer,
    progress: bool = False,
) -> SearchIndex:
    """Embed and tokenise passages into an in-memory index."""
    unit_vectors, tokens = embed_and_tokenize(passages, settings, encoder, tokenizer, progress)
    return assemble_index(documents, passages, unit_vectors, tokens, model_info(encoder), settings_note(settings))


def build_index(
    paths: list[Path],
    settings: Settings,
    encoder: Encoder,
    tokenizer: WordTokenizer,
    progress: bool = False,
    with_uploads: bool = False,
) -> BuildReport:
    """Ingest files, embed, tokenise and save a new index version atomically.

    Holds the writer lock throughout, so a build and an `add` or `remove` never interleave.
    `with_uploads` adds the kept originals of settings.uploads_dir, listed under the lock.
    """
    started = time.perf_counter()
    with writer_lock(settings.index_dir, create=True):
        if with_uploads:
            paths = with_originals(paths, settings.uploads_dir)
        corpus = ingest_paths(paths)
        encode_started = time.perf_counter()
        index = index_passages(corpus.documents, corpus.passages, settings, encoder, tokenizer, progress)
        encode_seconds = time.perf_counter() - encode_started
        version_dir = save_index(index, settings.index_dir)
    return BuildReport(corpus, version_dir, time.perf_counter() - started, encode_seconds)


def open_searcher(
    settings: Settings, encoder: Encoder | None = None, tokenizer: WordTokenizer | None = None
) -> Searcher:
    """Load the index (IndexUnavailable if missing or mismatched) and wrap it in a Searcher."""
    encoder = encoder or open_encoder(settings)
    index = load_index(settings.index_dir, model_info(encoder))
    return Searcher(
        index,
        encoder,
        tokenizer or open_tokenizer(settings),
        dense_weight=settings.dense_weight,
        lexical_weight=settings.lexical_weight,
        candidates=settings.candidates,
    )
