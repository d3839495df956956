"""The grounding check of a generated answer: every sentence that stays is cited and supported.

A model's answer is cut into sentences (text.sentence_spans; a citation mark written after the full
stop, 「……。【2】」, belongs to the sentence before it). Citation numbers that name no passage are
dropped; a sentence left with no citation, or whose cited passages do not support it, is removed.

Support of a sentence by a passage, for each model m of the searcher:

    cosine_m = max cosine between the sentence's vector and the passage's units (whole + sentences)
    lexical  = share of the sentence's character bigrams that occur in the passage
    support  = logistic(bias + Σ w_m · cosine_m + w_l · lexical)

and a sentence citing several passages takes the best of them. It is supported when
support ≥ threshold (0.5: the lowest value at which at most 2% of the dev negatives pass would be
lower). The weights and the threshold are fitted by `python -m eval.fit_grounding`
on the dev split only (labelled pairs: a relevant passage's sentences, whole and cut to their
leading clauses, against their own passage are supported; sentences of other passages of the same
and of other documents against it are not); its output is in the README.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.embed import Encoders, unit_texts
from service.records import Passage
from service.text import sentence_spans

# 【1】, 【1，3】, 【1】【2】 and the ASCII [1] some models write instead.
CITATION = re.compile(r"[【\[]\s*(\d{1,3}(?:\s*[,，、]\s*\d{1,3})*)\s*[】\]]")
LEADING_CITATIONS = re.compile(r"^(?:\s*[【\[]\s*\d{1,3}(?:\s*[,，、]\s*\d{1,3})*\s*[】\]])+")
MIN_CLAIM_CHARS = 4  # shorter leftovers (「是的。」「如下：」) state nothing to check


@dataclass(frozen=True)
class SupportModel:
    """support = logistic(bias + Σ cosine_weights[m] · cosine_m + lexical · bigram share)."""

    bias: float
    cosine_weights: dict[str, float]
    lexical: float
    threshold: float


# Fitted by `python -m eval.fit_grounding` on the dev split (one per model profile, as the answer gate).
SUPPORT_MODELS: dict[frozenset[str], SupportModel] = {
    frozenset({"m3e-small", "multilingual-e5-small"}): SupportModel(
        # dev pairs: own sentences accepted 200/200, cut to leading clauses 157/158; sentences of other
        # passages of the same document accepted 2/568, of other documents 0/284.
        bias=-30.792,
        cosine_weights={"m3e-small": 8.248, "multilingual-e5-small": 22.453},
        lexical=4.344,
        threshold=0.5,
    ),
}
# Without a fitted profile: lexical overlap alone (a sentence mostly in the passage's own words).
LEXICAL_ONLY = SupportModel(bias=-4.0, cosine_weights={}, lexical=8.0, threshold=0.5)


@dataclass(frozen=True)
class CheckedSentence:
    text: str  # the sentence without its citation marks
    citations: tuple[int, ...]  # valid passage numbers, 1-based, in the order written
    support: float
    kept: bool
    reason: str | None = None  # no_citation, unsupported


@dataclass(frozen=True)
class CheckedAnswer:
    text: str  # the kept sentences, each followed by its 【n】 marks
    sentences: tuple[CheckedSentence, ...]

    @property
    def kept(self) -> int:
        return sum(sentence.kept for sentence in self.sentences)

    @property
    def removed(self) -> int:
        return len(self.sentences) - self.kept


def support_model_for(models: Sequence[str]) -> SupportModel:
    return SUPPORT_MODELS.get(frozenset(models), LEXICAL_ONLY)


def bigram_list(text: str) -> list[str]:
    compact = re.sub(r"[\W_]", "", text)
    return [compact[i : i + 2] for i in range(len(compact) - 1)]


def lexical_share(sentence: str, passage_text: str) -> float:
    """Share of the sentence's character bigrams found in the passage (1.0 for a copied sentence)."""
    grams = bigram_list(sentence)
    if not grams:
        return 0.0
    found = set(bigram_list(passage_text))
    return sum(gram in found for gram in grams) / len(grams)


