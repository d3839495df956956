"""Presenting eval results: markdown tables, the change against the last commit, and charts."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.font_manager as font_manager
import matplotlib.pyplot as plt

SYSTEM_NAMES = {
    "hybrid": ("hybrid (ours)", "混合（本项目）"),
    "dense": ("dense, multi-unit (ours)", "语义（本项目）"),
    "lexical": ("lexical BM25 (ours)", "关键词（本项目）"),
    "baseline_dense_passage": ("baseline: whole-passage dense", "基线：整段向量"),
    "baseline_bm25_jieba": ("baseline: jieba + BM25", "基线：jieba+BM25"),
    "baseline_rrf": ("baseline: RRF k=60 of the two", "基线：RRF 融合"),
}
KIND_NAMES = {
    "all": ("all", "全部"),
    "hard": ("hard kinds", "难题合计"),
    "older": ("older kinds", "原有题型"),
    "lexical": ("lexical", "字面"),
    "paraphrase": ("paraphrase", "改写"),
    "multi": ("multi", "多段"),
    "colloquial": ("colloquial", "口语"),
    "short": ("short", "关键词"),
    "long": ("long", "长描述"),
    "fact": ("fact", "事实"),
    "cross": ("cross", "跨文档"),
}
CHART_KINDS = ("lexical", "paraphrase", "multi", "colloquial", "short", "long", "fact", "cross")
METRICS = ("hit@1", "hit@5", "mrr@10", "ndcg@10", "recall@10")
HEADLINE = (("hit@5", "hit@5"), ("mrr@10", "MRR@10"))


def system_name(system: str) -> str:
    if system in SYSTEM_NAMES:
        return SYSTEM_NAMES[system][0]
    mode, _, value = system.partition("_embed_context_")
    return f"ablation: {mode}, embed_context={value}" if value else system


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def signed(value: float) -> str:
    return f"{value:+.3f}".replace("-", "−")


def ranking_tables(results: dict) -> list[str]:
    systems = results["systems"]
    parts = []
    for split in ("all", "dev", "test"):
        named = [(name, system[split]) for name, system in systems.items() if split in system]
        if not named:
            continue
        counts = named[0][1]["all"]["n"]
        header = ["system", "hit@1", "hit@5", "MRR@10", "nDCG@10", "recall@10"]
        with_latency = split == results["split"]
        if with_latency:
            header += ["median ms", "p95 ms"]
        rows = []
        for name, by_kind in named:
            row = [system_name(name), *(f"{by_kind['all'][m]:.3f}" for m in METRICS)]
            if with_latency:
                latency = systems[name]["latency"]
                row += [f"{latency['median_ms']:.1f}", f"{latency['p95_ms']:.1f}"]
            rows.append(row)
        parts.append(f"### Split: {split} ({counts} on-topic questions)\n\n" + table(header, rows))
        kinds = [kind for kind in KIND_NAMES if kind in named[0][1]]
        header = ["system (hit@5 / MRR@10)", *(f"{kind} (n={named[0][1][kind]['n']})" for kind in kinds)]
        rows = [
            [system_name(name), *(f"{by_kind[k]['hit@5']:.3f} / {by_kind[k]['mrr@10']:.3f}" for k in kinds)]
            for name, by_kind in named
        ]
        parts.append(f"By kind, split {split}:\n\n" + table(header, rows))
    return parts


def lead_table(results: dict, ours: str = "hybrid") -> str | None:
    """How far our hybrid is ahead of each baseline: absolute differences."""
    systems = results["systems"]
    baselines = [name for name in SYSTEM_NAMES if name.startswith("baseline_") and name in systems]
    if ours not in systems or not baselines:
        return None
    splits = [split for split in ("all", "dev", "test") if split in systems[ours]]
    header = ["hybrid − …", *(f"{label} {split}" for split in splits for _, label in HEADLINE)]
    rows = [
        [
            system_name(baseline),
            *(
                signed(systems[ours][split]["all"][metric] - systems[baseline][split]["all"][metric])
                for split in splits
                for metric, _ in HEADLINE
            ),
        ]
        for baseline in baselines
    ]
    return table(header, rows)


def ablation_table(results: dict) -> str | None:
    """Each mode with and without title/section prefixing of the embedded text."""
    systems = results["systems"]
    rows = []
    for name in systems:
        mode, _, value = name.partition("_embed_context_")
        if not value or mode not in systems:
            continue
        splits = [split for split in ("all", "dev", "test") if split in systems[name]]
        for system, context in ((mode, str(results["embed_context"]).lower()), (name, value)):
            rows.append(
                [
                    f"{mode}, embed_context={context}",
                    *(f"{systems[system][split]['all'][metric]:.3f}" for split in splits for metric, _ in HEADLINE),
                ]
            )
    if not rows:
        return None
    return table(["system", *(f"{label} {split}" for split in splits for _, label in HEADLINE)], rows)


def significance_table(results: dict) -> str | None:
    """Hybrid's MRR@10 against each baseline's: mean paired difference and p-values, per split."""
    tests = results.get("significance") or {}
    rows = []
    for baseline, by_split in tests.items():
        for split, test in by_split.items():
            if test["mean_diff"] is None:
                continue
            p_values = [f"{test[key]:.2g}" if test[key] is not None else "–" for key in ("t_p", "wilcoxon_p")]
            rows.append([system_name(baseline), split, str(test["n"]), signed(test["mean_diff"]), *p_values])
    if not rows:
        return None
    header = ["hybrid vs", "split", "questions", "MRR@10 difference", "paired t-test p", "Wilcoxon p"]
    return table(header, rows)


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def ask_table(results: dict) -> str | None:
    ask = results.get("ask")
    if not ask:
        return None
    splits = [split for split in ("all", "dev", "test") if split in ask]
    measures = [
        ("on-topic answered (higher is better)", "answered_on_topic", "n_on_topic"),
        ("off-topic refused (higher is better)", "refused_off_topic", "n_off_topic"),
        ("  unrelated refused", "refused_unrelated", None),
        ("  near-domain refused", "refused_near_domain", None),
        ("key fact in the answer", "fact_present", "n_with_facts"),
        ("sentence precision (cites a target passage)", "sentence_precision", None),
    ]
    rows = [
        [label, *(percent(ask[split].get(key)) + (f" (n={ask[split][count]})" if count else "") for split in splits)]
        for label, key, count in measures
    ]
    kinds = [kind for kind in KIND_NAMES if kind in ask[splits[0]].get("answered_by_kind", {})]
    rows += [
        [f"  answered: {KIND_NAMES[kind][0]}", *(percent(ask[split]["answered_by_kind"].get(kind)) for split in splits)]
        for kind in kinds
    ]
    latency = ask["latency"]
    return (
        table(["/api/ask", *splits], rows)
        + f"\n\nask latency: median {latency['median_ms']:.1f} ms, p95 {latency['p95_ms']:.1f} ms"
    )


def collection_parts(results: dict) -> list[str]:
    """One collection's results as markdown: ranking tables, lead over baselines, significance, ablation, ask."""
    questions = results["questions"]
    where = (
        "everything in-process"
        if results["where"] == "in-process"
        else f"project modes and ask over HTTP at {results['where']}, baselines and ablation in-process"
    )
    counts = ", ".join(f"{n} {kind}" for kind, n in questions.items())
    parts = [
        f"Model {results['model']}, {results.get('documents', '?')} documents, {results['passages']} passages, "
        f"split `{results['split']}`: {sum(questions.values())} questions ({counts}); {where}.",
        "### Ranking",
        *(part.replace("### Split", "#### Split") for part in ranking_tables(results)),
    ]
    if lead := lead_table(results):
        parts += ["### Hybrid against the baselines (absolute difference)", lead]
    if tests := significance_table(results):
        parts += ["### Paired significance tests (per-question MRR@10)", tests]
    if ablation := ablation_table(results):
        parts += ["### Ablation: title/section prefix on the embedded text", ablation]
    parts += ["### /api/ask", ask_table(results) or "Not measured."]
    return parts


