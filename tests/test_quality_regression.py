"""Quality guard: the eval set is valid, and search and /api/ask stay at or above the committed baseline
on both collections of the eval (eval/collections.py): the seeds alone, and the seeds beside the
archive slice eval/baseline.json names (its `scale.ranks`).

The baseline is eval/baseline.json, rewritten only by `make eval-baseline`: `make eval` writes its
results elsewhere, so running the eval can never lower the bar that this test holds. The archive
slice's index is the eval's cached one (data/collections/), built here only when it is missing.
"""

import json
from collections.abc import Callable

import pytest

from eval.baselines import search_mode
from eval.collections import COLLECTIONS, collection, collection_settings
from eval.questions import Question, QuestionSetError, checked_labels, load_questions, relevant_passages, within
from eval.run import BASELINE_FILE, evaluate_ask, evaluate_rankers, local_asker, questions_sha256
from service.config import MODES, Settings
from service.embed import Encoders
from service.engine import open_searcher
from service.records import Passage
from service.search import Searcher
from service.tokenize import WordTokenizer

TOLERANCE = 0.02  # about two questions of the on-topic ones at hit@5
ASK_TOLERANCE = 0.03  # refusals and key facts are counted on fewer questions


@pytest.fixture(scope="module")
def baseline() -> dict:
    if not BASELINE_FILE.is_file():
        pytest.fail(f"{BASELINE_FILE} is missing: run `make eval-baseline` and commit it")
    return json.loads(BASELINE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def scale_searcher(baseline: dict, seed_settings: Settings, encoders: Encoders, tokenizer: WordTokenizer) -> Searcher:
    """The seeds beside the archive slice the baseline was made on (the eval's cached index)."""
    if not (seed_settings.eval_collection_dir / "manifest.tsv").is_file():
        pytest.skip(f"the archive {seed_settings.eval_collection_dir} is not on this machine")
    chosen = collection("scale", seed_settings, baseline["scale"]["ranks"])
    return open_searcher(collection_settings(chosen, seed_settings, encoders, tokenizer, progress=False), encoders)


def measure(searcher: Searcher, settings: Settings, name: str) -> dict:
    passages = list(searcher.store.all_passages())
    questions = within([q for q in load_questions() if q.asked_of(name)], passages)
    labels = checked_labels(questions, passages)
    systems = evaluate_rankers({mode: search_mode(searcher, mode) for mode in MODES}, questions, labels)
    ask = evaluate_ask(local_asker(searcher, settings), questions, labels)
    return {"systems": systems, "ask": ask}


@pytest.fixture(scope="module")
def measured(request: pytest.FixtureRequest, searcher: Searcher, seed_settings: Settings) -> Callable[[str], dict]:
    """Measures per collection, each made on first use (the archive slice only when a test asks)."""
    made: dict[str, dict] = {}

    def of(name: str) -> dict:
        if name not in made:
            chosen = searcher if name == "seeds" else request.getfixturevalue("scale_searcher")
            made[name] = measure(chosen, seed_settings, name)
        return made[name]

    return of


def passage(passage_id: str, text: str) -> Passage:
    return Passage(passage_id, "doc", "标题", (), 1, 0, len(text), text)


def test_every_snippet_names_exactly_one_seed_passage(searcher: Searcher) -> None:
    questions = [q for q in load_questions() if q.asked_of("seeds")]
    _, problems = relevant_passages(questions, searcher.store.index.passages)
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


def test_questions_about_archive_documents_are_asked_of_the_archive_collection_only() -> None:
    about_archive = Question("q1", "献血补偿金", "short", ("献血补偿金应当",), "dev", collection="target")
    answered_there = Question("q2", "医疗事故怎么鉴定", "near_domain", (), "dev", collection="answers")
    assert [about_archive.asked_of(name) for name in COLLECTIONS] == [False, True]
    assert [answered_there.asked_of(name) for name in COLLECTIONS] == [True, False]


def test_the_baseline_was_made_on_this_question_set(baseline: dict) -> None:
    assert baseline["questions_sha256"] == questions_sha256(), (
        "eval/questions.jsonl changed since the baseline: run `make eval-baseline` and commit eval/baseline.json"
    )


@pytest.mark.parametrize("name", COLLECTIONS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("metric", ["hit@5", "mrr@10"])
def test_search_does_not_fall_below_the_baseline(
    name: str, mode: str, metric: str, measured: Callable[[str], dict], baseline: dict
) -> None:
    before = baseline[name]["systems"][mode][metric]
    now = measured(name)["systems"][mode]["all"]["all"][metric]
    assert now >= before - TOLERANCE, f"{name}: {mode} {metric} fell from {before:.3f} to {now:.3f}"


@pytest.mark.parametrize("name", COLLECTIONS)
@pytest.mark.parametrize("measure_name", ["answered_on_topic", "refused_off_topic", "fact_present"])
def test_ask_does_not_fall_below_the_baseline(
    name: str, measure_name: str, measured: Callable[[str], dict], baseline: dict
) -> None:
    before = baseline[name]["ask"][measure_name]
    now = measured(name)["ask"]["all"][measure_name]
    assert now >= before - ASK_TOLERANCE, f"{name}: /api/ask {measure_name} fell from {before:.3f} to {now:.3f}"
