"""Extractive answers: the sentences of the top passages that best answer a question, each cited.

Whether to answer at all is decided by a logistic gate over evidence that means the same thing for
every query (fused scores are min-max normalised per query, so they do not):

- each model's best cosine between the question and any embedded unit (passage or sentence) of the
  top EVIDENCE_HITS hits; each model has its own band (m3e-small puts unrelated Chinese text near
  0.65–0.75, multilingual-e5-small packs everything into 0.80–0.92), so each gets its own weight;
- `coverage`: the IDF-weighted share of the question's words that the best-covered hit contains
  (a word the corpus never uses weighs most, so 「红烧肉」 alone sinks a question);
- `agreement`: the share of retrievers (each model and BM25) that rank the top hit in their own top 3.

    confidence = logistic(bias + Σ w_m · cosine_m + w_c · coverage + w_a · agreement)

answered when confidence ≥ settings.answer_min_confidence (0.5). The weights (one set per model
profile) are fitted by `python -m eval.fit_answer` on the dev split only and written to
service/resources/answer_gate.json, which this module loads; the test-split numbers are in the README.
"""

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.records import Hit
from service.search import Searcher, term_coverage
from service.stores import Filters
from service.text import CLOSERS, COLONS, COMMAS, FULL_STOPS, SEMICOLONS, sentence_spans

QueryVectors = Mapping[str, np.ndarray]  # a question's vector from each model (search.EncodedQuestion)
NOT_FOUND = "未找到与该问题相关的内容。可以换个说法，或使用更具体的党建术语。"

MAX_SENTENCES = 4
MAX_ANSWER_CHARS = 300  # about three sentences of a speech; longer reads as a passage, not an answer
MIN_SENTENCE_CHARS = 8  # shorter pieces are headings or enumerators (「一是」), not statements
NEAR_DUPLICATE_BIGRAMS = 0.6  # share of a sentence's character bigrams already said
# Cosine above which two sentences say the same, per model (each model has its own band).
NEAR_DUPLICATE_COSINE = {"m3e-small": 0.92, "multilingual-e5-small": 0.97}
EVIDENCE_HITS = 10  # evidence is read from this many hits whatever top_k asks, so it does not vary
AGREEMENT_RANK = 3  # a retriever agrees when it ranks the top hit this high itself
MIN_COSINE_SPAN = 0.05
ENUMERATOR = re.compile(
    r"[一二三四五六七八九十]+[是要、]|[（(][一二三四五六七八九十\d]+[）)]|第[一二三四五六七八九十]+[，、]|\d+[、.．]"
)
RUN_IN_HEADING_CHARS = 40


@dataclass(frozen=True)
class Evidence:
    """How well the hits support an answer, comparable across queries."""

    cosines: dict[str, float]  # each model's best cosine over the top hits
    coverage: float
    agreement: float
    verbatim: float = 0.0  # 1 when a top hit contains the whole question as typed (a keyword query)


@dataclass(frozen=True)
class Gate:
    """A fitted logistic gate: confidence = logistic(bias + Σ weight · feature)."""

    bias: float
    cosine_weights: dict[str, float]
    coverage: float
    agreement: float
    verbatim: float = 0.0


@dataclass(frozen=True)
class Selection:
    """How sentences are chosen for an answer (fitted on dev by eval.fit_answer)."""

    hit_share: float = 0.75  # only hits whose fused score is at least this share of the best one
    margin: float = 0.3  # a sentence this far below the best (in normalised units) no longer answers
    overlap_weight: float = 0.3  # the question's words in the sentence, next to its normalised cosines
    number_bonus: float = 0.3  # for a question asking how many / which year: sentences with a number


# Fitted by `python -m eval.fit_answer` on the dev split only (one gate per model profile), which writes
# this file; a profile not listed uses the model-free gate. Test-split numbers are reported, never tuned on.
GATE_FILE = Path(__file__).resolve().parent / "resources" / "answer_gate.json"


def load_gates(fitted: dict) -> dict[frozenset[str], Gate]:
    """The fitted gates of a gate file's contents, by the set of models they were fitted for."""
    return {
        frozenset(profile["models"]): Gate(
            bias=profile["bias"],
            cosine_weights=profile["cosine_weights"],
            coverage=profile["coverage"],
            agreement=profile["agreement"],
            verbatim=profile.get("verbatim", 0.0),
        )
        for profile in fitted["profiles"]
    }