def side_by_side_ranking(collections: dict, split: str, system: str = "hybrid") -> str | None:
    """hit@5 / MRR@10 of one system per question group, one column per collection."""
    measured = {name: c["systems"][system][split] for name, c in collections.items() if split in c["systems"][system]}
    if len(measured) < 2:
        return None
    kinds = [kind for kind in KIND_NAMES if any(kind in by_kind for by_kind in measured.values())]
    header = ["kind", *(f"{name} hit@5 / MRR@10 (n)" for name in measured)]
    rows = [
        [
            KIND_NAMES[kind][0],
            *(
                f"{by_kind[kind]['hit@5']:.3f} / {by_kind[kind]['mrr@10']:.3f} ({by_kind[kind]['n']})"
                if kind in by_kind
                else "–"
                for by_kind in measured.values()
            ),
        ]
        for kind in kinds
    ]
    return table(header, rows)


ASK_MEASURES = (
    ("on-topic answered", "answered_on_topic"),
    ("off-topic refused", "refused_off_topic"),
    ("  unrelated refused", "refused_unrelated"),
    ("  near-domain refused", "refused_near_domain"),
    ("key fact in the answer", "fact_present"),
    ("sentence precision", "sentence_precision"),
)


def side_by_side_ask(collections: dict) -> str | None:
    """/api/ask's rates per split, one column per collection."""
    splits = [split for split in ("dev", "test") if all(split in c["ask"] for c in collections.values())]
    if len(collections) < 2 or not splits:
        return None
    header = ["/api/ask", *(f"{name} {split}" for split in splits for name in collections)]
    rows = [
        [label, *(percent(c["ask"][split].get(key)) for split in splits for c in collections.values())]
        for label, key in ASK_MEASURES
    ]
    rows.append(
        ["questions (on / off topic)"]
        + [
            f"{c['ask'][split]['n_on_topic']} / {c['ask'][split]['n_off_topic']}"
            for split in splits
            for c in collections.values()
        ]
    )
    return table(header, rows)