def split_cited(answer: str) -> list[tuple[str, list[int]]]:
    """(sentence without marks, cited numbers) per sentence; marks opening a sentence go to the one before."""
    pieces: list[tuple[str, list[int]]] = []
    answer = answer.replace("\r", "")  # the spans and the slices must come from the same text
    for start, end in sentence_spans(answer):
        piece = answer[start:end]
        leading = LEADING_CITATIONS.match(piece)
        if leading and pieces:
            pieces[-1][1].extend(numbers_in(leading.group(0)))
            piece = piece[leading.end() :]
        numbers = numbers_in(piece)
        text = CITATION.sub("", piece).strip()
        if text:
            pieces.append((text, numbers))
        elif numbers and pieces:
            pieces[-1][1].extend(numbers)
    return pieces


def numbers_in(text: str) -> list[int]:
    return [int(n) for match in CITATION.finditer(text) for n in re.split(r"\s*[,，、]\s*", match.group(1))]


class GroundingChecker:
    """Checks generated answers against the passages they were generated from."""

    def __init__(self, encoders: Encoders, support_model: SupportModel | None = None) -> None:
        self.encoders = encoders
        self.support_model = support_model or support_model_for(list(encoders))

    def sentence_vectors(self, sentences: Sequence[str]) -> dict[str, np.ndarray]:
        """Each model's vectors of the answer's sentences, outside the vector cache: they are the
        model's words, not the documents', and would only grow it."""
        return {name: self.encoders[name].embed_batch(list(sentences)) for name in self.support_model.cosine_weights}

    def features(
        self, sentences: Sequence[str], passage: Passage, vectors: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Per sentence: each model's best cosine to the passage's units (the ones the index embedded,
        through the cache), then the lexical share. `vectors`: the sentences' vectors, if known."""
        vectors = vectors or self.sentence_vectors(sentences)
        units = unit_texts(passage, with_context=False)
        columns = [
            (vectors[name] @ self.encoders[name].encode(units).T).max(axis=1)
            for name in self.support_model.cosine_weights
        ]
        columns.append(np.asarray([lexical_share(sentence, passage.text) for sentence in sentences]))
        return np.stack(columns, axis=1)

    def support(
        self, sentences: Sequence[str], passage: Passage, vectors: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """support in 0..1 of each sentence by the passage (see module docstring)."""
        if not sentences:
            return np.zeros(0)
        model = self.support_model
        weights = np.asarray([*model.cosine_weights.values(), model.lexical])
        scores = np.clip(model.bias + self.features(sentences, passage, vectors) @ weights, -50.0, 50.0)
        return 1.0 / (1.0 + np.exp(-scores))

    def check(self, answer: str, passages: Sequence[Passage]) -> CheckedAnswer:
        """The answer with unsupported and uncited sentences removed, and the verdict on each."""
        checked = []
        claims = split_cited(answer)
        vectors = self.sentence_vectors([text for text, _ in claims]) if claims else {}
        for position, (text, numbers) in enumerate(claims):
            valid = tuple(dict.fromkeys(n for n in numbers if 1 <= n <= len(passages)))
            if len(re.sub(r"[\W_]", "", text)) < MIN_CLAIM_CHARS:
                continue  # a connective or a bare mark: neither kept nor counted as removed
            if not valid:
                checked.append(CheckedSentence(text, (), 0.0, False, "no_citation"))
                continue
            own = {name: model_vectors[position : position + 1] for name, model_vectors in vectors.items()}
            supports = {n: float(self.support([text], passages[n - 1], own)[0]) for n in valid}
            best = max(supports.values())
            kept = best >= self.support_model.threshold
            # A kept sentence keeps only the marks of passages that support it (a wrong extra one goes).
            cited = tuple(n for n in valid if supports[n] >= self.support_model.threshold) if kept else valid
            checked.append(CheckedSentence(text, cited, best, kept, None if kept else "unsupported"))
        kept_text = "".join(
            sentence.text + "".join(f"【{n}】" for n in sentence.citations) for sentence in checked if sentence.kept
        )
        return CheckedAnswer(text=kept_text, sentences=tuple(checked))
