"""Fit /api/ask's not-found gate and sentence selection on the dev split only: `python -m eval.fit_answer`.

The gate is a logistic regression over service.answer.Evidence (each model's best cosine, lexical
coverage, retriever agreement), on-topic questions labelled 1 and off-topic ones 0, classes weighted
equally (there are far fewer off-topic questions) and a small L2 penalty. It prints the fitted
weights as a `Gate(...)` to paste into service/answer.py's GATES, with the dev rates they give;
then a small grid over the sentence selection, scored on dev by key-fact presence and sentence
precision. Test-split questions are never read here.
"""

import argparse
import itertools
import math
from dataclasses import replace

import numpy as np
from scipy.optimize import minimize

from eval.questions import OFFTOPIC_KINDS, ON_TOPIC_KINDS, load_questions
from eval.run import ask_outcome
from service.answer import Answerer, Evidence, Gate, Selection, confidence
from service.config import Settings
from service.engine import open_searcher

L2 = 0.01


def features(evidence: Evidence, models: list[str]) -> list[float]:
    cosines = [evidence.cosines.get(model, 0.0) for model in models]
    return [1.0, *cosines, evidence.coverage, evidence.agreement, evidence.verbatim]


def fit_logistic(rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Weights minimising class-balanced log-loss plus L2 on standardised features (the bias is not
    penalised); returned for the raw features, so that the gate needs no scaling at run time."""
    weights = np.where(labels == 1, 0.5 / labels.mean(), 0.5 / (1 - labels.mean()))
    centre, spread = rows[:, 1:].mean(axis=0), rows[:, 1:].std(axis=0) + 1e-9
    scaled = np.column_stack([rows[:, 0], (rows[:, 1:] - centre) / spread])

    def loss(theta: np.ndarray) -> float:
        z = scaled @ theta
        log_likelihood = labels * -np.logaddexp(0, -z) + (1 - labels) * -np.logaddexp(0, z)
        return float(-(weights * log_likelihood).mean() + L2 * (theta[1:] ** 2).sum())

    theta = minimize(loss, np.zeros(rows.shape[1]), method="L-BFGS-B").x
    raw = theta[1:] / spread
    return np.concatenate([[theta[0] - float(raw @ centre)], raw])


def as_gate(theta: np.ndarray, models: list[str]) -> Gate:
    bias, *cosines, coverage, agreement, verbatim = (round(float(value), 3) for value in theta)
    cosine_weights = dict(zip(models, cosines, strict=True))
    return Gate(bias, cosine_weights, coverage=coverage, agreement=agreement, verbatim=verbatim)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.fit_answer", description=__doc__.splitlines()[0])
    parser.parse_args()
    settings = Settings(query_cache_size=4096)
    searcher = open_searcher(settings)
    models = list(searcher.encoders)
    questions = [q for q in load_questions(split="dev") if q.kind in (*ON_TOPIC_KINDS, *OFFTOPIC_KINDS)]
    answerer = Answerer(searcher, settings.answer_min_confidence)
    evidence = {q.id: answerer.evidence(q.question)[1] for q in questions}
    rows = np.array([features(evidence[q.id], models) for q in questions])
    labels = np.array([1.0 if q.kind in ON_TOPIC_KINDS else 0.0 for q in questions])
    gate = as_gate(fit_logistic(rows, labels), models)
    answered = {q.id: confidence(evidence[q.id], gate) >= settings.answer_min_confidence for q in questions}
    on_topic = [q for q in questions if q.kind in ON_TOPIC_KINDS]
    off_topic = [q for q in questions if q.kind in OFFTOPIC_KINDS]
    print(f"profile {models}: {gate}")
    print(
        f"dev: on-topic answered {sum(answered[q.id] for q in on_topic)}/{len(on_topic)}, "
        f"off-topic refused {sum(not answered[q.id] for q in off_topic)}/{len(off_topic)}"
    )

    answerer.gate = gate
    labels_of = {}
    from eval.questions import checked_labels

    labels_of = checked_labels(on_topic, list(searcher.store.all_passages()))
    print("selection grid (dev, answered on-topic questions): fact present, sentence precision, sentences/answer")
    grid = itertools.product((0.5, 0.75), (0.3, 0.4), (0.3,), (0.3,))
    for hit_share, margin, overlap, number in grid:
        answerer.selection = replace(Selection(), hit_share=hit_share, margin=margin, overlap_weight=overlap)
        answerer.selection = replace(answerer.selection, number_bonus=number)
        outcomes = []
        for q in on_topic:
            answer = answerer.answer(q.question)
            citations = [{"passage_id": hit.passage.passage_id} for hit in answer.citations]
            outcomes.append(
                (q, ask_outcome({"found": answer.found, "answer": answer.text, "citations": citations}, q, labels_of))
            )
        with_facts = [o for q, o in outcomes if q.facts]
        facts = sum(o["fact"] for o in with_facts) / max(1, len(with_facts))
        sentences = sum(o["sentences"] for _, o in outcomes)
        precision = sum(o["precise"] for _, o in outcomes) / max(1, sentences)
        per_answer = sentences / max(1, sum(o["found"] for _, o in outcomes))
        print(
            f"  hit_share={hit_share} margin={margin} overlap={overlap} number={number}: "
            f"fact {facts:.3f} precision {precision:.3f} sentences {per_answer:.2f}"
        )
    return 0 if not math.isnan(gate.bias) else 1


if __name__ == "__main__":
    raise SystemExit(main())