def markdown_report(results: dict) -> str:
    """Both collections side by side (hybrid per kind, /api/ask), then each collection's full tables."""
    collections = results["collections"]
    labels = "; ".join(f"`{name}` = {c['label']} ({c['passages']} passages)" for name, c in collections.items())
    parts = [
        "# Retrieval and answer quality",
        f"Collections: {labels}. Ranking metrics count on-topic questions only; `hard` = colloquial, short, "
        "long, fact and cross; `older` = lexical, paraphrase and multi. Questions about archive documents "
        "are asked of `scale` only; off-topic questions an archive document answers, of `seeds` only "
        f"(eval/questions.py). Latency is per query over all questions. Generated {results['generated_at']} "
        "by `make eval`.",
    ]
    for split in ("dev", "test"):
        if ranking := side_by_side_ranking(collections, split):
            parts += [f"## Side by side, split {split}: hybrid hit@5 / MRR@10", ranking]
    if ask := side_by_side_ask(collections):
        parts += ["## Side by side: /api/ask", ask]
    for name, measured in collections.items():
        parts += [f"## Collection `{name}`: {measured['label']}", *collection_parts(measured)]
    return "\n\n".join(parts) + "\n"


def changes_text(results: dict, previous: dict | None) -> str:
    """hit@5 and MRR@10 of each system on each collection against the committed results, as plain text."""
    if previous is None:
        return "与上次提交的结果比较：no previous results (eval/results/quality.json is not in HEAD)"
    before_collections = previous.get("collections") or {"seeds": previous}  # results before two collections
    lines = [f"与上次提交的结果比较（{previous.get('generated_at', '?')}）："]
    for name, measured in results["collections"].items():
        before_results = before_collections.get(name) or {}
        lines.append(f" {name} ({measured['label']}):")
        if before_results.get("questions_sha256") != measured.get("questions_sha256"):
            lines.append("  （问题集已改变，差值只供参考）")
        for system_key, system in measured["systems"].items():
            before = before_results.get("systems", {}).get(system_key, {}).get("all", {}).get("all")
            now = system.get("all", {}).get("all")
            if not before or not now:
                lines.append(f"  {system_name(system_key)}: new")
                continue
            deltas = "  ".join(f"{label} {now[m]:.3f} ({signed(now[m] - before[m])})" for m, label in HEADLINE)
            lines.append(f"  {system_name(system_key):<40} {deltas}")
        ask, ask_before = measured.get("ask", {}).get("all", {}), (before_results.get("ask") or {}).get("all", {})
        for key in ("answered_on_topic", "refused_off_topic", "fact_present", "sentence_precision"):
            if ask.get(key) is not None and ask_before.get(key) is not None:
                lines.append(f"  ask {key:<36} {ask[key]:.3f} ({signed(ask[key] - ask_before[key])})")
    return "\n".join(lines)


