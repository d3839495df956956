"""`dangjian-qa bench-scale`: build a synthetic index of N passages and measure it in a fresh process.

Embedding a million passages on two cores takes days, so the corpus is synthetic and its vectors
composed: every passage is 2-5 sentences drawn at random from the seeds; a sentence unit gets the
real model's vector of that seed sentence plus a little noise (cosine ~0.95 to it, so that copies
of one sentence are distinct points, as a real corpus's sentences are), a clause unit (with
settings.clause_units) likewise its seed clause's, and the whole-passage unit the normalised mean
of its sentences' vectors. BM25 tokens are the seed sentences' own. Everything
after that is the product's code path: VersionWriter (chunks, approximate index, BM25, passage
table), load_index, Searcher.

The measurement runs in a child process (`python -m service.scale query INDEX_DIR`) so that its
start-up and memory are those of a fresh server: cold start is from launching it to its first
answered question (model loading included); latency is Searcher.search for hybrid top-10 given the
question's vectors (encoding does not depend on the corpus; its own median is reported beside),
over every question twice: the second pass is a running server's (`p50_ms`, `p95_ms`), the first
pass's figures, which read the index from disk, are reported too; recall@10 compares each model's
approximate dense top 10 with an exact scan.
"""

import itertools
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.config import PROJECT_ROOT, Settings
from service.embed import MIN_SENTENCE_UNIT, Encoders, clause_texts
from service.engine import models_info, open_encoders, open_searcher, open_tokenizer, settings_note, source_files
from service.index import Chunk, write_version
from service.ingest import ingest_paths
from service.records import Document, Passage
from service.search import Searcher
from service.stores.faiss import FaissStore
from service.text import sentence_spans
from service.vectors import one_thread_per_search

PASSAGES_PER_DOCUMENT = 20
SENTENCES_PER_PASSAGE = (2, 5)  # the seeds' body paragraphs hold two to five sentences mostly
CHUNK_PASSAGES = 10_000
NOISE = 0.33  # norm of the noise added to a unit sentence vector: cosine to the original ~0.95
RECALL_QUESTIONS = 60  # questions whose approximate top 10 is checked against an exact scan
QUESTIONS_FILE = PROJECT_ROOT / "eval" / "questions.jsonl"
FIRST_ANSWER = "first-answer"


@dataclass(frozen=True)
class SeedSentence:
    text: str
    title: str
    section_path: tuple[str, ...]


def seed_sentences(passages: Iterator[Passage]) -> list[SeedSentence]:
    """Unique sentences of the seed passages long enough to be embedded on their own."""
    found: dict[str, SeedSentence] = {}
    for passage in passages:
        for start, end in sentence_spans(passage.text):
            text = passage.text[start:end].strip()
            if len(text) >= MIN_SENTENCE_UNIT and text not in found:
                found[text] = SeedSentence(text, passage.title, passage.section_path)
    return list(found.values())