FITTED = json.loads(GATE_FILE.read_text(encoding="utf-8"))
GATES = load_gates(FITTED)
# A question asking for a number is answered only by a sentence with one that uses at least this
# share of the question's words (IDF-weighted); fitted with the gate, 0 turns the check off.
NUMBER_MIN_OVERLAP = float(FITTED.get("number_min_overlap", 0.0))
MODEL_FREE_GATE = Gate(bias=-2.0, cosine_weights={}, coverage=3.0, agreement=2.0)
SELECTION = Selection()
ASKS_NUMBER = re.compile(
    r"多少|几(?:个|名|人|家|次|项|条|年|月|天|周|岁|小时|篇|种|级|成|倍|位)|哪一?年|何时|什么时候|比例|百分之|数量|多久|多长"
)
NUMBER = re.compile(
    r"\d|[一二三四五六七八九十百千万两]+(?:个|名|人|家|次|项|条|年|月|日|天|周|小时|岁|所|支|批|类|种|位|份|场|期"
    r"|倍|成|元|毫升|分之|比|%|％)"
)


@dataclass(frozen=True)
class Sentence:
    """A sentence of a hit's passage; start/end are offsets into the passage text."""

    hit: int
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class Answer:
    found: bool
    text: str
    confidence: float
    citations: tuple[Hit, ...]


def gather_evidence(
    hits: Sequence[Hit], query_tokens: Sequence[str], idf: dict[str, float], unseen: float, question: str = ""
) -> Evidence:
    """Each model's best cosine, the best single-hit term coverage, the retrievers' agreement on the
    top hit, and whether a hit contains the question word for word."""
    cosines: dict[str, float] = {}
    for hit in hits:
        for evidence in hit.models:
            cosines[evidence.model] = max(cosines.get(evidence.model, -1.0), evidence.score)
    coverage = max((term_coverage(query_tokens, set(hit.matched_terms), idf, unseen) for hit in hits), default=0.0)
    agreement = 0.0
    if hits:
        top = hits[0]
        votes = [evidence.rank <= AGREEMENT_RANK for evidence in top.models]
        votes.append(top.lexical_rank is not None and top.lexical_rank <= AGREEMENT_RANK)
        agreement = sum(votes) / len(votes)
    typed = re.sub(r"\W", "", question)
    verbatim = float(bool(typed) and any(typed in re.sub(r"\W", "", hit.passage.text) for hit in hits))
    return Evidence(cosines=cosines, coverage=coverage, agreement=agreement, verbatim=verbatim)


def gate_for(models: Sequence[str]) -> Gate:
    """The gate fitted for this set of models, else the model-free one."""
    return GATES.get(frozenset(models), MODEL_FREE_GATE)


def confidence(evidence: Evidence, gate: Gate) -> float:
    """Probability-like confidence in 0..1 that the hits answer the question (see module docstring)."""
    score = gate.bias + gate.coverage * evidence.coverage + gate.agreement * evidence.agreement
    score += gate.verbatim * evidence.verbatim
    score += sum(weight * evidence.cosines.get(model, 0.0) for model, weight in gate.cosine_weights.items())
    return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, score))))


def split_sentences(hits: Sequence[Hit]) -> list[Sentence]:
    """Every statement-length sentence of the hits' passages, in hit then text order.

    A run-in heading (「三是党建工作创新能力不足。」) names the point but does not make it: it is kept
    together with the sentence after it, so an answer never consists of headings alone.
    """
    sentences = []
    for number, hit in enumerate(hits):
        text = hit.passage.text
        spans = [(start, end) for start, end in sentence_spans(text) if text[start:end].strip()]
        position = 0
        while position < len(spans):
            start, end = spans[position]
            if is_run_in_heading(text[start:end]) and position + 1 < len(spans):
                position += 1
                end = spans[position][1]
            position += 1
            piece = text[start:end]
            lead, trail = len(piece) - len(piece.lstrip()), len(piece) - len(piece.rstrip())
            if len(piece.strip()) >= MIN_SENTENCE_CHARS:
                sentences.append(Sentence(number, start + lead, end - trail, piece.strip()))
    return sentences


def is_run_in_heading(sentence: str) -> bool:
    """A short numbered point (「一是…」「（五）…」「2、…」) opening a paragraph."""
    return len(sentence.strip()) <= RUN_IN_HEADING_CHARS and bool(ENUMERATOR.match(sentence.strip()))


