"""The eval's own ranking metrics agree with ir-measures (trec_eval) on random rankings."""

import random

import ir_measures
import pytest
from ir_measures import RR, Qrel, R, ScoredDoc, Success, nDCG

from eval.metrics import latency_summary, paired_test, ranking_metrics

OURS_TO_THEIRS = {
    "hit@1": Success @ 1,
    "hit@5": Success @ 5,
    "mrr@10": RR @ 10,
    "ndcg@10": nDCG @ 10,
    "recall@10": R @ 10,
}


def random_case(seed: int) -> tuple[list[str], set[str]]:
    chance = random.Random(seed)
    pool = [f"p{i}" for i in range(30)]
    ranking = chance.sample(pool, chance.randint(0, 15))
    relevant = set(chance.sample(pool, chance.randint(1, 4)))
    return ranking, relevant


@pytest.mark.parametrize("seed", range(40))
def test_ranking_metrics_match_ir_measures(seed: int) -> None:
    ranking, relevant = random_case(seed)
    qrels = [Qrel("q", pid, 1) for pid in relevant]
    run = [ScoredDoc("q", pid, float(len(ranking) - position)) for position, pid in enumerate(ranking)]
    theirs = ir_measures.calc_aggregate(OURS_TO_THEIRS.values(), qrels, run) if run else {}
    ours = ranking_metrics(ranking, relevant)
    for name, measure in OURS_TO_THEIRS.items():
        assert ours[name] == pytest.approx(theirs.get(measure, 0.0), abs=1e-9), name


def test_paired_test_finds_a_consistent_gain_and_not_a_tie() -> None:
    better = paired_test([1.0, 0.5, 1.0, 1.0, 0.5, 1.0, 1.0, 0.5], [0.5, 0.25, 0.5, 0.33, 0.2, 0.5, 0.25, 0.1])
    assert better["mean_diff"] > 0 and better["t_p"] < 0.01
    tie = paired_test([1.0, 0.5], [1.0, 0.5])
    assert tie["mean_diff"] == 0 and tie["t_p"] is None


def test_latency_summary_uses_nearest_rank_percentiles() -> None:
    summary = latency_summary([i / 1000 for i in range(1, 101)])
    assert summary["median_ms"] == pytest.approx(50.5) and summary["p95_ms"] == pytest.approx(95.0)
