"""Fit the re-ranking of hybrid search's candidates on the dev split only: `python -m eval.fit_fusion`.

For every on-topic dev question of both eval collections (the seeds alone, and beside the archive
slice), the hand-set hybrid search's FUSION_DEPTH best candidates are described by
service.rerank.candidate_features and labelled by the question's relevant passages; a class-balanced
logistic regression (each collection weighing the same) is fitted and written into
service/resources/fusion.json for the configured models. It prints the dev MRR@10 before and after,
in-sample and 5-fold cross-validated by question. Test-split questions are never read here.
"""

import argparse
import json
from datetime import UTC, datetime

import numpy as np

from eval.collections import COLLECTIONS, DEFAULT_RANKS, collection, collection_settings
from eval.fit_answer import fit_logistic
from eval.metrics import ranking_metrics
from eval.questions import ON_TOPIC_KINDS, checked_labels, load_questions, within
from eval.run import questions_sha256
from service.config import Settings
from service.engine import open_encoders, open_searcher, open_tokenizer
from service.rerank import FUSION_DEPTH, FUSION_FILE, FittedFusion, candidate_features, feature_names

FOLDS = 5


def collect(settings: Settings, ranks: int) -> list[tuple[str, np.ndarray, list[str], set[str]]]:
    """(collection, feature rows, candidate ids, relevant ids) of every on-topic dev question."""
    encoders, tokenizer = open_encoders(settings), open_tokenizer(settings)
    models = list(encoders)
    found = []
    for name in COLLECTIONS:
        indexed = collection_settings(collection(name, settings, ranks), settings, encoders, tokenizer)
        searcher = open_searcher(indexed.model_copy(update={"fitted_fusion": False}), encoders, tokenizer)
        passages = list(searcher.store.all_passages())
        questions = within([q for q in load_questions(split="dev") if q.asked_of(name)], passages)
        questions = [q for q in questions if q.kind in ON_TOPIC_KINDS]
        labels = checked_labels(questions, passages)
        for question in questions:
            hits = searcher.search(question.question, top_k=FUSION_DEPTH)
            tokens = searcher.tokenizer.query_tokens(question.question)
            rows = candidate_features(hits, models, tokens, searcher.idf_of(tokens), searcher.unseen_idf)
            found.append((name, rows, [hit.passage.passage_id for hit in hits], labels[question.id]))
    return found


def fit(items: list) -> FittedFusion:
    rows = np.vstack([item[1] for item in items])
    labels = np.concatenate([[pid in item[3] for pid in item[2]] for item in items]).astype(np.float64)
    per_collection = {name: sum(item[0] == name for item in items) for name in COLLECTIONS}
    weights = np.concatenate([np.full(len(item[2]), 1.0 / per_collection[item[0]]) for item in items])
    return FittedFusion(fit_logistic(np.column_stack([np.ones(len(rows)), rows]), labels, weights))


def mrr(items: list, fusion: FittedFusion | None) -> dict[str, float]:
    by_collection: dict[str, list[float]] = {}
    for name, rows, ids, relevant in items:
        order = range(len(ids)) if fusion is None else np.argsort(-fusion.scores(rows), kind="stable")
        by_collection.setdefault(name, []).append(ranking_metrics([ids[i] for i in order][:10], relevant)["mrr@10"])
    return {name: round(float(np.mean(values)), 3) for name, values in by_collection.items()}


def cross_validated(items: list) -> dict[str, float]:
    shuffled = np.random.default_rng(0).permutation(len(items))
    results: dict[str, list[float]] = {}
    for fold in range(FOLDS):
        held = set(shuffled[fold::FOLDS].tolist())
        fusion = fit([item for i, item in enumerate(items) if i not in held])
        for i in held:
            name = items[i][0]
            results.setdefault(name, []).append(mrr([items[i]], fusion)[name])
    return {name: round(float(np.mean(values)), 3) for name, values in results.items()}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.fit_fusion", description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=DEFAULT_RANKS, help="规模集合：种子文档加档案第 1–N 名")
    parser.add_argument("--no-write", action="store_true", help="只打印，不改写 fusion.json")
    args = parser.parse_args()
    settings = Settings(query_cache_size=4096)
    items = collect(settings, args.ranks)
    models = list(settings.models)
    fusion = fit(items)
    before, after, held_out = mrr(items, None), mrr(items, fusion), cross_validated(items)
    print(f"dev MRR@10: hand-set {before}; fitted, in-sample {after}; fitted, {FOLDS}-fold by question {held_out}")
    print(dict(zip(["bias", *feature_names(models)], np.round(fusion.weights, 3).tolist(), strict=True)))
    if args.no_write:
        return 0
    fitted = json.loads(FUSION_FILE.read_text(encoding="utf-8")) if FUSION_FILE.is_file() else {"profiles": []}
    profiles = [profile for profile in fitted["profiles"] if profile["models"] != models]
    profiles.append(
        {
            "models": models,
            "features": feature_names(models),
            "weights": [round(float(w), 4) for w in fusion.weights],
            "dev_mrr@10": {"hand_set": before, "in_sample": after, "cross_validated": held_out},
            "fitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "questions_sha256": questions_sha256(),
            "collections": f"seeds; seeds + archive ranks 1–{args.ranks}",
        }
    )
    fitted |= {"fitted_by": "python -m eval.fit_fusion", "profiles": profiles}
    FUSION_FILE.write_text(json.dumps(fitted, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"→ {FUSION_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
