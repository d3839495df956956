"""Fit /api/ask's not-found gate on the dev split only, on both eval collections: `python -m eval.fit_answer`.

The gate is a logistic regression over service.answer.Evidence (each model's best cosine, lexical
coverage, retriever agreement, a verbatim match), on-topic questions labelled 1 and off-topic ones 0,
classes weighted equally (there are far fewer off-topic questions) and a small L2 penalty. The dev
questions of the seeds alone and of the seeds beside the archive slice (eval/collections.py) are
fitted together, each collection weighing the same, so one gate serves a small and a large index.
The fitted weights are written into service/resources/answer_gate.json (the profile of the
configured models; other profiles are kept) with the dev rates they give, then a small grid over the
sentence selection is printed, scored on dev. Test-split questions are never read here.
"""

import argparse
import itertools
import json
import math
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
from scipy.optimize import minimize

from eval.collections import COLLECTIONS, DEFAULT_RANKS, collection, collection_settings
from eval.questions import OFFTOPIC_KINDS, ON_TOPIC_KINDS, Question, checked_labels, load_questions
from eval.run import ask_outcome, questions_sha256
from service.answer import ASKS_NUMBER, GATE_FILE, Answerer, Evidence, Gate, Selection, confidence
from service.config import Settings
from service.engine import open_encoders, open_searcher, open_tokenizer

L2 = 0.01


def features(evidence: Evidence, models: list[str]) -> list[float]:
    cosines = [evidence.cosines.get(model, 0.0) for model in models]
    return [1.0, *cosines, evidence.coverage, evidence.agreement, evidence.verbatim]


def fit_logistic(rows: np.ndarray, labels: np.ndarray, sample_weights: np.ndarray | None = None) -> np.ndarray:
    """Weights minimising class-balanced log-loss plus L2 on standardised features (the bias is not
    penalised); returned for the raw features, so that the gate needs no scaling at run time.
    `sample_weights` (default equal) multiply the class balance, e.g. to weigh collections equally."""
    weights = np.where(labels == 1, 0.5 / labels.mean(), 0.5 / (1 - labels.mean()))
    if sample_weights is not None:
        weights = weights * sample_weights / sample_weights.mean()
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


NUMBER_OVERLAPS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6)


def fit_number_overlap(answerers: dict[str, Answerer], asked: dict[str, list[Question]]) -> float:
    """The largest share of its words a number answer must use (Answerer.number_min_overlap) that keeps
    every dev on-topic question asking for a number answered as at 0, with how many off-topic number
    questions each value refuses."""
    chosen = 0.0
    answered_at_zero = None
    for overlap in NUMBER_OVERLAPS:
        answered, refused = 0, 0
        for name, answerer in answerers.items():
            answerer.number_min_overlap = overlap
            for q in asked[name]:
                if not ASKS_NUMBER.search(q.question):
                    continue
                found = answerer.answer(q.question).found
                answered += found and q.kind in ON_TOPIC_KINDS
                refused += not found and q.kind in OFFTOPIC_KINDS
        answered_at_zero = answered if answered_at_zero is None else answered_at_zero
        print(
            f"  number_min_overlap={overlap}: on-topic number questions answered {answered}, "
            f"off-topic refused {refused}"
        )
        if answered == answered_at_zero:
            chosen = overlap
    for answerer in answerers.values():
        answerer.number_min_overlap = chosen
    print(f"number_min_overlap = {chosen}")
    return chosen


