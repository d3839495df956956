"""Ranking metrics over passage ids: pure functions of a ranking and the set of relevant ids."""

import math
import statistics
from collections.abc import Sequence

from scipy import stats


def hit_at(ranking: Sequence[str], relevant: set[str], k: int) -> float:
    return 1.0 if any(pid in relevant for pid in ranking[:k]) else 0.0


def reciprocal_rank(ranking: Sequence[str], relevant: set[str], k: int = 10) -> float:
    for position, pid in enumerate(ranking[:k], start=1):
        if pid in relevant:
            return 1.0 / position
    return 0.0


def recall_at(ranking: Sequence[str], relevant: set[str], k: int) -> float:
    return len(set(ranking[:k]) & relevant) / len(relevant) if relevant else 0.0


def ndcg_at(ranking: Sequence[str], relevant: set[str], k: int = 10) -> float:
    gains = sum(1.0 / math.log2(position + 1) for position, pid in enumerate(ranking[:k], 1) if pid in relevant)
    ideal = sum(1.0 / math.log2(position + 1) for position in range(1, min(len(relevant), k) + 1))
    return gains / ideal if ideal else 0.0


def ranking_metrics(ranking: Sequence[str], relevant: set[str]) -> dict[str, float]:
    """hit@1, hit@5, MRR@10, nDCG@10 and recall@10 of one ranking."""
    return {
        "hit@1": hit_at(ranking, relevant, 1),
        "hit@5": hit_at(ranking, relevant, 5),
        "mrr@10": reciprocal_rank(ranking, relevant, 10),
        "ndcg@10": ndcg_at(ranking, relevant, 10),
        "recall@10": recall_at(ranking, relevant, 10),
    }


def mean_metrics(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    if not rows:
        return {}
    return {name: sum(row[name] for row in rows) / len(rows) for name in rows[0]}


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p95 and p99 of durations, in milliseconds (nearest-rank percentiles)."""
    milliseconds = sorted(1000 * s for s in seconds)
    if not milliseconds:
        return {}

    def nearest_rank(fraction: float) -> float:
        return milliseconds[max(0, math.ceil(fraction * len(milliseconds)) - 1)]

    return {"median_ms": statistics.median(milliseconds), "p95_ms": nearest_rank(0.95), "p99_ms": nearest_rank(0.99)}


def paired_test(ours: Sequence[float], theirs: Sequence[float]) -> dict[str, float | int | None]:
    """Mean difference of two systems' per-question scores and the two-sided p-values of a paired
    t-test and a Wilcoxon signed-rank test (None where undefined: fewer than two questions, no difference)."""
    differences = [a - b for a, b in zip(ours, theirs, strict=True)]
    result: dict[str, float | int | None] = {
        "n": len(differences),
        "mean_diff": statistics.fmean(differences) if differences else None,
        "t_p": None,
        "wilcoxon_p": None,
    }
    if len(differences) < 2 or not any(differences):
        return result
    t_p, wilcoxon_p = stats.ttest_rel(ours, theirs).pvalue, stats.wilcoxon(ours, theirs).pvalue
    result["t_p"] = None if math.isnan(t_p) else float(t_p)
    result["wilcoxon_p"] = None if math.isnan(wilcoxon_p) else float(wilcoxon_p)
    return result
