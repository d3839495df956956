"""Command line: dangjian-qa index | search | serve | add | remove | docs | migrate | bench-scale.

The only place with exit codes."""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from pydantic import ValidationError

from embeddings.model import ModelError
from service.collections import (
    DEFAULT_COLLECTION,
    DocumentQuery,
    InvalidCollection,
    UnknownCollections,
    checked_collection,
    checked_scope,
    collection_counts,
    document_page,
)
from service.config import DEFAULT_MODE, MODES, Settings
from service.engine import (
    NothingToIndex,
    build_index,
    indexable_files,
    migrate_to_milvus,
    open_encoders,
    open_searcher,
    open_store,
    open_tokenizer,
)
from service.index import IndexBusy, IndexUnavailable
from service.ingest.read import SUPPORTED_SUFFIXES
from service.scale import bench_scale
from service.search import QueryRejected, clean_query, search_response
from service.serve import serve
from service.stores import Filters, StoreUnreachable, document_rows
from service.update import (
    ADDED,
    DUPLICATE,
    NOT_ADDED,
    REPLACED,
    UNSUPPORTED,
    AddReport,
    UpdateError,
    add_files,
    delete_documents,
)

EXIT_OK, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_INPUT = 0, 2, 3, 4


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


def store_name(settings: Settings) -> str:
    return str(settings.index_dir) if settings.store == "faiss" else f"Milvus {settings.milvus_uri}"


def command_index(args: argparse.Namespace, settings: Settings) -> int:
    if args.store:
        settings = settings.model_copy(update={"store": args.store})
    seeds = Path(args.seeds) if args.seeds else settings.seeds_dir
    paths = indexable_files(seeds, settings.uploads_dir)
    # Users' documents (kept originals in uploads_dir) are indexed too: a rebuild must not drop them.
    encoders, tokenizer = open_encoders(settings), open_tokenizer(settings)
    report = build_index(paths, settings, encoders, tokenizer, progress=True, with_uploads=True)
    for problem in report.corpus.problems:
        print(f"跳过：{problem}", file=sys.stderr)
    print(
        f"已索引 {len(report.corpus.documents)} 篇文档、{len(report.corpus.passages)} 个段落，"
        f"用时 {report.seconds:.1f} 秒（编码 {report.encode_seconds:.1f} 秒）→ {store_name(settings)}"
    )
    return EXIT_OK if report.corpus.documents else EXIT_INPUT


def command_search(args: argparse.Namespace, settings: Settings) -> int:
    if not 1 <= args.k <= settings.max_top_k:
        print(f"错误：-k 必须在 1 到 {settings.max_top_k} 之间", file=sys.stderr)
        return EXIT_USAGE
    query = clean_query(args.query, settings.max_query_chars)
    filters = Filters(collections=checked_scope(args.collection))
    response = search_response(open_searcher(settings), query, args.k, args.mode, filters)
    if args.json:
        print(json.dumps(response, ensure_ascii=False, indent=2))
    else:
        print_hits(response["results"])
    return EXIT_OK


def command_serve(args: argparse.Namespace, settings: Settings) -> int:
    overrides = {name: value for name, value in (("host", args.host), ("port", args.port)) if value is not None}
    serve(settings.model_copy(update=overrides), build_missing=args.build_missing)
    return EXIT_OK