def unit_normalised(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@dataclass(frozen=True)
class SeedClauses:
    """The clause units of the seed sentences (service.embed.clause_texts): each sentence's clause
    numbers and every clause's vector per model; no clauses when the index has no clause units."""

    of_sentence: list[np.ndarray]  # int64 clause numbers of each seed sentence
    vectors: dict[str, np.ndarray]  # model -> (clauses, dimension)


def jittered(vectors: np.ndarray, noise: np.random.Generator) -> np.ndarray:
    """Each vector plus a little noise, normalised (cosine ~0.95 to the original)."""
    jitter = noise.standard_normal(vectors.shape, dtype=np.float32) * (NOISE / np.sqrt(vectors.shape[1]))
    return unit_normalised(vectors + jitter)


def synthetic_chunks(
    sentences: list[SeedSentence],
    count: int,
    vectors: dict[str, np.ndarray],
    tokens: list[list[str]],
    documents: list[Document],
    clauses: SeedClauses,
    seed: int = 7,
) -> Iterator[Chunk]:
    """`count` synthetic passages in chunks; appends their documents to `documents` as it goes.

    A passage's units are laid out as unit_texts does: the whole, its sentences, their clauses."""
    rng, noise = random.Random(seed), np.random.default_rng(seed)
    for first in range(0, count, CHUNK_PASSAGES):
        picks = [
            rng.sample(range(len(sentences)), rng.randint(*SENTENCES_PER_PASSAGE))
            for _ in range(first, min(count, first + CHUNK_PASSAGES))
        ]
        passages, chunk_tokens = [], []
        for number, chosen in enumerate(picks, start=first):
            doc_number, paragraph = divmod(number, PASSAGES_PER_DOCUMENT)
            doc_id = f"syn{doc_number:06d}"
            lead = sentences[chosen[0]]
            if paragraph == 0:
                documents.append(
                    Document(doc_id, f"{lead.title}（合成 {doc_number}）", f"{doc_id}.txt", "", content_hash=doc_id)
                )
            text = "".join(sentences[s].text for s in chosen)
            passages.append(
                Passage(
                    f"{doc_id}:{paragraph + 1}",
                    doc_id,
                    documents[-1].title,
                    lead.section_path,
                    paragraph + 1,
                    0,
                    len(text),
                    text,
                )
            )
            chunk_tokens.append(list(itertools.chain.from_iterable(tokens[s] for s in chosen)))
        flat = np.concatenate([np.array(chosen) for chosen in picks])
        lengths = np.array([len(chosen) for chosen in picks])
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        clause_flat = np.concatenate([np.zeros(0, dtype=np.int64), *(clauses.of_sentence[s] for s in flat)])
        clause_counts = np.add.reduceat([len(clauses.of_sentence[s]) for s in flat], starts)
        unit_counts = 1 + lengths + clause_counts
        unit_starts = np.concatenate([[0], np.cumsum(unit_counts)[:-1]])
        whole_at = unit_starts
        sentence_at = layout(unit_starts + 1, lengths)
        clause_at = layout(unit_starts + 1 + lengths, clause_counts)
        chunk_vectors = {}
        for model, model_vectors in vectors.items():
            units = np.empty((int(unit_counts.sum()), model_vectors.shape[1]), dtype=np.float32)
            units[whole_at] = unit_normalised(np.add.reduceat(model_vectors[flat], starts, axis=0))
            units[sentence_at] = jittered(model_vectors[flat], noise)
            units[clause_at] = jittered(clauses.vectors[model][clause_flat], noise)
            chunk_vectors[model] = units
        yield Chunk(passages, chunk_tokens, unit_counts.tolist(), chunk_vectors)


def layout(firsts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Positions firsts[i], firsts[i]+1, … (counts[i] of them) for every i, concatenated."""
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(firsts, counts) + offsets


def seed_clauses(texts: list[str], encoders: Encoders, with_clauses: bool) -> SeedClauses:
    """The seed sentences' clauses and their real vectors (none without clause units)."""
    per_sentence = [clause_texts(text) if with_clauses else [] for text in texts]
    bounds = np.cumsum([0, *(len(found) for found in per_sentence)])
    flat = [clause for found in per_sentence for clause in found]
    return SeedClauses(
        [np.arange(bounds[i], bounds[i + 1], dtype=np.int64) for i in range(len(texts))],
        {name: encoder.encode(flat) for name, encoder in encoders.items()},
    )


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def build(count: int, index_dir: Path, settings: Settings) -> dict:
    """Write the synthetic index of `count` passages into index_dir; what it cost."""
    encoders, tokenizer = open_encoders(settings), open_tokenizer(settings)
    # The seeds read from their files, not from an index: a scale run needs no index of its settings.
    sentences = seed_sentences(iter(ingest_paths(source_files(settings.seeds_dir)).passages))
    texts = [sentence.text for sentence in sentences]
    vectors = {name: encoder.encode(texts) for name, encoder in encoders.items()}
    tokens = [tokenizer.tokens(text) for text in texts]
    clauses = seed_clauses(texts, encoders, settings.clause_units)
    documents: list[Document] = []
    started = time.perf_counter()
    chunks = synthetic_chunks(sentences, count, vectors, tokens, documents, clauses)
    version_dir = write_version(index_dir, documents, chunks, models_info(encoders), settings_note(settings))
    build_seconds = time.perf_counter() - started
    manifest = json.loads((version_dir / "manifest.json").read_text(encoding="utf-8"))
    return {
        "passages": count,
        "clause_units": settings.clause_units,
        "units": manifest["unit_count"],
        "documents": len(documents),
        "seed_sentences": len(sentences),
        "approximate": bool(manifest["ann_trained_units"]),
        "build_s": round(build_seconds, 1),
        "build_peak_rss_mb": round(memory_mb("VmHWM"), 1),
        "disk_mb": round(folder_bytes(version_dir) / 2**20, 1),
    }


def memory_mb(field: str, pid: str = "self") -> float:
    """A process's memory figure from /proc (VmRSS: resident now, VmHWM: peak), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def questions() -> list[str]:
    """The eval questions when the checkout has them (a data file: service never imports eval)."""
    if not QUESTIONS_FILE.is_file():
        return ["党员领导干部如何过好双重组织生活", "公立医院党委的职责是什么", "医德医风建设怎么抓"]
    with QUESTIONS_FILE.open(encoding="utf-8") as handle:
        return [json.loads(line)["question"] for line in handle if line.strip()]


def percentile(values: list[float], share: float) -> float:
    return float(np.percentile(np.array(values), share * 100))


def exact_top_rows(searcher: Searcher, model: str, queries: np.ndarray, k: int) -> list[set[int]]:
    """Each query's k best passages by a full scan of every unit (the reference for recall).

    All queries at once, a block of passages at a time, so the float16 matrix is read and
    converted once, not once per question.
    """
    assert isinstance(searcher.store, FaissStore)  # bench-scale writes and reads a FAISS index folder
    index = searcher.store.index
    matrix = index.vectors[model].matrix
    best_rows = np.zeros((0, len(queries)), dtype=np.int64)
    best_scores = np.zeros((0, len(queries)), dtype=np.float32)
    for first in range(0, len(index.passages), 50_000):
        last = min(first + 50_000, len(index.passages))
        begin, end = int(index.row_starts[first]), int(index.row_starts[last])
        scores = np.asarray(matrix[begin:end], dtype=np.float32) @ queries.T
        by_row = np.maximum.reduceat(scores, index.row_starts[first:last] - begin, axis=0)
        rows = np.broadcast_to(np.arange(first, last)[:, None], by_row.shape)
        candidates, candidate_rows = np.vstack([best_scores, by_row]), np.vstack([best_rows, rows])
        keep = np.argsort(-candidates, axis=0, kind="stable")[:k]
        best_scores = np.take_along_axis(candidates, keep, axis=0)
        best_rows = np.take_along_axis(candidate_rows, keep, axis=0)
    return [set(best_rows[:, number].tolist()) for number in range(len(queries))]


def measure(index_dir: Path, settings: Settings) -> dict:
    """In a fresh process: time to the first answer, then latency, memory and recall."""
    one_thread_per_search()  # as the server does (service/serve.py)
    searcher = open_searcher(
        settings.model_copy(update={"store": "faiss", "index_dir": index_dir, "query_cache_size": 0})
    )
    asked = questions()
    searcher.search(asked[0], top_k=10)
    print(FIRST_ANSWER, flush=True)  # the parent's clock for the cold start stops here
    vectors, encode_ms = [], []
    for question in asked:
        begin = time.perf_counter()
        vectors.append(dict(searcher.query_vectors(question)))  # encoded now, timed here
        encode_ms.append((time.perf_counter() - begin) * 1000)
    passes = []
    for _ in range(2):  # the first pass reads the index from disk; the second is a server's steady state
        search_ms = []
        for question, query_vectors in zip(asked, vectors, strict=True):
            begin = time.perf_counter()
            searcher.search(question, top_k=10, query_vectors=query_vectors)
            search_ms.append((time.perf_counter() - begin) * 1000)
        passes.append(search_ms)
    rss = memory_mb("VmRSS")
    recall = {}
    for model in searcher.encoders:
        queries = np.stack([query_vectors[model] for query_vectors in vectors[:RECALL_QUESTIONS]])
        found = []
        for query, exact in zip(queries, exact_top_rows(searcher, model, queries, 10), strict=True):
            dense = searcher.store.dense(model, query, searcher.candidates, None)
            found.append(len(set(sorted(dense, key=lambda row: -dense[row])[:10]) & exact) / 10)
        recall[model] = round(float(np.mean(found)), 4)
    return {
        "rss_mb": round(rss, 1),
        "p50_ms": round(percentile(passes[1], 0.5), 2),
        "p95_ms": round(percentile(passes[1], 0.95), 2),
        "first_pass_p50_ms": round(percentile(passes[0], 0.5), 2),
        "first_pass_p95_ms": round(percentile(passes[0], 0.95), 2),
        "encode_p50_ms": round(percentile(encode_ms, 0.5), 2),
        "questions": len(asked),
        "recall_at_10": min(recall.values()),
        "recall_at_10_by_model": recall,
    }


def bench_scale(count: int, scratch: Path, settings: Settings) -> dict:
    """Build in this process, measure in a child; one JSON-able result."""
    index_dir = scratch / "index"
    built = build(count, index_dir, settings)
    command = [sys.executable, "-m", "service.scale", "query", str(index_dir)]
    launched = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=PROJECT_ROOT) as child:
        assert child.stdout is not None
        lines = iter(child.stdout.readline, "")
        cold_start = next((time.perf_counter() - launched for line in lines if line.strip() == FIRST_ANSWER), None)
        output = child.stdout.read()
    if child.returncode or cold_start is None:
        raise RuntimeError(f"the measuring process failed (exit {child.returncode})")
    return {**built, "cold_start_s": round(cold_start, 2), **json.loads(output.strip().splitlines()[-1])}


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "query":
        print(json.dumps(measure(Path(argv[1]), Settings())))
        return 0
    print("usage: python -m service.scale query INDEX_DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
