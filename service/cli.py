"""Command line: dangjian-qa index | search | serve | eval (and add/remove/docs for users' files)."""

import argparse
import json
import sys
from pathlib import Path

from service.config import Settings

EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INPUT = 0, 2, 3, 4


def hit_row(rank: int, hit) -> dict:  # noqa: ANN001 - a records.Hit
    passage = hit.passage
    return {
        "rank": rank,
        "score": round(hit.score, 4),
        "title": passage.title,
        "section": passage.section,
        "passage_id": passage.passage_id,
        "doc_id": passage.doc_id,
        "text": passage.text,
        "dense": None if hit.dense_rank is None else {"rank": hit.dense_rank, "score": round(hit.dense_score, 4)},
        "lexical": None
        if hit.lexical_rank is None
        else {"rank": hit.lexical_rank, "score": round(hit.lexical_score, 4)},
        "matched_terms": list(hit.matched_terms),
    }


def print_hits(rows: list[dict]) -> None:
    if not rows:
        print("没有找到相关段落。")
    for row in rows:
        why = []
        if row["dense"]:
            why.append(f"语义第{row['dense']['rank']}")
        if row["lexical"]:
            why.append(f"关键词第{row['lexical']['rank']}")
        print(f"[{row['rank']}] {row['score']:.3f}  《{row['title']}》")
        if row["section"]:
            print(f"    {row['section']}")
        print(f"    {row['text']}")
        terms = "、".join(row["matched_terms"]) or "无"
        print(f"    （{' · '.join(why)} · 命中词：{terms}）\n")


def command_index(args: argparse.Namespace, settings: Settings) -> int:
    from service.engine import build_index, open_encoder, open_tokenizer, source_files

    seeds = Path(args.seeds) if args.seeds else settings.seeds_dir
    if not seeds.is_dir():
        print(f"错误：文档目录不存在：{seeds}", file=sys.stderr)
        return EXIT_INPUT
    paths = source_files(seeds)
    if not paths:
        print(f"错误：{seeds} 中没有可索引的文件（.txt/.md）", file=sys.stderr)
        return EXIT_INPUT
    report = build_index(paths, settings, open_encoder(settings), open_tokenizer(settings), progress=True)
    for problem in report.corpus.problems:
        print(f"跳过：{problem}", file=sys.stderr)
    print(
        f"已索引 {len(report.corpus.documents)} 篇文档、{len(report.corpus.passages)} 个段落，"
        f"用时 {report.seconds:.1f} 秒（编码 {report.encode_seconds:.1f} 秒）→ {settings.index_dir}"
    )
    return EXIT_OK if report.corpus.documents else EXIT_INPUT


def command_search(args: argparse.Namespace, settings: Settings) -> int:
    from service.engine import open_searcher

    query = args.query.strip()
    if not query:
        print("错误：问题不能为空", file=sys.stderr)
        return EXIT_USAGE
    if len(query) > settings.max_query_chars:
        print(f"错误：问题长度不能超过 {settings.max_query_chars} 字", file=sys.stderr)
        return EXIT_USAGE
    searcher = open_searcher(settings)
    hits = searcher.search(query, top_k=args.k, mode=args.mode)
    rows = [hit_row(rank, hit) for rank, hit in enumerate(hits, start=1)]
    if args.json:
        print(json.dumps({"query": query, "mode": args.mode, "results": rows}, ensure_ascii=False, indent=2))
    else:
        print_hits(rows)
    return EXIT_OK


def command_serve(args: argparse.Namespace, settings: Settings) -> int:
    from service.serve import serve

    overrides = {name: value for name, value in (("host", args.host), ("port", args.port)) if value is not None}
    return serve(settings.model_copy(update=overrides), build_missing=args.build_missing)


def top_k(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 50:
        raise argparse.ArgumentTypeError("k 必须在 1 到 50 之间")
    return number


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="dangjian-qa", description="党建问答：卫健系统党建文献检索")
    commands = root.add_subparsers(dest="command", required=True)
    index = commands.add_parser("index", help="从文档目录构建索引")
    index.add_argument("--seeds", help="文档目录（默认 seeds/）")
    search = commands.add_parser("search", help="检索段落")
    search.add_argument("query", help="问题，例如：如何推动党建与医疗业务深度融合")
    search.add_argument("-k", type=top_k, default=5, help="返回条数（1-50，默认 5）")
    search.add_argument("--mode", choices=["hybrid", "dense", "lexical"], default="hybrid")
    search.add_argument("--json", action="store_true", help="输出 JSON")
    serve = commands.add_parser("serve", help="启动 HTTP 服务和查询页面")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--build-missing", action="store_true", help="索引不存在时先从文档目录构建")
    return root


COMMANDS = {"index": command_index, "search": command_search, "serve": command_serve}


def main(argv: list[str] | None = None) -> int:
    from embeddings.model import ModelError
    from service.index import IndexUnavailable

    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args, Settings())
    except (IndexUnavailable, ModelError) as error:
        print(f"错误：{error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