def cjk_font() -> str | None:
    """A installed font family that has Chinese glyphs (Noto Sans CJK SC preferred), or None."""
    names = sorted({font.name for font in font_manager.fontManager.ttflist})
    for wanted in ("Noto Sans CJK SC", "Noto Sans CJK", "Source Han Sans", "WenQuanYi", "SimHei", "CJK"):
        for name in names:
            if wanted in name:
                return name
    return None


def use_cjk_font() -> bool:
    """Make matplotlib draw Chinese; False means the caller should label in English."""
    font = cjk_font()
    if font:
        plt.rcParams["font.family"] = [font, "sans-serif"]
        plt.rcParams["axes.unicode_minus"] = False
    return font is not None


def quality_chart(results: dict, path: Path) -> Path:
    """Grouped bars of hit@5 and MRR@10: one group per question kind, one bar per mode or baseline."""
    chinese = use_cjk_font()
    label = 1 if chinese else 0
    split = "all" if "all" in next(iter(results["systems"].values())) else results["split"]
    systems = [name for name in SYSTEM_NAMES if name in results["systems"]]
    kinds = [kind for kind in ("all", *CHART_KINDS) if kind in results["systems"][systems[0]][split]]
    figure, axes = plt.subplots(2, 1, figsize=(13, 8.5), sharey=True)
    width = 0.8 / len(systems)
    tab10 = plt.get_cmap("tab10")
    colours = [tab10(number) for number in range(tab10.N)]
    for axis, (metric, title) in zip(axes, HEADLINE, strict=True):
        for position, system in enumerate(systems):
            values = [results["systems"][system][split][kind][metric] for kind in kinds]
            offsets = [k + (position - (len(systems) - 1) / 2) * width for k in range(len(kinds))]
            hatch = "//" if system.startswith("baseline_") else None
            axis.bar(offsets, values, width, label=SYSTEM_NAMES[system][label], color=colours[position], hatch=hatch)
        axis.set_xticks(range(len(kinds)), [KIND_NAMES[kind][label] for kind in kinds])
        axis.set_title(title)
        axis.set_ylim(0, 1)
        axis.grid(axis="y", alpha=0.3)
    handles, names = axes[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="lower center", ncol=len(systems), fontsize=9, frameon=False)
    heading = "检索质量（按问题类型，{}）" if chinese else "Retrieval quality by question kind ({})"
    figure.suptitle(heading.format(f"split {split}"))
    return saved(figure, path, rect=(0, 0.07, 1, 1))


def size(bytes_count: float | None) -> str:
    if bytes_count is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if bytes_count < 1024 or unit == "GB":
            return f"{bytes_count:.0f} {unit}" if unit in ("B", "KB") else f"{bytes_count:.2f} {unit}"
        bytes_count /= 1024
    return f"{bytes_count:.2f} GB"


def latency_row(name: str, measured: dict) -> list[str]:
    return [
        name,
        str(measured["requests"]),
        *(f"{measured[k]:.1f}" for k in ("median_ms", "p95_ms", "p99_ms")),
        str(measured["errors"]),
    ]


