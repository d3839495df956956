"""Retrieval and answer quality: `python -m eval.run` (`make eval`) scores the eval set on two collections.

Every run asks its questions of the seeds alone and of the seeds beside ranks 1–100 of the archive
(eval/collections.py; each collection's index is cached, so a rerun encodes nothing), and reports
them side by side. On each it scores every search mode, the baselines and (seeds only) the
embed-context ablation, with paired significance tests against the baselines, and /api/ask
(answered, refused, key fact, sentence precision). In-process
by default (the index in DJQA_INDEX_DIR); with --url the project's modes and /api/ask go over HTTP to
a running server, which must serve the chosen collection's index (one collection per run then).

Writes eval/results/quality.{json,md,png} and prints the change against the results in the last
commit. `--write-baseline` (`make eval-baseline`) also rewrites eval/baseline.json, the committed floor
that tests/test_quality_regression.py guards: running the eval never moves that floor by itself.
"""

import argparse
import hashlib
import json
import re
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
from eval.collections import COLLECTIONS, DEFAULT_RANKS, collection, collection_settings
from eval.metrics import latency_summary, mean_metrics, paired_test, ranking_metrics
from eval.questions import (
    HARD_KINDS,
    OFFTOPIC_KINDS,
    ON_TOPIC_KINDS,
    QUESTIONS_FILE,
    Question,
    QuestionSetError,
    checked_labels,
    load_questions,
    within,
)
from service.answer import Answerer
from service.config import MODES, PROJECT_ROOT, Settings
from service.engine import open_encoders, open_searcher, open_tokenizer
from service.search import Searcher

RESULTS_DIR = PROJECT_ROOT / "eval" / "results"
RESULTS_FILE = RESULTS_DIR / "quality.json"
BASELINE_FILE = PROJECT_ROOT / "eval" / "baseline.json"
DEPTH = 10  # every metric looks at the top 10 at most
SPLITS = ("all", "dev", "test")
OLDER_KINDS = ("lexical", "paraphrase", "multi")  # questions phrased like the documents
BASELINES = ("baseline_dense_passage", "baseline_bm25_jieba", "baseline_rrf")
CITED_SENTENCE = re.compile(r"([^【】]+?)【(\d+)】")
Asker = Callable[[str], dict]  # question -> {"found", "answer", "citations": [{"passage_id"}, …]}


def questions_sha256(path: Path = QUESTIONS_FILE) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_ranker(ranker: Ranker, questions: Sequence[Question]) -> tuple[dict[str, list[str]], list[float]]:
    """Rankings of every question (top DEPTH ids) and the seconds each took, after one warm-up query."""
    ranker(questions[0].question, DEPTH)
    rankings, seconds = {}, []
    for question in questions:
        started = time.perf_counter()
        rankings[question.id] = ranker(question.question, DEPTH)
        seconds.append(time.perf_counter() - started)
    return rankings, seconds


def splits_of(questions: Sequence[Question]) -> list[str]:
    """The splits to report: all, dev and test; or the one split when only one is evaluated."""
    present = [split for split in SPLITS[1:] if any(q.split == split for q in questions)]
    return ["all", *present] if len(present) > 1 else present


def in_split(questions: Sequence[Question], split: str) -> list[Question]:
    return [q for q in questions if split in ("all", q.split)]


def groups(questions: Sequence[Question]) -> dict[str, list[Question]]:
    """On-topic questions by group: all, the hard kinds, the older kinds, then each kind (non-empty only)."""
    named = {
        "all": [q for q in questions if q.kind in ON_TOPIC_KINDS],
        "hard": [q for q in questions if q.kind in HARD_KINDS],
        "older": [q for q in questions if q.kind in OLDER_KINDS],
        **{kind: [q for q in questions if q.kind == kind] for kind in ON_TOPIC_KINDS},
    }
    return {name: chosen for name, chosen in named.items() if chosen}


def summarise(rankings: dict[str, list[str]], questions: Sequence[Question], labels: dict[str, set[str]]) -> dict:
    """Mean metrics per split (all/dev/test) and group, with counts."""
    summary: dict[str, dict] = {}
    for split in splits_of(questions):
        summary[split] = {
            name: {**mean_metrics([ranking_metrics(rankings[q.id], labels[q.id]) for q in chosen]), "n": len(chosen)}
            for name, chosen in groups(in_split(questions, split)).items()
        }
    return {split: by_group for split, by_group in summary.items() if by_group}


