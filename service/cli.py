"""Command line: dangjian-qa index | search | serve | eval | add | remove | docs."""

import argparse
import json
import sys
from pathlib import Path

from service.config import Settings

EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INPUT = 0, 2, 3, 4


def hit_row(rank: int, hit) -> dict:  # hit: a records.Hit
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
    from service.originals import original_files

    seeds = Path(args.seeds) if args.seeds else settings.seeds_dir
    if not seeds.is_dir():
        print(f"错误：文档目录不存在：{seeds}", file=sys.stderr)
        return EXIT_INPUT
    paths = source_files(seeds)
    if not paths and not original_files(settings.uploads_dir):
        print(f"错误：{seeds} 中没有可索引的文件（.txt .md .docx .pdf）", file=sys.stderr)
        return EXIT_INPUT
    # Users' documents (kept originals in uploads_dir) are indexed too: a rebuild must not drop them.
    encoder, tokenizer = open_encoder(settings), open_tokenizer(settings)
    report = build_index(paths, settings, encoder, tokenizer, progress=True, with_uploads=True)
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


def command_eval(args: argparse.Namespace, settings: Settings) -> int:
    from eval.run import command

    return command(args, settings)


def collect_files(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Named files as given, folders searched recursively for supported files; missing paths reported."""
    from service.ingest.read import SUPPORTED_SUFFIXES

    files: list[Path] = []
    missing: list[str] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
        elif path.is_file():
            files.append(path)
        else:
            missing.append(f"{name}：文件不存在")
    return files, missing


def command_add(args: argparse.Namespace, settings: Settings) -> int:
    from service.engine import open_encoder, open_tokenizer
    from service.update import ADDED, DUPLICATE, FAILED, REPLACED, TOO_LARGE, UNSUPPORTED, AddReport, add_files

    files, missing = collect_files(args.paths)
    if not files and not missing:
        print("错误：没有找到可添加的文件（支持 .txt .md .docx .pdf）", file=sys.stderr)
        return EXIT_INPUT
    report = AddReport()
    if files:
        report = add_files(settings, open_encoder(settings), open_tokenizer(settings), files, progress=True)
    for outcome in report.having(ADDED, REPLACED):
        verb = "新增" if outcome.status == ADDED else "替换"
        print(f"{verb}：{outcome.name} → {outcome.doc_id}（{outcome.passages} 个段落）")
    for outcome in report.having(DUPLICATE):
        print(f"跳过：{outcome.reason}")
    failures = [outcome.reason for outcome in report.having(UNSUPPORTED, TOO_LARGE, FAILED)] + missing
    for reason in failures:
        print(f"失败：{reason}", file=sys.stderr)
    counts = [len(report.having(status)) for status in (ADDED, REPLACED, DUPLICATE)]
    print(
        f"新增 {counts[0]} 篇、替换 {counts[1]} 篇、跳过重复 {counts[2]} 篇、失败 {len(failures)} 个"
        f"（其中不支持的类型 {len(report.having(UNSUPPORTED))} 个），用时 {report.seconds:.1f} 秒"
    )
    return EXIT_OK if report.changed or not failures else EXIT_INPUT


def command_remove(args: argparse.Namespace, settings: Settings) -> int:
    from service.engine import open_encoder
    from service.update import UpdateError, delete_documents

    try:
        index = delete_documents(settings, open_encoder(settings), args.doc_ids)
    except UpdateError as error:
        print(f"错误：{error}", file=sys.stderr)
        return EXIT_INPUT
    removed = "、".join(dict.fromkeys(args.doc_ids))
    print(f"已删除：{removed}；索引现有 {len(index.documents)} 篇文档、{len(index.passages)} 个段落")
    return EXIT_OK


def command_docs(args: argparse.Namespace, settings: Settings) -> int:
    from service.engine import model_info, open_encoder
    from service.index import load_index
    from service.update import document_rows

    rows = document_rows(load_index(settings.index_dir, model_info(open_encoder(settings))))
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return EXIT_OK
    for row in rows:
        about = " · ".join(str(value) for value in (row["doc_type"], row["year"]) if value)
        print(f"{row['doc_id']}  《{row['title']}》 {about}  {row['passages']} 段  添加于 {row['added_at']}")
    print(f"共 {len(rows)} 篇文档")
    return EXIT_OK


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
    evaluate = commands.add_parser("eval", help="评测检索质量，结果写入 eval/results/")
    evaluate.add_argument("--url", help="评测运行中的服务，例如 http://127.0.0.1:8765（默认进程内）")
    evaluate.add_argument("--split", choices=["all", "dev", "test"], default="all")
    modes = ["hybrid", "dense", "lexical"]
    evaluate.add_argument("--modes", nargs="+", choices=modes, default=modes)
    evaluate.add_argument("--out", type=Path, help="结果目录（默认 eval/results/）")
    add = commands.add_parser("add", help="添加文档（.txt .md .docx .pdf，可给文件夹）到索引")
    add.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")
    remove = commands.add_parser("remove", help="从索引删除文档")
    remove.add_argument("doc_ids", nargs="+", metavar="DOC_ID", help="文档编号（见 dangjian-qa docs）")
    docs = commands.add_parser("docs", help="列出索引中的文档")
    docs.add_argument("--json", action="store_true", help="输出 JSON")
    return root


COMMANDS = {"index": command_index, "search": command_search, "serve": command_serve, "eval": command_eval}
COMMANDS |= {"add": command_add, "remove": command_remove, "docs": command_docs}


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from embeddings.model import ModelError
    from service.index import IndexUnavailable

    args = parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as error:
        fields = "、".join(f"DJQA_{'_'.join(map(str, e['loc'])).upper()}" for e in error.errors())
        print(f"配置错误：环境变量 {fields} 的值无效", file=sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args, settings)
    except (IndexUnavailable, ModelError) as error:
        print(f"错误：{error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
