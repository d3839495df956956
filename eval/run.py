"""Retrieval quality: `dangjian-qa eval` scores every mode, the baselines and the ablation on the eval set.

In-process by default (the index in DJQA_INDEX_DIR); with --url the project's modes and /api/ask go
over HTTP to a running server, which must serve the same seed index (passage ids are compared).
Writes eval/results/quality.{json,md,png} and prints the tables and the change against the results
in the last commit.
"""

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from eval.baselines import (
    Ranker,
    embed_context_searcher,
    jieba_bm25,
    reciprocal_rank_fusion,
    search_mode,
    whole_passage_dense,
)
from eval.metrics import latency_summary, mean_metrics, ranking_metrics
from eval.questions import QuestionSetError, checked_labels, load_questions
from service.config import PROJECT_ROOT, Settings
from service.search import MODES, Searcher

RESULTS_DIR = PROJECT_ROOT / "eval" / "results"
RESULTS_FILE = RESULTS_DIR / "quality.json"
DEPTH = 10  # every metric looks at the top 10 at most
ON_TOPIC_KINDS = ("lexical", "paraphrase", "multi")
SPLITS = ("all", "dev", "test")
BASELINES = ("baseline_dense_passage", "baseline_bm25_jieba", "baseline_rrf")
Asker = Callable[[str], bool]  # question -> found


def run_ranker(ranker: Ranker, questions: Sequence) -> tuple[dict[str, list[str]], list[float]]:
    """Rankings of every question (top DEPTH ids) and the seconds each took, after one warm-up query."""
    ranker(questions[0].question, DEPTH)
    rankings, seconds = {}, []
    for question in questions:
        started = time.perf_counter()
        rankings[question.id] = ranker(question.question, DEPTH)
        seconds.append(time.perf_counter() - started)
    return rankings, seconds


def splits_of(questions: Sequence) -> list[str]:
    """The splits to report: all, dev and test; or the one split when only one is evaluated."""
    present = [split for split in SPLITS[1:] if any(q.split == split for q in questions)]
    return ["all", *present] if len(present) > 1 else present


def summarise(rankings: dict[str, list[str]], questions: Sequence, labels: dict[str, set[str]]) -> dict:
    """Mean metrics per split (all/dev/test) and kind (all on-topic kinds, then each), with counts."""
    summary: dict[str, dict] = {}
    for split in splits_of(questions):
        summary[split] = {}
        for kind in ("all", *ON_TOPIC_KINDS):
            chosen = [
                q
                for q in questions
                if q.kind in ON_TOPIC_KINDS and split in ("all", q.split) and kind in ("all", q.kind)
            ]
            if chosen:
                rows = [ranking_metrics(rankings[q.id], labels[q.id]) for q in chosen]
                summary[split][kind] = {**mean_metrics(rows), "n": len(chosen)}
    return {split: kinds for split, kinds in summary.items() if kinds}


def evaluate_rankers(rankers: dict[str, Ranker], questions: Sequence, labels: dict[str, set[str]]) -> dict:
    """Metrics and latency of each ranker on the questions."""
    systems = {}
    for name, ranker in rankers.items():
        rankings, seconds = run_ranker(ranker, questions)
        systems[name] = {**summarise(rankings, questions, labels), "latency": latency_summary(seconds)}
    return systems


def evaluate_ask(asker: Asker, questions: Sequence) -> dict:
    """How often /api/ask answers found=false: rightly for off-topic questions, wrongly for on-topic ones."""
    found, seconds = {}, []
    for question in questions:
        started = time.perf_counter()
        found[question.id] = asker(question.question)
        seconds.append(time.perf_counter() - started)
    summary: dict[str, dict] = {}
    for split in splits_of(questions):
        chosen = [q for q in questions if split in ("all", q.split)]
        offtopic = [q for q in chosen if q.kind == "offtopic"]
        on_topic = [q for q in chosen if q.kind != "offtopic"]
        if offtopic and on_topic:
            summary[split] = {
                "offtopic_not_found": sum(not found[q.id] for q in offtopic) / len(offtopic),
                "ontopic_not_found": sum(not found[q.id] for q in on_topic) / len(on_topic),
                "n_offtopic": len(offtopic),
                "n_ontopic": len(on_topic),
            }
    return {**summary, "latency": latency_summary(seconds)}


