"""What the model reads for each passage, and the vectors and BM25 tokens of a batch of passages."""

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from embeddings.encoder import TextEncoder, encode_models
from service.config import Settings
from service.records import Passage
from service.text import CLAUSE, COLONS, COMMAS, SENTENCE_ENDS, sentence_spans
from service.tokenize import WordTokenizer

Encoders = dict[str, TextEncoder]  # the configured embedding models by name, in configured order
MIN_SENTENCE_UNIT = 6  # shorter "sentences" (凡例, 一是…) carry too little meaning to embed alone
MIN_CLAUSE_UNIT = 8  # a shorter clause (「要坚持」) matches any question a little; on dev 6 and 8 ranked alike
# jieba is pure Python: it tokenizes for BM25 in this thread while onnxruntime (which releases the GIL) encodes.
TOKENIZE_POOL = ThreadPoolExecutor(1, "tokenize")


def clause_texts(sentence: str) -> list[str]:
    """The clauses of a sentence of several (cut at 「，、：」), each without its mark, MIN_CLAUSE_UNIT long."""
    pieces = [
        sentence[s:e].strip().rstrip(COMMAS + COLONS + SENTENCE_ENDS) for s, e in sentence_spans(sentence, CLAUSE)
    ]
    return [piece for piece in pieces if len(piece) >= MIN_CLAUSE_UNIT] if len(pieces) > 1 else []


def unit_texts(passage: Passage, with_context: bool, with_clauses: bool = False) -> list[str]:
    """What the model reads for a passage: the whole passage, each of its sentences, then (with_clauses)
    each clause of its sentences.

    A question usually matches one sentence of an argument; a whole-passage vector blurs it. The
    passage's dense score is the best of its units (see search.Searcher). A spoken question often
    names one point of a sentence (「党员一人包几个同事」 for 「…党员联系职工“网格化”管理体系…」), and the
    sentence's other clauses pull its vector away: clause units lifted dev MRR@10 0.791 → 0.843
    (spoken style 0.488 → 0.600), for about three times the vectors. Prefixing title and section
    (with_context) was measured and hurts m3e-small on our dev set, so it is off by default.
    Questions linked to the passage (service/links.py) come last, one unit each.
    """
    whole = f"{passage.title}｜{passage.section}\n{passage.text}" if with_context else passage.text
    sentences = [passage.text[s:e].strip() for s, e in sentence_spans(passage.text)]
    units = [whole, *(s for s in sentences if len(s) >= MIN_SENTENCE_UNIT)] if len(sentences) > 1 else [whole]
    if with_clauses:
        units += [clause for sentence in sentences for clause in clause_texts(sentence)]
    units += passage.questions
    return list(dict.fromkeys(units))  # a repeated sentence or clause would only repeat a vector


def lexical_text(passage: Passage, with_title: bool = False) -> str:
    """What BM25 reads for a passage: its section path (headings name the topic), with_title its
    document's title too, its text and its linked questions (their words are how users name what the
    passage answers)."""
    return "\n".join([*([passage.title] if with_title else []), passage.section, passage.text, *passage.questions])


def embed_and_tokenize(
    passages: list[Passage],
    encoders: Encoders,
    tokenizer: WordTokenizer,
    with_context: bool,
    with_clauses: bool,
    workers: int = 1,
    progress: bool = False,
    with_title: bool = False,
) -> tuple[dict[str, list[np.ndarray]], list[list[str]]]:
    """Each model's unit vectors of each passage (through its cache, `workers` batches at a time), and
    the passages' BM25 tokens, made while the models encode."""
    texts = [unit_texts(p, with_context, with_clauses) for p in passages]
    flat = [text for units in texts for text in units]
    bounds = list(itertools.pairwise(np.cumsum([0, *(len(units) for units in texts)])))
    tokens = TOKENIZE_POOL.submit(lambda: [tokenizer.tokens(lexical_text(p, with_title)) for p in passages])
    vectors = encode_models(encoders, flat, workers, progress)
    unit_vectors = {
        name: [model_vectors[start:end] for start, end in bounds] for name, model_vectors in vectors.items()
    }
    return unit_vectors, tokens.result()


def embed_with_settings(
    passages: list[Passage], encoders: Encoders, tokenizer: WordTokenizer, settings: Settings
) -> tuple[dict[str, list[np.ndarray]], list[list[str]]]:
    """embed_and_tokenize as the settings shape units, BM25 text and the build's workers."""
    return embed_and_tokenize(
        passages,
        encoders,
        tokenizer,
        settings.embed_context,
        settings.clause_units,
        settings.index_workers,
        with_title=settings.lexical_title,
    )
