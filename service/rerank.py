"""A fitted re-ranking of hybrid search's best candidates (settings.fitted_fusion, off by default).

The hand-set fusion (search.fuse) mixes min-max scores whose spread depends on the candidate set.
Here each of the FUSION_DEPTH best candidates is described by evidence that means the same in any
collection — its fused score, each model's cosine below the best candidate's, BM25 against the best,
the IDF-weighted share of the question's words it holds, how well its document's other candidates
score, and its length — and a logistic regression fitted on dev questions of both eval collections
(`python -m eval.fit_fusion`, written to service/resources/fusion.json) orders them.
"""

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.records import Hit

FUSION_FILE = Path(__file__).resolve().parent / "resources" / "fusion.json"
FUSION_DEPTH = 100  # candidates re-ranked; the answer's hits and the page's top 50 lie far inside
DOCUMENT_SUPPORT = 3  # a document's support: the mean of its best this many candidates' fused scores


def term_share(query_tokens: Sequence[str], found: set[str], idf: dict[str, float], unseen: float) -> float:
    """The IDF-weighted share of the question's words in `found` (search.term_coverage's formula)."""
    weights = {token: idf.get(token, unseen) for token in query_tokens}
    total = sum(weights.values())
    return sum(weight for token, weight in weights.items() if token in found) / total if total else 0.0


def feature_names(models: Sequence[str]) -> list[str]:
    return [
        "fused",
        *(f"cosine_below_best:{model}" for model in models),
        "bm25_of_best",
        "coverage",
        "support",
        "log_length",
    ]


def candidate_features(
    hits: Sequence[Hit], models: Sequence[str], query_tokens: Sequence[str], idf: dict[str, float], unseen: float
) -> np.ndarray:
    """One row of evidence per hit (feature_names order)."""
    best = {
        model: max((e.score for hit in hits for e in hit.models if e.model == model), default=0.0) for model in models
    }
    best_lexical = max((hit.lexical_score or 0.0 for hit in hits), default=0.0) or 1.0
    by_document: dict[str, list[float]] = {}
    for hit in hits:
        by_document.setdefault(hit.passage.doc_id, []).append(hit.score)
    support = {
        doc: sum(sorted(scores, reverse=True)[:DOCUMENT_SUPPORT]) / DOCUMENT_SUPPORT
        for doc, scores in by_document.items()
    }
    best_support = max(support.values(), default=0.0) or 1.0
    rows = []
    for hit in hits:
        cosines = {e.model: e.score for e in hit.models}
        rows.append(
            [
                hit.score,
                *(cosines.get(model, 0.0) - best[model] for model in models),
                (hit.lexical_score or 0.0) / best_lexical,
                term_share(query_tokens, set(hit.matched_terms), idf, unseen),
                support[hit.passage.doc_id] / best_support,
                math.log(max(1, len(hit.passage.text))),
            ]
        )
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(feature_names(models)))


@dataclass(frozen=True)
class FittedFusion:
    """Logistic weights over the candidate features (feature_names order), bias first."""

    weights: np.ndarray

    def scores(self, rows: np.ndarray) -> np.ndarray:
        """Probability-like relevance in 0..1 of each candidate row."""
        z = self.weights[0] + rows @ self.weights[1:]
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))


def load_fusion(models: Sequence[str], path: Path = FUSION_FILE) -> FittedFusion | None:
    """The fusion fitted for these models in this order, or None when the file has none."""
    if not path.is_file():
        return None
    for profile in json.loads(path.read_text(encoding="utf-8"))["profiles"]:
        if profile["models"] == list(models) and profile["features"] == feature_names(models):
            return FittedFusion(np.array(profile["weights"], dtype=np.float64))
    return None
