"""Scale run for the bench: a synthetic corpus of N passages recombined from the seeds' sentences.

Embedding 100,000 passages with m3e-small on two cores takes hours, so the index is built from
composed vectors: every sentence unit gets the real model's vector of that seed sentence, and every
whole-passage unit the normalised mean of its sentences' vectors. The FAISS, BM25 and passage-store
work is the real code path (`assemble_index`, `save_index`, `load_index`, `Searcher`); embedding time
is measured on a sample of synthetic passages with an empty cache and extrapolated.

`python -m eval.scale query INDEX_DIR` runs in a child process so that its peak RSS is only the
loaded index and the query work.
"""

import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embeddings.encoder import TextEncoder
from eval.metrics import latency_summary
from eval.questions import load_questions
from service.config import MODES, Settings
from service.embed import MIN_SENTENCE_UNIT, lexical_text, unit_texts
from service.engine import models_info, open_encoders, open_searcher, open_tokenizer, settings_note
from service.index import assemble_index, save_index
from service.records import Document, Passage
from service.text import sentence_spans

PASSAGES_PER_DOCUMENT = 20
SENTENCES_PER_PASSAGE = (2, 5)  # the seeds' body paragraphs hold two to five sentences mostly
QUERY_ROUNDS = 1  # every eval question this many times per mode


@dataclass(frozen=True)
class SeedSentence:
    text: str
    title: str
    section_path: tuple[str, ...]


def seed_sentences(passages: list[Passage]) -> list[SeedSentence]:
    """Unique sentences of the seed passages long enough to be embedded on their own."""
    found: dict[str, SeedSentence] = {}
    for passage in passages:
        for start, end in sentence_spans(passage.text):
            text = passage.text[start:end].strip()
            if len(text) >= MIN_SENTENCE_UNIT and text not in found:
                found[text] = SeedSentence(text, passage.title, passage.section_path)
    return list(found.values())


def synthetic_corpus(
    sentences: list[SeedSentence], count: int, seed: int = 7
) -> tuple[list[Document], list[Passage], list[list[str]]]:
    """`count` passages of 2-5 random seed sentences, PASSAGES_PER_DOCUMENT to a synthetic document.

    Also returns the seed sentences each passage is made of.
    """
    rng = random.Random(seed)
    documents, passages, parts = [], [], []
    for number in range(count):
        chosen = rng.sample(sentences, rng.randint(*SENTENCES_PER_PASSAGE))
        doc_number, paragraph = divmod(number, PASSAGES_PER_DOCUMENT)
        doc_id = f"syn{doc_number:05d}"
        if paragraph == 0:
            title = f"{chosen[0].title}（合成 {doc_number}）"
            documents.append(Document(doc_id, title, f"{doc_id}.txt", "", content_hash=doc_id))
        text = "".join(sentence.text for sentence in chosen)
        parts.append([sentence.text for sentence in chosen])
        passages.append(
            Passage(
                f"{doc_id}:{paragraph + 1}",
                doc_id,
                documents[-1].title,
                chosen[0].section_path,
                paragraph + 1,
                0,
                len(text),
                text,
            )
        )
    return documents, passages, parts


def composed_unit_vectors(
    passages: list[Passage], parts: list[list[str]], vector_of: dict[str, np.ndarray]
) -> tuple[list[np.ndarray], int]:
    """Unit vectors of each passage from its seed sentences' vectors; also how many units had no exact match.

    The whole passage gets the normalised mean of its sentences; a sentence unit that the splitter cut
    differently from the seed (rare) gets the whole-passage vector.
    """
    all_units, approximated = [], 0
    for passage, sentences in zip(passages, parts, strict=True):
        texts = unit_texts(passage, with_context=False)
        whole = np.mean([vector_of[sentence] for sentence in sentences], axis=0)
        whole /= np.linalg.norm(whole)
        units = [whole]
        for text in texts[1:]:
            units.append(vector_of.get(text, whole))
            approximated += text not in vector_of
        all_units.append(np.stack(units).astype(np.float32))
    return all_units, approximated


def composed_tokens(
    passages: list[Passage],
    parts: list[list[str]],
    tokens_of: dict[str, list[str]],
    section_tokens: Callable[[str], list[str]],
) -> list[list[str]]:
    """BM25 tokens of each passage: its section's, then its sentences' (jieba cuts at punctuation anyway)."""
    return [
        section_tokens(passage.section) + [token for sentence in sentences for token in tokens_of[sentence]]
        for passage, sentences in zip(passages, parts, strict=True)
    ]


def seconds_to_embed(texts: list[str], encoder: TextEncoder) -> float:
    """Wall seconds to embed texts with the model, bypassing the cache, in length-sorted batches."""
    texts = sorted(texts, key=len)
    started = time.perf_counter()
    for start in range(0, len(texts), encoder.batch_size):
        encoder.embed_batch(texts[start : start + encoder.batch_size])
    return time.perf_counter() - started