def bench_markdown(results: dict) -> str:
    """The bench results as markdown tables."""
    box, http = results["machine"], results["http"]
    parts = [
        "# Speed",
        f"{box['cores']} cores, {box['cpu_model']}, {size(box['ram_bytes'])} RAM, Python {box['python']}. "
        f"Server `dangjian-qa serve` on loopback, client on the same machine (it shares the cores). "
        f"Generated {results['generated_at']} by `make bench`; numbers are measured, never asserted.",
        "## Start-up and single-client latency",
        f"Cold start (launch → first answered /api/search), median of {len(results['cold_start']['runs'])}: "
        f"**{results['cold_start']['median_seconds']:.1f} s** "
        f"({', '.join(f'{s:.1f}' for s in results['cold_start']['runs'])}).",
        table(
            ["endpoint (eval questions cycled)", "requests", "median ms", "p95 ms", "p99 ms", "errors"],
            [
                latency_row("POST /api/search (hybrid, top 5)", http["search"]),
                latency_row("POST /api/ask", http["ask"]),
                latency_row("POST /api/search, query-vector cache on", http["search_with_query_cache"]),
            ],
        ),
        "The questions repeat, so the server's query-vector cache is off (`DJQA_QUERY_CACHE_SIZE=0`) for"
        " every number but the last row, which shows what a repeated question costs.",
        "## Throughput (POST /api/search)",
        table(
            ["concurrent clients", "seconds", "requests", "errors", "requests/s", "median ms", "p95 ms"],
            [
                [
                    str(level["clients"]),
                    f"{level['seconds']:.1f}",
                    str(level["requests"]),
                    str(level["errors"]),
                    f"{level['requests_per_second']:.1f}",
                    f"{level['median_ms']:.1f}",
                    f"{level['p95_ms']:.1f}",
                ]
                for level in http["throughput"]
            ],
        ),
        f"Server peak RSS (VmHWM) after the load: **{size(http['server_peak_rss_bytes'])}**.",
    ]
    if milvus := results.get("milvus"):
        parts += stores_markdown(http, milvus)
    if previous := results.get("previous"):
        parts += previous_markdown(http, previous)
    build = results["index_build"]
    cold, warm = build["cold"], build["warm"]
    rate = (
        f"embedding {cold['passages_per_second']:.1f} passages/s ({cold['units_per_second']:.1f} units/s: each passage "
        f"is embedded whole, sentence by sentence and clause by clause, {build['units']} units), "
        if "passages_per_second" in cold
        else ""
    )
    parts += [
        "## Index build (seeds)",
        f"{build['passages']} passages. Empty vector cache: {rate}`dangjian-qa index` {cold['wall_seconds']:.1f} s "
        f"in all (process start, model load, ingest, embed, FAISS + BM25, save). With the vector cache warm: "
        f"{warm['wall_seconds']:.1f} s.",
    ]
    if scale := results.get("scale"):
        parts += scale_markdown(scale)
    return "\n\n".join(parts) + "\n"


def stores_markdown(http: dict, milvus: dict) -> list[str]:
    """The FAISS store beside Milvus Lite (its gRPC server, and embedded), measured in the same run."""
    runs = {
        "FAISS (default)": http,
        "Milvus Lite, gRPC server": milvus["grpc"],
        "Milvus Lite, embedded": milvus["embedded"],
    }
    levels = {name: {level["clients"]: level for level in run["throughput"]} for name, run in runs.items()}
    rows = [
        ["POST /api/search, single client: median / p95 ms"]
        + [f"{run['search']['median_ms']:.1f} / {run['search']['p95_ms']:.1f}" for run in runs.values()],
        ["POST /api/ask, single client: median / p95 ms"]
        + [f"{run['ask']['median_ms']:.1f} / {run['ask']['p95_ms']:.1f}" for run in runs.values()],
        *(
            [f"throughput, {clients} client(s): requests/s"]
            + [f"{levels[name][clients]['requests_per_second']:.1f}" for name in runs]
            for clients in (1, 16)
        ),
        ["errors (all requests)"]
        + [
            str(run["search"]["errors"] + run["ask"]["errors"] + sum(levels[name][n]["errors"] for n in (1, 16)))
            for name, run in runs.items()
        ],
        ["service peak RSS"] + [size(run["server_peak_rss_bytes"]) for run in runs.values()],
        ["Milvus Lite server peak RSS", "–", size(milvus["grpc"]["store_peak_rss_bytes"]), "(in the service)"],
    ]
    return [
        "## Stores side by side (seeds, same run)",
        table(["measure", *runs], rows),
        "The seeds' index copied into Milvus Lite with `dangjian-qa migrate`; every store ranks the same"
        " passages (tests/test_milvus.py). Milvus Lite is Milvus's pure-Python edition for tests and small"
        " installations; a Milvus server or cluster answers the same requests from its C++ engine.",
    ]