def normalised_columns(cosines: np.ndarray) -> np.ndarray:
    """Each column (a model's cosines) scaled over the candidate sentences to [0, 1], the span at least
    MIN_COSINE_SPAN: differences smaller than that are noise, not a reason to prefer one sentence."""
    low, high = cosines.min(axis=0), cosines.max(axis=0)
    return (cosines - low) / np.maximum(high - low, MIN_COSINE_SPAN)


def sentence_scores(
    cosines: np.ndarray,
    question_tokens: Sequence[str],
    sentence_tokens: Sequence[Sequence[str]],
    idf: dict[str, float],
    unseen: float,
    numbers: Sequence[bool],
    selection: Selection = SELECTION,
) -> np.ndarray:
    """Per sentence: its models' cosines to the question (each scaled over the candidates, then
    averaged), plus the share of the question's words it uses, plus a bonus for a number when the
    question asks for one (`numbers` is all False otherwise)."""
    if len(cosines) == 0:
        return np.zeros(0, dtype=np.float32)
    overlaps = [term_coverage(question_tokens, set(tokens), idf, unseen) for tokens in sentence_tokens]
    return (
        normalised_columns(cosines).mean(axis=1)
        + selection.overlap_weight * np.asarray(overlaps, dtype=np.float32)
        + selection.number_bonus * np.asarray(numbers, dtype=np.float32)
    )


def bigrams(text: str) -> set[str]:
    compact = re.sub(r"\W", "", text)
    return {compact[i : i + 2] for i in range(len(compact) - 1)}


def is_near_duplicate(
    candidate: int, chosen: Sequence[int], texts: Sequence[str], vectors: np.ndarray | None, same_cosine: float
) -> bool:
    """Says (almost) the same as an already chosen sentence: by meaning (when vectors are given) or by wording."""
    grams = bigrams(texts[candidate])
    for other in chosen:
        if vectors is not None and float(vectors[candidate] @ vectors[other]) >= same_cosine:
            return True
        if grams and len(grams & bigrams(texts[other])) / len(grams) >= NEAR_DUPLICATE_BIGRAMS:
            return True
    return False


def select_sentences(
    sentences: Sequence[Sentence],
    scores: np.ndarray,
    vectors: np.ndarray | None,
    margin: float = SELECTION.margin,
    same_cosine: float = NEAR_DUPLICATE_COSINE["m3e-small"],
) -> list[int]:
    """Indices of the best sentences: close to the top score, no near-duplicates, within the caps."""
    if len(sentences) == 0:
        return []
    order = sorted(range(len(sentences)), key=lambda i: (-float(scores[i]), sentences[i].hit, sentences[i].start))
    best = float(scores[order[0]])
    texts = [sentence.text for sentence in sentences]
    chosen: list[int] = []
    length = 0
    for index in order:
        if len(chosen) == MAX_SENTENCES or float(scores[index]) < best - margin:
            break
        if chosen and length + len(texts[index]) > MAX_ANSWER_CHARS:
            continue
        if is_near_duplicate(index, chosen, texts, vectors, same_cosine):
            continue
        chosen.append(index)
        length += len(texts[index])
    return chosen


def as_statement(text: str) -> str:
    """A sentence cut at 「；」 or a clause mark reads as a whole one when it ends with 「。」."""
    core = text.rstrip(CLOSERS)
    if core and core[-1] in SEMICOLONS + COMMAS + COLONS:
        return core[:-1] + "。" + text[len(core) :]
    if core and core[-1] not in FULL_STOPS:
        return text + "。"
    return text


def compose_answer(
    sentences: Sequence[Sentence], chosen: Sequence[int], hits: Sequence[Hit]
) -> tuple[str, tuple[Hit, ...]]:
    """Chosen sentences in (hit rank, position) order, each followed by 【n】; citations in mark order."""
    ordered = sorted(chosen, key=lambda i: (sentences[i].hit, sentences[i].start))
    cited: list[int] = []
    pieces = []
    for index in ordered:
        sentence = sentences[index]
        if sentence.hit not in cited:
            cited.append(sentence.hit)
        pieces.append(f"{as_statement(sentence.text)}【{cited.index(sentence.hit) + 1}】")
    return "".join(pieces), tuple(hits[number] for number in cited)


def not_found(score: float) -> Answer:
    return Answer(found=False, text=NOT_FOUND, confidence=score, citations=())