def local_asker(searcher: Searcher, settings: Settings) -> Asker | None:
    """/api/ask's core function in-process, or None while service/answer.py does not provide it."""
    try:
        from service.answer import Answerer
    except ImportError:
        return None
    answerer = Answerer(searcher, settings.answer_min_confidence)
    return lambda question: answerer.answer(question).found


def http_rankers(url: str, modes: Sequence[str]) -> tuple[dict[str, Ranker], Asker]:
    """The project's modes and ask over HTTP (POST /api/search, /api/ask)."""
    import httpx

    client = httpx.Client(base_url=url, timeout=60)

    def mode_ranker(mode: str) -> Ranker:
        def rank(question: str, k: int) -> list[str]:
            response = client.post("/api/search", json={"query": question, "top_k": k, "mode": mode})
            response.raise_for_status()
            return [row["passage_id"] for row in response.json()["results"]]

        return rank

    def ask(question: str) -> bool:
        response = client.post("/api/ask", json={"question": question})
        response.raise_for_status()
        return bool(response.json()["found"])

    return {mode: mode_ranker(mode) for mode in modes}, ask


def all_rankers(searcher: Searcher, settings: Settings, modes: Sequence[str]) -> dict[str, Ranker]:
    """The project's modes in-process, the three baselines and the embed-context ablation (hybrid, dense)."""
    rankers = {mode: search_mode(searcher, mode) for mode in modes}
    rankers |= baseline_rankers(searcher)
    flipped = not settings.embed_context
    ablated = embed_context_searcher(searcher, settings, with_context=flipped)
    for mode in ("hybrid", "dense"):
        rankers[f"{mode}_embed_context_{str(flipped).lower()}"] = search_mode(ablated, mode)
    return rankers


def baseline_rankers(searcher: Searcher) -> dict[str, Ranker]:
    dense = whole_passage_dense(searcher.index.passages, searcher.encoder)
    bm25 = jieba_bm25(searcher.index.passages)
    return {BASELINES[0]: dense, BASELINES[1]: bm25, BASELINES[2]: reciprocal_rank_fusion([dense, bm25])}


def previous_results(path: Path = RESULTS_FILE) -> dict | None:
    """The results file as committed in HEAD, or None when there is none."""
    relative = path.relative_to(PROJECT_ROOT).as_posix()
    shown = subprocess.run(
        ["git", "show", f"HEAD:{relative}"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    return json.loads(shown.stdout) if shown.returncode == 0 and shown.stdout.strip() else None


def run(settings: Settings, split: str = "all", modes: Sequence[str] = MODES, url: str | None = None) -> dict:
    """The whole evaluation as a JSON-able dict."""
    from service.engine import open_searcher

    questions = load_questions(split=split)
    # Each mode asks the same questions: without this, later modes would time cached query vectors.
    settings = settings.model_copy(update={"query_cache_size": 0})
    searcher = open_searcher(settings)
    labels = checked_labels(questions, searcher.index.passages)
    rankers = all_rankers(searcher, settings, modes)
    asker = local_asker(searcher, settings)
    if url:
        remote, asker = http_rankers(url, modes)
        rankers |= remote
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "where": url or "in-process",
        "split": split,
        "model": searcher.index.manifest["model_name"],
        "embed_context": settings.embed_context,
        "passages": len(searcher.index.passages),
        "questions": {kind: sum(q.kind == kind for q in questions) for kind in (*ON_TOPIC_KINDS, "offtopic")},
        "systems": evaluate_rankers(rankers, questions, labels),
        "ask": evaluate_ask(asker, questions) if asker else None,
    }


def command(args: argparse.Namespace, settings: Settings) -> int:
    """`dangjian-qa eval`: run, write the results, print the tables and the change against HEAD."""
    from eval.report import changes_text, markdown_report, quality_chart

    try:
        results = run(settings, split=args.split, modes=args.modes, url=args.url)
    except QuestionSetError as error:
        print(f"错误：{error}", file=sys.stderr)
        return 4
    out = args.out or RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    (out / "quality.json").write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n")
    report = markdown_report(results)
    (out / "quality.md").write_text(report)
    quality_chart(results, out / "quality.png")
    print(report)
    print(changes_text(results, previous_results()))
    print(f"→ {out}/quality.json、quality.md、quality.png")
    return 0


if __name__ == "__main__":
    from service.cli import main

    sys.exit(main(["eval", *sys.argv[1:]]))