def write_gate(gate: Gate, models: list[str], rates: str, ranks: int, number_overlap: float) -> None:
    """Replace the configured models' profile in the gate file, keeping the others."""
    fitted = json.loads(GATE_FILE.read_text(encoding="utf-8")) if GATE_FILE.is_file() else {"profiles": []}
    profiles = [profile for profile in fitted["profiles"] if set(profile["models"]) != set(models)]
    profiles.append(
        {
            "models": models,
            "bias": gate.bias,
            "cosine_weights": gate.cosine_weights,
            "coverage": gate.coverage,
            "agreement": gate.agreement,
            "verbatim": gate.verbatim,
            "dev": rates,
            "fitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "questions_sha256": questions_sha256(),
            "collections": f"seeds; seeds + archive ranks 1–{ranks}",
        }
    )
    fitted["fitted_by"] = "python -m eval.fit_answer"
    fitted["number_min_overlap"] = number_overlap
    fitted["profiles"] = profiles
    GATE_FILE.write_text(json.dumps(fitted, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.fit_answer", description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=DEFAULT_RANKS, help="规模集合：种子文档加档案第 1–N 名")
    parser.add_argument("--no-write", action="store_true", help="只打印，不改写 answer_gate.json")
    args = parser.parse_args()
    settings = Settings(query_cache_size=4096)
    encoders, tokenizer = open_encoders(settings), open_tokenizer(settings)
    models = list(encoders)
    dev = [q for q in load_questions(split="dev") if q.kind in (*ON_TOPIC_KINDS, *OFFTOPIC_KINDS)]
    answerers, rows, labels, weights, asked, evidence = {}, [], [], [], {}, {}
    for name in COLLECTIONS:
        indexed = collection_settings(collection(name, settings, args.ranks), settings, encoders, tokenizer)
        searcher = open_searcher(indexed, encoders, tokenizer)
        answerers[name] = Answerer(searcher, settings.answer_min_confidence)
        asked[name] = [q for q in dev if q.asked_of(name)]
        for q in asked[name]:
            evidence[name, q.id] = answerers[name].evidence(q.question)[1]
            rows.append(features(evidence[name, q.id], models))
            labels.append(1.0 if q.kind in ON_TOPIC_KINDS else 0.0)
            weights.append(1.0 / len(asked[name]))
    gate = as_gate(fit_logistic(np.array(rows), np.array(labels), np.array(weights)), models)
    rates = []
    for name, answerer in answerers.items():
        answerer.gate = gate
        answered = {q.id: confidence(evidence[name, q.id], gate) >= answerer.min_confidence for q in asked[name]}
        on_topic = [q for q in asked[name] if q.kind in ON_TOPIC_KINDS]
        off_topic = [q for q in asked[name] if q.kind in OFFTOPIC_KINDS]
        rates.append(
            f"{name}: on-topic answered {sum(answered[q.id] for q in on_topic)}/{len(on_topic)}, "
            f"off-topic refused {sum(not answered[q.id] for q in off_topic)}/{len(off_topic)}"
        )
    print(f"profile {models}: {gate}")
    print("dev (gate only): " + "; ".join(rates))
    number_overlap = fit_number_overlap(answerers, asked)
    if not args.no_write:
        write_gate(gate, models, "; ".join(rates), args.ranks, number_overlap)
        print(f"→ {GATE_FILE}")

    print("selection grid (dev, answered on-topic questions): fact present, sentence precision, sentences/answer")
    for name, answerer in answerers.items():
        on_topic = [q for q in asked[name] if q.kind in ON_TOPIC_KINDS]
        labels_of = checked_labels(on_topic, list(answerer.searcher.store.all_passages()))
        for hit_share, margin in itertools.product((0.5, 0.75), (0.3, 0.4)):
            answerer.selection = replace(Selection(), hit_share=hit_share, margin=margin)
            outcomes = []
            for q in on_topic:
                answer = answerer.answer(q.question)
                citations = [{"passage_id": hit.passage.passage_id} for hit in answer.citations]
                response = {"found": answer.found, "answer": answer.text, "citations": citations}
                outcomes.append((q, ask_outcome(response, q, labels_of)))
            with_facts = [o for q, o in outcomes if q.facts]
            facts = sum(o["fact"] for o in with_facts) / max(1, len(with_facts))
            sentences = sum(o["sentences"] for _, o in outcomes)
            precision = sum(o["precise"] for _, o in outcomes) / max(1, sentences)
            per_answer = sentences / max(1, sum(o["found"] for _, o in outcomes))
            print(
                f"  {name} hit_share={hit_share} margin={margin}: "
                f"fact {facts:.3f} precision {precision:.3f} sentences {per_answer:.2f}"
            )
    return 0 if not math.isnan(gate.bias) else 1


if __name__ == "__main__":
    raise SystemExit(main())