def evaluate_rankers(rankers: dict[str, Ranker], questions: Sequence[Question], labels: dict[str, set[str]]) -> dict:
    """Metrics, latency and per-question reciprocal rank (for paired tests) of each ranker."""
    systems = {}
    for name, ranker in rankers.items():
        rankings, seconds = run_ranker(ranker, questions)
        reciprocal = {
            q.id: ranking_metrics(rankings[q.id], labels[q.id])["mrr@10"] for q in questions if q.kind in ON_TOPIC_KINDS
        }
        systems[name] = {
            **summarise(rankings, questions, labels),
            "latency": latency_summary(seconds),
            "rr": reciprocal,
        }
    return systems


def significance(systems: dict, questions: Sequence[Question], ours: str = "hybrid") -> dict:
    """Paired tests of our MRR@10 against each baseline's, per split, over the same on-topic questions."""
    tests: dict[str, dict] = {}
    for baseline in BASELINES:
        if ours not in systems or baseline not in systems:
            continue
        tests[baseline] = {}
        for split in splits_of(questions):
            ids = [q.id for q in in_split(questions, split) if q.kind in ON_TOPIC_KINDS]
            ours_rr = [systems[ours]["rr"][i] for i in ids]
            theirs_rr = [systems[baseline]["rr"][i] for i in ids]
            tests[baseline][split] = paired_test(ours_rr, theirs_rr)
    return tests


def ask_outcome(response: dict, question: Question, labels: dict[str, set[str]]) -> dict:
    """What one /api/ask answer shows: answered, key fact given, and how many sentences cite a target."""
    found = bool(response["found"])
    cited = [row["passage_id"] for row in response.get("citations", [])]
    sentences = CITED_SENTENCE.findall(response["answer"]) if found else []
    relevant = labels.get(question.id, set())
    precise = sum(1 for _, n in sentences if 0 < int(n) <= len(cited) and cited[int(n) - 1] in relevant)
    fact = any(fact in response["answer"] for fact in question.facts) if found and question.facts else False
    return {"found": found, "fact": fact, "sentences": len(sentences), "precise": precise}