def previous_markdown(http: dict, previous: dict) -> list[str]:
    """This commit's server beside an earlier commit's, measured in the same run."""
    ours = {level["clients"]: level for level in http["throughput"]}
    theirs = {level["clients"]: level for level in previous["throughput"]}
    rows = [
        ["POST /api/search, single client: median / p95 ms"]
        + [f"{run['search']['median_ms']:.1f} / {run['search']['p95_ms']:.1f}" for run in (http, previous)],
        *(
            [f"throughput, {clients} client(s): requests/s"]
            + [f"{levels[clients]['requests_per_second']:.1f}" for levels in (ours, theirs)]
            for clients in sorted(theirs)
            if clients in ours
        ),
    ]
    return [
        f"## Against commit {previous['revision']} (same run, same machine)",
        table(["measure", "this commit", previous["revision"]], rows),
    ]


def clause_label(run: dict) -> str:
    return "clause units" if run.get("clause_units", False) else "sentence units"


def scale_markdown(runs: list[dict]) -> list[str]:
    """`dangjian-qa bench-scale` at each corpus size, one column per size."""
    measures = [
        ("embedded units (per model)", lambda r: f"{r['units']:,}"),
        ("dense search", lambda r: "IVF-PQ + exact re-scoring" if r["approximate"] else "exact scan"),
        ("build from given vectors", lambda r: f"{r['build_s']:.0f} s"),
        ("build process peak RSS", lambda r: f"{r['build_peak_rss_mb']:,.0f} MB"),
        ("index on disk", lambda r: f"{r['disk_mb']:,.0f} MB"),
        ("cold start: launch → first answered question", lambda r: f"{r['cold_start_s']:.1f} s"),
        ("serving RSS after all questions", lambda r: f"{r['rss_mb']:,.0f} MB"),
        (
            "hybrid top-10 in-process, steady state: median / p95",
            lambda r: f"**{r['p50_ms']:.1f}** / {r['p95_ms']:.1f} ms",
        ),
        (
            "the same, first pass after start (index read from disk)",
            lambda r: f"{r['first_pass_p50_ms']:.1f} / {r['first_pass_p95_ms']:.1f} ms",
        ),
        ("encoding the question (both models, not corpus-dependent): median", lambda r: f"{r['encode_p50_ms']:.1f} ms"),
        ("dense recall@10 against an exact scan (worst model)", lambda r: f"{r['recall_at_10']:.3f}"),
    ]
    return [
        "## Scale: `dangjian-qa bench-scale`",
        "Synthetic corpora of N passages, each 2–5 sentences drawn at random from the seeds' "
        f"{runs[0]['seed_sentences']} sentences, 20 passages to a document. **The vectors are composed, not "
        "embedded** (embedding a million passages here would take days): a sentence unit has the real model's "
        "vector of its seed sentence plus noise (cosine ≈ 0.95), the whole passage the normalised mean of its "
        "sentences, a clause unit its seed clause's vector plus noise (runs with clause units, the default; "
        "the others with `DJQA_CLAUSE_UNITS=false`). The index, the load and the searches are the product's "
        "code. Each size is measured in a "
        f"fresh process over the {runs[0]['questions']} eval questions, twice (latency given the question's "
        "vectors, the encoding's median shown apart; the second pass is a running server's steady state, the "
        "first reads the index from disk), recall over 60 of them. RSS counts the process's own memory and "
        "the pages of files it maps (the approximate indexes are read in; unit vectors and BM25 columns are "
        "read with pread through the shared page cache).",
        table(
            ["measure", *(f"{r['passages']:,} passages, {clause_label(r)}" for r in runs)],
            [[name, *(f(r) for r in runs)] for name, f in measures],
        ),
        "![scale](bench_scale.png)",
    ]


