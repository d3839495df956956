"""Quality guard: the eval set is valid, and search and /api/ask stay at or above the committed baseline.

The baseline is eval/baseline.json, rewritten only by `make eval-baseline`: `make eval` writes its
results elsewhere, so running the eval can never lower the bar that this test holds.
"""

import json

import pytest

from eval.baselines import search_mode
from eval.questions import Question, QuestionSetError, checked_labels, load_questions, relevant_passages
from eval.run import BASELINE_FILE, evaluate_ask, evaluate_rankers, local_asker, questions_sha256
from service.config import MODES, Settings
from service.records import Passage
from service.search import Searcher

TOLERANCE = 0.02  # about two questions of the on-topic ones at hit@5
ASK_TOLERANCE = 0.03  # refusals and key facts are counted on fewer questions


@pytest.fixture(scope="module")
def baseline() -> dict:
    if not BASELINE_FILE.is_file():
        pytest.fail(f"{BASELINE_FILE} is missing: run `make eval-baseline` and commit it")
    return json.loads(BASELINE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def measured(searcher: Searcher, seed_settings: Settings) -> dict:
    questions = load_questions()
    labels = checked_labels(questions, searcher.store.index.passages)
    systems = evaluate_rankers({mode: search_mode(searcher, mode) for mode in MODES}, questions, labels)
    ask = evaluate_ask(local_asker(searcher, seed_settings), questions, labels)
    return {"systems": systems, "ask": ask}


def passage(passage_id: str, text: str) -> Passage:
    return Passage(passage_id, "doc", "标题", (), 1, 0, len(text), text)


def test_every_snippet_names_exactly_one_seed_passage(searcher: Searcher) -> None:
    _, problems = relevant_passages(load_questions(), searcher.store.index.passages)
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


def test_the_baseline_was_made_on_this_question_set(baseline: dict) -> None:
    assert baseline["questions_sha256"] == questions_sha256(), (
        "eval/questions.jsonl changed since the baseline: run `make eval-baseline` and commit eval/baseline.json"
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("metric", ["hit@5", "mrr@10"])
def test_search_does_not_fall_below_the_baseline(mode: str, metric: str, measured: dict, baseline: dict) -> None:
    before = baseline["systems"][mode][metric]
    now = measured["systems"][mode]["all"]["all"][metric]
    assert now >= before - TOLERANCE, f"{mode} {metric} fell from {before:.3f} to {now:.3f}"


@pytest.mark.parametrize("measure", ["answered_on_topic", "refused_off_topic", "fact_present"])
def test_ask_does_not_fall_below_the_baseline(measure: str, measured: dict, baseline: dict) -> None:
    before = baseline["ask"][measure]
    now = measured["ask"]["all"][measure]
    assert now >= before - ASK_TOLERANCE, f"/api/ask {measure} fell from {before:.3f} to {now:.3f}"