def rate(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def summarise_ask(outcomes: dict[str, dict], questions: Sequence[Question]) -> dict:
    """Per split: on-topic answered (overall and per kind), off-topic refused, key facts, sentence precision."""
    summary: dict[str, dict] = {}
    for split in splits_of(questions):
        chosen = in_split(questions, split)
        on_topic = [q for q in chosen if q.kind in ON_TOPIC_KINDS]
        answered = [q for q in on_topic if outcomes[q.id]["found"]]
        with_facts = [q for q in on_topic if q.facts]
        sentences = sum(outcomes[q.id]["sentences"] for q in answered)
        summary[split] = {
            "answered_on_topic": rate([outcomes[q.id]["found"] for q in on_topic]),
            "answered_by_kind": {
                name: rate([outcomes[q.id]["found"] for q in members]) for name, members in groups(chosen).items()
            },
            "refused_off_topic": rate([not outcomes[q.id]["found"] for q in chosen if q.kind in OFFTOPIC_KINDS]),
            **{
                f"refused_{kind}": rate([not outcomes[q.id]["found"] for q in chosen if q.kind == kind])
                for kind in OFFTOPIC_KINDS
            },
            "fact_present": rate([outcomes[q.id]["fact"] for q in with_facts]),
            "sentence_precision": sum(outcomes[q.id]["precise"] for q in answered) / sentences if sentences else None,
            "n_on_topic": len(on_topic),
            "n_off_topic": sum(q.kind in OFFTOPIC_KINDS for q in chosen),
            "n_with_facts": len(with_facts),
        }
    return summary


def evaluate_ask(asker: Asker, questions: Sequence[Question], labels: dict[str, set[str]]) -> dict:
    outcomes, seconds = {}, []
    for question in questions:
        started = time.perf_counter()
        outcomes[question.id] = ask_outcome(asker(question.question), question, labels)
        seconds.append(time.perf_counter() - started)
    return {**summarise_ask(outcomes, questions), "latency": latency_summary(seconds)}


def local_asker(searcher: Searcher, settings: Settings) -> Asker:
    """/api/ask's core in-process, answering in the API's shape."""
    answerer = Answerer(searcher, settings.answer_min_confidence)

    def ask(question: str) -> dict:
        answer = answerer.answer(question)
        citations = [{"passage_id": hit.passage.passage_id} for hit in answer.citations]
        return {"found": answer.found, "answer": answer.text, "citations": citations}

    return ask


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

    def ask(question: str) -> dict:
        response = client.post("/api/ask", json={"question": question})
        response.raise_for_status()
        return response.json()

    return {mode: mode_ranker(mode) for mode in modes}, ask


def all_rankers(
    searcher: Searcher, settings: Settings, modes: Sequence[str], ablation: bool = True
) -> dict[str, Ranker]:
    """The project's modes in-process, the three baselines and (when asked) the embed-context ablation.

    The ablation re-embeds every passage with its title and section: cheap on the seeds, half an hour
    on the archive slice, so the `scale` collection skips it."""
    rankers = {mode: search_mode(searcher, mode) for mode in modes}
    rankers |= baseline_rankers(searcher)
    if not ablation:
        return rankers
    flipped = not settings.embed_context
    ablated = embed_context_searcher(searcher, settings, with_context=flipped)
    for mode in ("hybrid", "dense"):
        rankers[f"{mode}_embed_context_{str(flipped).lower()}"] = search_mode(ablated, mode)
    return rankers


def baseline_rankers(searcher: Searcher) -> dict[str, Ranker]:
    # The baselines use the first configured model (m3e-small by default), as a single-model stack would.
    dense = whole_passage_dense(list(searcher.store.all_passages()), next(iter(searcher.encoders.values())))
    bm25 = jieba_bm25(list(searcher.store.all_passages()))
    return {BASELINES[0]: dense, BASELINES[1]: bm25, BASELINES[2]: reciprocal_rank_fusion([dense, bm25])}


def previous_results(path: Path = RESULTS_FILE) -> dict | None:
    """The results file as committed in HEAD, or None when there is none."""
    relative = path.relative_to(PROJECT_ROOT).as_posix()
    shown = subprocess.run(
        ["git", "show", f"HEAD:{relative}"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=False
    )
    return json.loads(shown.stdout) if shown.returncode == 0 and shown.stdout.strip() else None


def run(
    settings: Settings,
    split: str = "all",
    modes: Sequence[str] = MODES,
    url: str | None = None,
    collection_name: str = "seeds",
    questions_file: Path = QUESTIONS_FILE,
) -> dict:
    """The whole evaluation of one collection's index (settings.index_dir) as a JSON-able dict, of
    eval/questions.jsonl or another file in its format (such as `dangjian-qa export-questions` writes)."""
    questions = [q for q in load_questions(questions_file, split=split) if q.asked_of(collection_name)]
    # Each mode asks the same questions: without this, later modes would time cached query vectors.
    settings = settings.model_copy(update={"query_cache_size": 0})
    searcher = open_searcher(settings)
    passages = list(searcher.store.all_passages())
    questions = within(questions, passages)
    labels = checked_labels(questions, passages)
    rankers = all_rankers(searcher, settings, modes, ablation=collection_name == "seeds")
    asker = local_asker(searcher, settings)
    if url:
        remote, asker = http_rankers(url, modes)
        rankers |= remote
    systems = evaluate_rankers(rankers, questions, labels)
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "where": url or "in-process",
        "split": split,
        "model": " + ".join(model["name"] for model in searcher.store.manifest["models"]),
        "embed_context": settings.embed_context,
        "passages": searcher.store.passage_count,
        "documents": len(searcher.store.documents),
        "questions_file": questions_file.name,
        "questions_sha256": questions_sha256(questions_file),
        "questions": {kind: sum(q.kind == kind for q in questions) for kind in (*ON_TOPIC_KINDS, *OFFTOPIC_KINDS)},
        "systems": systems,
        "significance": significance(systems, questions),
        "ask": evaluate_ask(asker, questions, labels),
    }


def run_collections(
    settings: Settings,
    names: Sequence[str] = COLLECTIONS,
    ranks: int = DEFAULT_RANKS,
    split: str = "all",
    modes: Sequence[str] = MODES,
    url: str | None = None,
) -> dict:
    """`run` on each named collection (its cached index, built first when missing), side by side."""
    encoders, tokenizer = open_encoders(settings, build=True), open_tokenizer(settings)  # one core per build batch
    measured: dict[str, dict] = {}
    results = {"generated_at": datetime.now(UTC).isoformat(timespec="seconds"), "collections": measured}
    for name in names:
        chosen = collection(name, settings, ranks)
        indexed = collection_settings(chosen, settings, encoders, tokenizer)
        measured[name] = {
            "label": chosen.label,
            "ranks": chosen.ranks,
            **run(indexed, split, modes, url, name),
        }
    return results


def guarded_measures(results: dict) -> dict:
    """What the regression guard holds the project to, per collection: each mode's hit@5 / MRR@10
    and /api/ask's rates (the `scale` entry names its archive slice)."""
    guarded: dict = {}
    for name, measured in results["collections"].items():
        ask = measured["ask"]["all"]
        guarded["questions_sha256"] = measured["questions_sha256"]
        guarded[name] = {
            "ranks": measured["ranks"],
            "systems": {
                mode: {metric: measured["systems"][mode]["all"]["all"][metric] for metric in ("hit@5", "mrr@10")}
                for mode in MODES
            },
            "ask": {measure: ask[measure] for measure in ("answered_on_topic", "refused_off_topic", "fact_present")},
        }
    return guarded


def main(argv: list[str] | None = None) -> int:
    """Run, write the results (and the baseline when asked), print the tables and the change against HEAD."""
    from eval.report import changes_text, markdown_report, quality_chart

    parser = argparse.ArgumentParser(prog="python -m eval.run", description="评测检索和问答质量")
    parser.add_argument("--url", help="评测运行中的服务，例如 http://127.0.0.1:8765（默认进程内；只评测一个集合）")
    parser.add_argument("--split", choices=SPLITS, default="all")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--collections", nargs="+", choices=COLLECTIONS, default=list(COLLECTIONS))
    parser.add_argument("--ranks", type=int, default=DEFAULT_RANKS, help="规模集合：种子文档加档案第 1–N 名")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="结果目录（默认 eval/results/）")
    parser.add_argument("--write-baseline", action="store_true", help=f"同时改写回归基线 {BASELINE_FILE.name}")
    parser.add_argument(
        "--questions",
        type=Path,
        default=QUESTIONS_FILE,
        help="评测集文件（默认 eval/questions.jsonl，格式相同的任何文件）",
    )
    args = parser.parse_args(argv)
    if args.url and len(args.collections) != 1:
        print("错误：--url 只能评测一个集合（--collections seeds 或 scale）", file=sys.stderr)
        return 2
    if args.write_baseline and (
        args.split != "all" or set(args.modes) != set(MODES) or set(args.collections) != set(COLLECTIONS)
    ):
        print("错误：基线须用全部问题、全部检索方式和两个集合生成", file=sys.stderr)
        return 2
    try:
        if args.questions.resolve() != QUESTIONS_FILE:  # users' own set: asked of the served index alone
            results = {
                "collections": {"seeds": run(Settings(), args.split, args.modes, args.url, "seeds", args.questions)}
            }
        else:
            results = run_collections(Settings(), args.collections, args.ranks, args.split, args.modes, args.url)
    except QuestionSetError as error:
        print(f"错误：{error}", file=sys.stderr)
        return 4
    args.out.mkdir(parents=True, exist_ok=True)
    if args.questions.resolve() != QUESTIONS_FILE:
        # Another set (users' exported questions): its own files; the committed results and the baseline stay.
        name = f"quality-{args.questions.stem}"
        (args.out / f"{name}.json").write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n")
        report = markdown_report(results)
        (args.out / f"{name}.md").write_text(report)
        print(report)
        print(f"→ {args.out}/{name}.json、{name}.md")
        return 0
    (args.out / "quality.json").write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n")
    report = markdown_report(results)
    (args.out / "quality.md").write_text(report)
    for name, measured in results["collections"].items():
        quality_chart(measured, args.out / ("quality.png" if name == "seeds" else f"quality-{name}.png"))
    print(report)
    print(changes_text(results, previous_results()))
    if args.write_baseline:
        BASELINE_FILE.write_text(json.dumps(guarded_measures(results), indent=2) + "\n")
        print(f"→ 回归基线已改写：{BASELINE_FILE}")
    print(f"→ {args.out}/quality.json、quality.md、quality*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