def saved(figure: plt.Figure, path: Path, rect: tuple[float, float, float, float] = (0, 0, 1, 1)) -> Path:
    """Lay out, write and close a chart."""
    figure.tight_layout(rect=rect)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def scale_chart(runs: list[dict], path: Path) -> Path:
    """Hybrid latency and serving memory against corpus size."""
    chinese = use_cjk_font()
    sizes = [run["passages"] for run in runs]
    figure, left = plt.subplots(figsize=(7, 4.5))
    right = left.twinx()
    for clause_units, fill in ((True, "full"), (False, "none")):
        chosen = [run for run in runs if run.get("clause_units", False) == clause_units]
        if not chosen:
            continue
        label = clause_label(chosen[0]) if not chinese else ("含分句单元" if clause_units else "仅整段与句子单元")
        at = [run["passages"] for run in chosen]
        left.plot(at, [r["p50_ms"] for r in chosen], "o-", color="tab:blue", fillstyle=fill, label=f"p50, {label}")
        left.plot(at, [r["p95_ms"] for r in chosen], "^:", color="tab:blue", fillstyle=fill, label=f"p95, {label}")
        right.plot(at, [r["rss_mb"] / 1024 for r in chosen], "s--", color="tab:red", fillstyle=fill)
    left.set_xscale("log")
    left.set_xticks(sorted(set(sizes)), [f"{size:,}" for size in sorted(set(sizes))])
    left.set_xlabel("段落数" if chinese else "passages")
    left.set_ylabel("混合检索延迟（毫秒）" if chinese else "hybrid latency (ms)", color="tab:blue")
    left.set_ylim(bottom=0)
    left.legend(loc="upper left", fontsize="small")
    right.set_ylabel("服务内存 RSS（GB）" if chinese else "serving RSS (GB)", color="tab:red")
    right.set_ylim(bottom=0)
    left.set_title("规模：延迟与内存" if chinese else "Scale: latency and memory")
    left.grid(alpha=0.3)
    return saved(figure, path)


def bench_chart(results: dict, path: Path) -> Path:
    """Single-client latency percentiles per endpoint, and throughput and latency against concurrency."""
    chinese = use_cjk_font()
    http = results["http"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    endpoints = [("search", "/api/search"), ("ask", "/api/ask")]
    marks = (("median_ms", "中位数" if chinese else "median"), ("p95_ms", "p95"), ("p99_ms", "p99"))
    for position, (key, label) in enumerate(marks):
        values = [http[name][key] for name, _ in endpoints]
        left.bar([e + (position - 1) * 0.25 for e in range(len(endpoints))], values, 0.25, label=label)
    left.set_xticks(range(len(endpoints)), [endpoint for _, endpoint in endpoints])
    left.set_ylabel("毫秒" if chinese else "ms")
    left.set_title("单客户端延迟" if chinese else "Single-client latency")
    left.legend()
    left.grid(axis="y", alpha=0.3)
    levels = http["throughput"]
    clients = [level["clients"] for level in levels]
    right.plot(clients, [level["requests_per_second"] for level in levels], "o-", color="tab:blue")
    right.set_xscale("log", base=2)
    right.set_xticks(clients, [str(c) for c in clients])
    right.set_xlabel("并发客户端数" if chinese else "concurrent clients")
    right.set_ylabel("请求/秒" if chinese else "requests/s", color="tab:blue")
    right.set_ylim(bottom=0)
    twin = right.twinx()
    twin.plot(clients, [level["median_ms"] for level in levels], "s--", color="tab:red", label=marks[0][1])
    twin.plot(clients, [level["p95_ms"] for level in levels], "^:", color="tab:red", label="p95")
    twin.legend(loc="upper left")
    twin.set_ylabel("延迟 中位数 / p95（毫秒）" if chinese else "latency median / p95 (ms)", color="tab:red")
    twin.set_ylim(bottom=0)
    right.set_title("/api/search 吞吐量与延迟" if chinese else "/api/search throughput and latency")
    right.grid(alpha=0.3)
    return saved(figure, path)