def embedding_sample(passages: list[Passage], encoders: dict[str, TextEncoder]) -> dict:
    """Embedding rates with no cache, measured apart for whole passages and sentence units.

    The synthetic sentences repeat (they come from the seeds), a real corpus's do not: so the full
    time is extrapolated per kind of unit, not per passage of the sample.
    """
    wholes = [passage.text for passage in passages]
    sentences = sorted({text for passage in passages for text in unit_texts(passage, with_context=False)[1:]})
    whole_seconds = sum(seconds_to_embed(wholes, encoder) for encoder in encoders.values())
    sentence_seconds = sum(seconds_to_embed(sentences, encoder) for encoder in encoders.values())
    return {
        "sample_passages": len(wholes),
        "sample_sentences": len(sentences),
        "whole_passages_per_second": len(wholes) / whole_seconds,
        "sentences_per_second": len(sentences) / sentence_seconds,
    }


def build_scale_index(count: int, index_dir: Path, sample: int, settings: Settings) -> dict:
    """Generate, compose, assemble and save the synthetic index; returns the timings and sizes."""
    encoders, tokenizer = open_encoders(settings), open_tokenizer(settings)
    seeds = open_searcher(settings, encoders, tokenizer).index.passages
    sentences = seed_sentences(seeds)
    started = time.perf_counter()
    documents, passages, parts = synthetic_corpus(sentences, count)
    texts = [s.text for s in sentences]
    vectors_of = {name: dict(zip(texts, encoder.encode(texts), strict=True)) for name, encoder in encoders.items()}
    tokens_of = {s.text: tokenizer.tokens(s.text) for s in sentences}
    section_cache: dict[str, list[str]] = {}

    def section_tokens(section: str) -> list[str]:
        return section_cache.setdefault(section, tokenizer.tokens(section))

    unit_vectors, approximated = {}, 0
    for name, vector_of in vectors_of.items():
        unit_vectors[name], approximated = composed_unit_vectors(passages, parts, vector_of)
    tokens = composed_tokens(passages, parts, tokens_of, section_tokens)
    generate_seconds = time.perf_counter() - started

    jieba_sample = passages[:: max(1, count // 1000)][:1000]
    jieba_started = time.perf_counter()
    for passage in jieba_sample:
        tokenizer.tokens(lexical_text(passage))
    jieba_rate = len(jieba_sample) / (time.perf_counter() - jieba_started)

    started = time.perf_counter()
    index = assemble_index(documents, passages, unit_vectors, tokens, models_info(encoders), settings_note(settings))
    assemble_seconds = time.perf_counter() - started
    del unit_vectors
    started = time.perf_counter()
    version_dir = save_index(index, index_dir)
    save_seconds = time.perf_counter() - started
    units = next(iter(index.vectors.values())).ntotal
    del index

    embedding = embedding_sample(passages[:: max(1, count // sample)][:sample], encoders)
    return {
        "passages": count,
        "documents": len(documents),
        "units": units,
        "seed_sentences": len(sentences),
        "units_without_exact_vector": approximated,
        "generate_seconds": generate_seconds,
        "build_seconds": assemble_seconds + save_seconds,
        "assemble_seconds": assemble_seconds,
        "save_seconds": save_seconds,
        "index_bytes": sum(path.stat().st_size for path in version_dir.rglob("*") if path.is_file()),
        "jieba_passages_per_second": jieba_rate,
        "jieba_extrapolated_seconds": count / jieba_rate,
        "embedding": embedding,
        "embedding_extrapolated_hours": (
            count / embedding["whole_passages_per_second"] + (units - count) / embedding["sentences_per_second"]
        )
        / 3600,
    }


def peak_rss_bytes(pid: str = "self") -> int:
    """Peak resident set size (VmHWM) of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def query_index(index_dir: Path) -> dict:
    """Load an index, query it with the eval questions in every mode; latency and peak RSS."""
    started = time.perf_counter()
    searcher = open_searcher(Settings(index_dir=index_dir))
    load_seconds = time.perf_counter() - started
    questions = [q.question for q in load_questions()]
    latency = {}
    for mode in MODES:
        searcher.search(questions[0], mode=mode)
        seconds = []
        for question in questions * QUERY_ROUNDS:
            started = time.perf_counter()
            searcher.search(question, top_k=10, mode=mode)
            seconds.append(time.perf_counter() - started)
        latency[mode] = {**latency_summary(seconds), "queries": len(seconds)}
    return {"load_seconds": load_seconds, "latency": latency}


def main(argv: list[str]) -> int:
    """`build COUNT INDEX_DIR SAMPLE` or `query INDEX_DIR`; prints the measurements as JSON."""
    if len(argv) == 4 and argv[0] == "build":
        result = build_scale_index(int(argv[1]), Path(argv[2]), int(argv[3]), Settings())
    elif len(argv) == 2 and argv[0] == "query":
        result = query_index(Path(argv[1]))
    else:
        print("usage: python -m eval.scale build COUNT INDEX_DIR SAMPLE | query INDEX_DIR", file=sys.stderr)
        return 2
    print(json.dumps({**result, "peak_rss_bytes": peak_rss_bytes()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
