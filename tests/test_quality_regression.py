"""Retrieval quality guard: the eval set is valid and search does not fall below the committed results."""

import json

import pytest

from eval.baselines import search_mode
from eval.questions import Question, QuestionSetError, checked_labels, load_questions, relevant_passages
from eval.run import RESULTS_FILE, evaluate_rankers
from service.records import Passage
from service.search import MODES, Searcher

TOLERANCE = 0.02  # about two questions of the 110 on-topic ones at hit@5


@pytest.fixture(scope="module")
def committed() -> dict:
    if not RESULTS_FILE.is_file():
        pytest.fail(f"{RESULTS_FILE} is missing: run `make eval` and commit the results")
    return json.loads(RESULTS_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def measured(searcher: Searcher) -> dict:
    questions = load_questions()
    labels = checked_labels(questions, searcher.index.passages)
    return evaluate_rankers({mode: search_mode(searcher, mode) for mode in MODES}, questions, labels)


def passage(passage_id: str, text: str) -> Passage:
    return Passage(passage_id, "doc", "标题", (), 1, 0, len(text), text)


def test_every_snippet_names_exactly_one_seed_passage(searcher: Searcher) -> None:
    _, problems = relevant_passages(load_questions(), searcher.index.passages)
    assert problems == []


def test_a_snippet_in_two_passages_or_none_is_refused_by_name() -> None:
    passages = [passage("doc:1", "加强党的建设。"), passage("doc:2", "加强党的建设，推动发展。")]
    questions = [
        Question("q001", "怎样加强党建", "lexical", ("加强党的建设",), "dev"),
        Question("q002", "别的问题", "lexical", ("不存在的句子",), "dev"),
    ]
    with pytest.raises(QuestionSetError) as refused:
        checked_labels(questions, passages)
    assert [problem.split(":")[0] for problem in refused.value.problems] == ["q001", "q002"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("metric", ["hit@5", "mrr@10"])
def test_search_does_not_fall_below_the_committed_results(
    mode: str, metric: str, measured: dict, committed: dict
) -> None:
    before = committed["systems"][mode]["all"]["all"][metric]
    now = measured[mode]["all"]["all"][metric]
    assert now >= before - TOLERANCE, f"{mode} {metric} fell from {before:.3f} to {now:.3f}"
