"""Fit the grounding check's support rule on the dev split only: `python -m eval.fit_grounding`.

Labelled pairs (sentence, passage) from the relevant passages of the dev split's on-topic questions:

- supported: each sentence of the passage against it, whole and cut to its leading clauses (what a
  model that condenses keeps);
- not supported: sentences of other passages of the same document (same topic and vocabulary, a
  different statement: a correct sentence citing the wrong passage) and of other documents.

The rule is a logistic regression over each model's best cosine and the bigram share (eval.fit_answer's
fit, classes weighted equally); the threshold is 0.5, or higher when more than MAX_FALSE_ACCEPT of the
dev negatives would pass it. It prints a `SupportModel(...)` for service/grounding.py with the dev rates.
"""

import argparse
import random

import numpy as np

from eval.fit_answer import fit_logistic
from eval.questions import ON_TOPIC_KINDS, checked_labels, load_questions
from service.config import Settings
from service.engine import open_searcher
from service.grounding import GroundingChecker, SupportModel
from service.text import CLAUSE, sentence_spans

MAX_FALSE_ACCEPT = 0.02  # an invented or wrongly cited sentence must almost never survive
MIN_SENTENCE_CHARS = 8
NEGATIVES_PER_PASSAGE = 8


def sentences_of(text: str) -> list[str]:
    pieces = [text[s:e].strip() for s, e in sentence_spans(text)]
    return [piece for piece in pieces if len(piece) >= MIN_SENTENCE_CHARS]


def leading_clauses(sentence: str) -> str | None:
    """The first half of a sentence's clauses, when it has at least two."""
    clauses = [sentence[s:e] for s, e in sentence_spans(sentence, CLAUSE)]
    if len(clauses) < 2:
        return None
    cut = "".join(clauses[: len(clauses) // 2]).rstrip("，,、：:")
    return cut + "。" if len(cut) >= MIN_SENTENCE_CHARS else None


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.fit_grounding", description=__doc__.splitlines()[0])
    parser.parse_args()
    settings = Settings()
    searcher = open_searcher(settings)
    models = list(searcher.encoders)
    passages = list(searcher.store.all_passages())
    questions = [q for q in load_questions(split="dev") if q.kind in ON_TOPIC_KINDS]
    labels = checked_labels(questions, passages)
    by_id = {p.passage_id: p for p in passages}
    chosen = sorted({pid for ids in labels.values() for pid in ids})
    rng = random.Random(11)
    checker = GroundingChecker(searcher.encoders, SupportModel(0.0, dict.fromkeys(models, 1.0), 1.0, 0.5))
    rows, targets, kinds = [], [], []
    for pid in chosen:
        passage = by_id[pid]
        own = sentences_of(passage.text)
        positives = own + [cut for cut in map(leading_clauses, own) if cut]
        same_doc = [
            s for p in passages if p.doc_id == passage.doc_id and p.passage_id != pid for s in sentences_of(p.text)
        ]
        other_doc = [s for p in passages if p.doc_id != passage.doc_id for s in sentences_of(p.text)]
        same_doc = [s for s in same_doc if s not in passage.text]
        negatives = rng.sample(same_doc, min(NEGATIVES_PER_PASSAGE, len(same_doc)))
        negatives += rng.sample(other_doc, min(NEGATIVES_PER_PASSAGE // 2, len(other_doc)))
        texts = positives + negatives
        rows.extend(checker.features(texts, passage).tolist())
        targets += [1.0] * len(positives) + [0.0] * len(negatives)
        kinds += ["own"] * len(own) + ["cut"] * (len(positives) - len(own))
        kinds += ["same_doc"] * min(NEGATIVES_PER_PASSAGE, len(same_doc)) + ["other_doc"] * (
            len(negatives) - min(NEGATIVES_PER_PASSAGE, len(same_doc))
        )
    features = np.array(rows)
    labels_array = np.array(targets)
    theta = fit_logistic(np.column_stack([np.ones(len(features)), features]), labels_array)
    scores = np.column_stack([np.ones(len(features)), features]) @ theta
    support = 1.0 / (1.0 + np.exp(-np.clip(scores, -50, 50)))
    negative_support = np.sort(support[labels_array == 0])
    cut = int(np.ceil(len(negative_support) * (1 - MAX_FALSE_ACCEPT))) - 1
    threshold = max(0.5, float(negative_support[cut]) + 1e-3)
    bias, *cosines, lexical = (round(float(value), 3) for value in theta)
    model = SupportModel(bias, dict(zip(models, cosines, strict=True)), lexical, round(threshold, 3))
    print(f"profile {models}: {model}")
    print(f"dev pairs from {len(chosen)} relevant passages of {len(questions)} questions:")
    kinds_array = np.array(kinds)
    for kind in ("own", "cut", "same_doc", "other_doc"):
        mask = kinds_array == kind
        print(f"  {kind:9s} n={mask.sum():4d} accepted {float((support[mask] >= model.threshold).mean()):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