def collect_files(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Named files as given, folders searched recursively for supported files; missing paths reported."""
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
    files, missing = collect_files(args.paths)
    if not files and not missing:
        print("错误：没有找到可添加的文件（支持 .txt .md .docx .pdf）", file=sys.stderr)
        return EXIT_INPUT
    collection = checked_collection(args.collection)
    report = AddReport()
    if files:
        encoders, tokenizer = open_encoders(settings), open_tokenizer(settings)
        report = add_files(settings, encoders, tokenizer, files, progress=True, collection=collection)
    for outcome in report.having(ADDED, REPLACED):
        verb = "新增" if outcome.status == ADDED else "替换"
        print(f"{verb}：{outcome.name} → {outcome.doc_id}（{outcome.passages} 个段落，文档集 {collection}）")
    for outcome in report.having(DUPLICATE):
        print(f"跳过：{outcome.reason}")
    failures = [outcome.reason for outcome in report.having(*NOT_ADDED)] + missing
    for reason in failures:
        print(f"失败：{reason}", file=sys.stderr)
    counts = [len(report.having(status)) for status in (ADDED, REPLACED, DUPLICATE)]
    print(
        f"新增 {counts[0]} 篇、替换 {counts[1]} 篇、跳过重复 {counts[2]} 篇、失败 {len(failures)} 个"
        f"（其中不支持的类型 {len(report.having(UNSUPPORTED))} 个），用时 {report.seconds:.1f} 秒"
    )
    return EXIT_OK if report.changed or not failures else EXIT_INPUT


def command_remove(args: argparse.Namespace, settings: Settings) -> int:
    try:
        manifest = delete_documents(settings, open_encoders(settings), args.doc_ids)
    except UpdateError as error:
        print(f"错误：{error}", file=sys.stderr)
        return EXIT_INPUT
    removed = "、".join(dict.fromkeys(args.doc_ids))
    print(f"已删除：{removed}；索引现有 {manifest['document_count']} 篇文档、{manifest['passage_count']} 个段落")
    return EXIT_OK


def command_docs(args: argparse.Namespace, settings: Settings) -> int:
    store = open_store(settings, open_encoders(settings))
    collection = None if args.collection is None else checked_collection(args.collection)
    rows = document_page(document_rows(store), DocumentQuery(collection=collection))["documents"]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return EXIT_OK
    for row in rows:
        about = " · ".join(str(value) for value in (row["doc_type"], row["year"]) if value)
        print(
            f"{row['doc_id']}  《{row['title']}》 {about}  {row['passages']} 段  [{row['collection']}]  "
            f"添加于 {row['added_at']}"
        )
    counts = collection_counts(store.documents.values(), store.passage_counts())
    listed = "；".join(f"{c.name} {c.documents} 篇、{c.passages} 段" for c in counts.values())
    print(f"共 {len(rows)} 篇文档（文档集：{listed}）")
    return EXIT_OK


def command_migrate(args: argparse.Namespace, settings: Settings) -> int:
    version, manifest = migrate_to_milvus(settings, open_encoders(settings))
    print(
        f"已把 {settings.index_dir} 的 {manifest['document_count']} 篇文档、{manifest['passage_count']} 个段落"
        f"（{manifest['unit_count']} 个向量单元，未重新编码）复制到 Milvus {settings.milvus_uri}，版本 {version}；"
        "用 DJQA_STORE=milvus 启动服务即可使用"
    )
    return EXIT_OK


MAX_SCALE_PASSAGES = 10_000_000  # ten times the largest corpus measured: about 130 GB of index


def command_bench_scale(args: argparse.Namespace, settings: Settings) -> int:
    if not 1 <= args.passages <= MAX_SCALE_PASSAGES:
        print(f"错误：--passages 至少为 1，至多为 {MAX_SCALE_PASSAGES:,}", file=sys.stderr)
        return EXIT_USAGE
    if args.dir is not None and not args.dir.is_dir():
        print(f"错误：--dir 不是已有的目录：{args.dir}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"规模测试：{args.passages:,} 个合成段落（由种子文档的句子随机组合，向量由真实模型的句向量组合而成，"
        "不是逐段编码），在新进程中测量……",
        file=sys.stderr,
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="djqa-scale-", dir=args.dir) as scratch:
        result = bench_scale(args.passages, Path(scratch), settings)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
        return EXIT_OK
    print(
        f"段落 {result['passages']:,}（单元 {result['units']:,}，"
        f"{'近似' if result['approximate'] else '精确'}向量检索）\n"
        f"构建 {result['build_s']} 秒，磁盘 {result['disk_mb']:,} MB；冷启动到首个回答 {result['cold_start_s']} 秒；"
        f"服务内存 {result['rss_mb']:,} MB\n"
        f"混合检索 top-10：中位数 {result['p50_ms']} ms，p95 {result['p95_ms']} ms"
        f"（问题编码另计，中位数 {result['encode_p50_ms']} ms）；近似检索 recall@10 {result['recall_at_10']}"
    )
    return EXIT_OK


def parser(settings: Settings) -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="dangjian-qa", description="党建问答：卫健系统党建文献检索")
    commands = root.add_subparsers(dest="command", required=True)
    index = commands.add_parser("index", help="从文档目录构建索引")
    index.add_argument("--seeds", help="文档目录（默认 seeds/）")
    index.add_argument("--store", choices=("faiss", "milvus"), help="写入哪个存储（默认取 DJQA_STORE）")
    search = commands.add_parser("search", help="检索段落")
    search.add_argument("query", help="问题，例如：如何推动党建与医疗业务深度融合")
    search.add_argument(
        "-k", type=int, default=settings.default_top_k, help=f"返回条数（1-{settings.max_top_k}，默认 %(default)s）"
    )
    search.add_argument("--mode", choices=MODES, default=DEFAULT_MODE)
    search.add_argument("--json", action="store_true", help="输出 JSON（与 /api/search 的结构相同）")
    search.add_argument(
        "--collection", action="append", metavar="NAME", help="只在此文档集中检索（可重复给出多个）；默认检索全部"
    )
    serve = commands.add_parser("serve", help="启动 HTTP 服务和查询页面")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--build-missing", action="store_true", help="索引不存在时先从文档目录构建")
    add = commands.add_parser("add", help="添加文档（.txt .md .docx .pdf，可给文件夹）到索引")
    add.add_argument("paths", nargs="+", metavar="FILE_OR_DIR")
    add.add_argument(
        "--collection", default=DEFAULT_COLLECTION, metavar="NAME", help="收录到哪个文档集（默认 %(default)s）"
    )
    remove = commands.add_parser("remove", help="从索引删除文档")
    remove.add_argument("doc_ids", nargs="+", metavar="DOC_ID", help="文档编号（见 dangjian-qa docs）")
    commands.add_parser("migrate", help="把本机索引目录的当前版本复制到 Milvus（DJQA_MILVUS_URI），不重新编码")
    docs = commands.add_parser("docs", help="列出索引中的文档")
    docs.add_argument("--json", action="store_true", help="输出 JSON")
    docs.add_argument("--collection", metavar="NAME", help="只列出此文档集的文档")
    scale = commands.add_parser("bench-scale", help="规模测试：合成 N 个段落的索引，测构建、冷启动、内存、延迟和召回")
    scale.add_argument("--passages", type=int, required=True, metavar="N")
    scale.add_argument("--dir", type=Path, help="临时索引放在哪个目录（默认系统临时目录；一百万段落约需 10 GB）")
    scale.add_argument("--json", action="store_true", help="最后一行输出一个 JSON 对象")
    return root


COMMANDS = {"index": command_index, "search": command_search, "serve": command_serve}
COMMANDS |= {"add": command_add, "remove": command_remove, "docs": command_docs, "bench-scale": command_bench_scale}
COMMANDS |= {"migrate": command_migrate}


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings()
    except ValidationError as error:
        fields = "、".join(f"DJQA_{'_'.join(map(str, e['loc'])).upper()}" for e in error.errors())
        print(f"配置错误：环境变量 {fields} 的值无效", file=sys.stderr)
        return EXIT_USAGE
    args = parser(settings).parse_args(argv)
    try:
        return COMMANDS[args.command](args, settings)
    except (QueryRejected, InvalidCollection, UnknownCollections) as error:
        print(f"错误：{error}", file=sys.stderr)
        return EXIT_USAGE
    except (IndexUnavailable, StoreUnreachable, IndexBusy, ModelError) as error:
        print(f"错误：{error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except NothingToIndex as error:
        print(f"错误：{error}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