class Answerer:
    """Answers questions from a Searcher's hits; sentence vectors come through the encoders' caches."""

    def __init__(self, searcher: Searcher, min_confidence: float, selection: Selection = SELECTION) -> None:
        self.searcher = searcher
        self.min_confidence = min_confidence
        self.selection = selection
        self.gate = gate_for(list(searcher.encoders))
        self.number_min_overlap = NUMBER_MIN_OVERLAP

    def evidence(
        self,
        question: str,
        query_vectors: QueryVectors | None = None,
        top_k: int = EVIDENCE_HITS,
        filters: Filters = Filters(),
    ) -> tuple[list[Hit], Evidence]:
        """max(top_k, EVIDENCE_HITS) hits for the question and the evidence of the first EVIDENCE_HITS:
        the ranking does not depend on top_k, so one search serves both. A scope's evidence uses its idf."""
        top = max(top_k, EVIDENCE_HITS)
        hits = self.searcher.search(question, top_k=top, filters=filters, query_vectors=query_vectors)
        tokens = list(dict.fromkeys(self.searcher.tokenizer.tokens(question)))
        scope = self.searcher.scope(filters.collections)
        idf = self.searcher.idf_of(tokens, scope)
        evidence = gather_evidence(hits[:EVIDENCE_HITS], tokens, idf, self.searcher.unseen_idf_of(scope), question)
        return hits, evidence

    def answer(self, question: str, top_k: int = 5, filters: Filters = Filters()) -> Answer:
        """An extractive, cited answer from the best of the top_k passages, or not-found below the bar."""
        query_vectors = self.searcher.query_vectors(question)
        hits, score = self.gated_hits(question, top_k, query_vectors, filters)
        return self.extract(question, hits, score, query_vectors, filters) if hits else not_found(score)

    def gated_hits(
        self,
        question: str,
        top_k: int = 5,
        query_vectors: QueryVectors | None = None,
        filters: Filters = Filters(),
    ) -> tuple[list[Hit], float]:
        """The top_k hits and the confidence; no hits when the question is refused (off-topic)."""
        hits, evidence = self.evidence(question, query_vectors, top_k, filters)
        score = confidence(evidence, self.gate)
        if not hits or score < self.min_confidence:
            return [], score
        return hits[:top_k], score

    def extract(
        self,
        question: str,
        hits: list[Hit],
        score: float,
        query_vectors: QueryVectors | None = None,
        filters: Filters = Filters(),
    ) -> Answer:
        """The extractive answer from hits that passed the gate (`query_vectors`: the question's, if known)."""
        best = hits[0].score
        hits = [hit for hit in hits if hit.score >= self.selection.hit_share * best]
        sentences = split_sentences(hits)
        asks_number = bool(ASKS_NUMBER.search(question))
        if asks_number:
            # How many, which year, what share: only a sentence with a number answers that. Without one
            # among the passages, the question is not answered here, however close the passages are.
            sentences = [sentence for sentence in sentences if NUMBER.search(sentence.text)]
        if not sentences:
            return not_found(score)
        texts = [sentence.text for sentence in sentences]
        query_vectors = query_vectors or self.searcher.query_vectors(question)
        vectors = {name: encoder.encode(texts) for name, encoder in self.searcher.encoders.items()}
        cosines = np.stack([vectors[name] @ query_vectors[name] for name in vectors], axis=1)
        tokenizer = self.searcher.tokenizer
        question_tokens = list(dict.fromkeys(tokenizer.tokens(question)))
        scope = self.searcher.scope(filters.collections)
        sentence_tokens = [tokenizer.tokens(text) for text in texts]
        idf = self.searcher.idf_of(question_tokens, scope)
        unseen = self.searcher.unseen_idf_of(scope)
        if asks_number and self.number_min_overlap > 0:
            # The number must be about what was asked: a contribution rate does not answer a question
            # on reimbursement. The best number sentence has to use enough of the question's words.
            overlaps = [term_coverage(question_tokens, set(tokens), idf, unseen) for tokens in sentence_tokens]
            if max(overlaps) < self.number_min_overlap:
                return not_found(score)
        scores = sentence_scores(
            cosines,
            question_tokens,
            sentence_tokens,
            idf,
            unseen,
            [asks_number and bool(NUMBER.search(text)) for text in texts],
            self.selection,
        )
        first = next(iter(vectors))
        same_cosine = NEAR_DUPLICATE_COSINE.get(first)
        chosen = select_sentences(
            sentences, scores, vectors[first] if same_cosine else None, self.selection.margin, same_cosine or 1.0
        )
        text, citations = compose_answer(sentences, chosen, hits)
        return Answer(found=True, text=text, confidence=score, citations=citations)
