"""What the model reads for each passage, and the vectors and BM25 tokens of a batch of passages."""

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from embeddings.encoder import TextEncoder
from service.records import Passage
from service.text import sentence_spans
from service.tokenize import WordTokenizer

Encoders = dict[str, TextEncoder]  # the configured embedding models by name, in configured order
MIN_SENTENCE_UNIT = 6  # shorter "sentences" (凡例, 一是…) carry too little meaning to embed alone
EMBED_POOL = ThreadPoolExecutor(4, "embed")  # one per process: an upload embeds in many small batches


def unit_texts(passage: Passage, with_context: bool) -> list[str]:
    """What the model reads for a passage: the whole passage, then each of its sentences.

    A question usually matches one sentence of an argument; a whole-passage vector blurs it. The
    passage's dense score is the best of its units (see search.Searcher). Prefixing title and section
    (with_context) was measured and hurts m3e-small on our dev set, so it is off by default.
    """
    whole = f"{passage.title}｜{passage.section}\n{passage.text}" if with_context else passage.text
    sentences = [passage.text[s:e].strip() for s, e in sentence_spans(passage.text)]
    sentences = [sentence for sentence in sentences if len(sentence) >= MIN_SENTENCE_UNIT]
    return [whole, *sentences] if len(sentences) > 1 else [whole]


def lexical_text(passage: Passage) -> str:
    """What BM25 reads for a passage: its section path (headings name the topic) and its text."""
    return f"{passage.section}\n{passage.text}"


def embed_and_tokenize(
    passages: list[Passage],
    encoders: Encoders,
    tokenizer: WordTokenizer,
    with_context: bool,
    progress: bool = False,
) -> tuple[dict[str, list[np.ndarray]], list[list[str]]]:
    """Each model's unit vectors of each passage (through its cache), and the passages' BM25 tokens."""
    texts = [unit_texts(p, with_context) for p in passages]
    flat = [text for units in texts for text in units]
    bounds = list(itertools.pairwise(np.cumsum([0, *(len(units) for units in texts)])))
    # The models run side by side, one core each (settings.encoder_threads); the first shows progress.
    futures = {
        name: EMBED_POOL.submit(encoder.encode, flat, progress=progress and position == 0)
        for position, (name, encoder) in enumerate(encoders.items())
    }
    vectors = {name: future.result() for name, future in futures.items()}
    unit_vectors = {
        name: [model_vectors[start:end] for start, end in bounds] for name, model_vectors in vectors.items()
    }
    return unit_vectors, [tokenizer.tokens(lexical_text(p)) for p in passages]
