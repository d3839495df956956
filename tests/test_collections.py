"""Collections: documents kept apart by name, and searches scoped to some of them as if the others did not exist."""

import json
from pathlib import Path

import pytest

from service.collections import (
    DEFAULT_COLLECTION,
    DocumentQuery,
    InvalidCollection,
    UnknownCollections,
    checked_collection,
    document_page,
)
from service.config import Settings
from service.embed import Encoders
from service.engine import build_index, load_current, open_searcher, source_files
from service.index import IndexUnavailable, current_version
from service.jobs import JobStore
from service.originals import collection_file
from service.search import Searcher
from service.stores import Filters
from service.tokenize import WordTokenizer
from service.update import add_files, delete_documents
from tests.conftest import run_cli, write

LAWS = "法律法规"
# Invented rules in the style of the laws a Party committee consults; they share words with the seeds
# (党风廉政建设, 红包, 主体责任), so a search across everything mixes them with the seeds.
DISCIPLINE = (
    "第一条 为了维护党的章程和其他党内法规，严肃党的纪律，落实全面从严治党主体责任，制定本条例。\n"
    "第二条 党员违反廉洁纪律，收受可能影响公正执行公务的礼品、礼金、红包的，给予警告或者严重警告处分。\n"
    "第三条 各级党组织应当把党风廉政建设纳入年度考核，考核结果作为干部选拔任用的重要依据。\n"
)
HOSPITALS = (
    "第一条 为了规范医疗机构管理，保障医疗质量和医疗安全，根据有关法律，制定本办法。\n"
    "第二条 医疗机构应当落实党风廉政建设责任制，医务人员不得收受患者及其亲属的红包、回扣。\n"
    "第三条 医疗机构应当建立投诉管理制度，对群众反映的问题及时调查处理并反馈。\n"
)
QUESTIONS = ("党风廉政建设主体责任怎么落实", "医务人员收红包怎么处理", "如何推动党建与医疗业务深度融合")


@pytest.fixture
def law_files(tmp_path: Path) -> list[Path]:
    return [
        write(tmp_path / "laws", "纪律处分条例.txt", DISCIPLINE),
        write(tmp_path / "laws", "医疗机构管理办法.txt", HOSPITALS),
    ]


@pytest.fixture
def settings(private_settings: Settings, law_files: list[Path], encoders: Encoders, tokenizer: WordTokenizer):
    """The seed index (collection default) with the two laws added to 法律法规."""
    add_files(private_settings, encoders, tokenizer, law_files, collection=LAWS)
    return private_settings


@pytest.fixture
def laws_alone(tmp_path: Path, settings: Settings, law_files: list[Path], encoders, tokenizer) -> Searcher:
    """An index of the laws and nothing else: what a search scoped to them must behave like."""
    alone = settings.model_copy(update={"index_dir": tmp_path / "alone", "uploads_dir": tmp_path / "alone-uploads"})
    build_index(law_files, alone, encoders, tokenizer)
    return open_searcher(alone, encoders, tokenizer)


def test_names_allow_chinese_and_refuse_empty_long_or_odd_ones() -> None:
    assert checked_collection(" 法律法规 ") == "法律法规"
    assert checked_collection("2024年_支部-文件") == "2024年_支部-文件"
    for bad, words in (("", "不能为空"), ("x" * 33, "不能超过 32"), ("a/b", "只能包含"), ("法规 汇编", "只能包含")):
        with pytest.raises(InvalidCollection, match=words):
            checked_collection(bad)


def test_document_list_filters_sorts_and_pages() -> None:
    rows = [
        {"doc_id": f"d{n}", "title": f"标题{n % 7}", "collection": "a" if n % 2 else "b", "passages": n, "year": None}
        for n in range(25)
    ]
    page = document_page(rows, DocumentQuery(collection="a", sort="-passages", page=2, page_size=5))
    assert page["total"] == 12 and page["pages"] == 3
    assert [row["doc_id"] for row in page["documents"]] == ["d13", "d11", "d9", "d7", "d5"]
    found = document_page(rows, DocumentQuery(text="标题3"))
    assert [row["doc_id"] for row in found["documents"]] == ["d3", "d10", "d17", "d24"]
    assert document_page(rows, DocumentQuery(collection="none"))["total"] == 0
    titled = document_page(rows[:12], DocumentQuery(sort="title", page_size=3))["documents"]
    assert [row["title"] for row in titled] == ["标题0", "标题0", "标题1"]
    numbered = [{"doc_id": t, "title": t} for t in ("第10号", "第2号", "第1号")]
    assert [r["title"] for r in document_page(numbered, DocumentQuery(sort="title"))["documents"]] == [
        "第1号",
        "第2号",
        "第10号",
    ]


def test_added_documents_keep_their_collection_and_seeds_are_in_default(settings: Settings, encoders) -> None:
    documents = load_current(settings, encoders).documents
    assert {d.doc_id for d in documents.values() if d.collection == LAWS} == {"纪律处分条例", "医疗机构管理办法"}
    assert sum(d.collection == DEFAULT_COLLECTION for d in documents.values()) == 5
    searcher = open_searcher(settings, encoders)
    assert {name: (c.documents, c.passages) for name, c in searcher.collections.items()} == {
        DEFAULT_COLLECTION: (5, searcher.store.passage_count - 6),
        LAWS: (2, 6),
    }


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_a_scoped_search_ranks_only_its_collections(settings: Settings, encoders, tokenizer, mode: str) -> None:
    searcher = open_searcher(settings, encoders, tokenizer)
    everything = {hit.passage.doc_id for q in QUESTIONS for hit in searcher.search(q, top_k=10, mode=mode)}
    assert {"纪律处分条例", "医疗机构管理办法"} & everything and everything - {"纪律处分条例", "医疗机构管理办法"}
    for scope, inside in (({LAWS}, True), ({DEFAULT_COLLECTION}, False)):
        for question in QUESTIONS:
            hits = searcher.search(question, top_k=10, mode=mode, filters=Filters(collections=frozenset(scope)))
            assert hits
            assert all((searcher.store.documents[h.passage.doc_id].collection == LAWS) == inside for h in hits)


def test_a_scoped_search_ranks_and_scores_as_an_index_of_that_collection_alone(
    settings: Settings, laws_alone: Searcher, encoders, tokenizer
) -> None:
    searcher = open_searcher(settings, encoders, tokenizer)
    scope = Filters(collections=frozenset({LAWS}))
    for question in QUESTIONS:
        # Dense scores are min-max normalised over the candidates: the same only if both saw the same ones.
        scoped = [(h.passage.passage_id, round(h.score, 5)) for h in searcher.search(question, 6, "dense", scope)]
        alone = [(h.passage.passage_id, round(h.score, 5)) for h in laws_alone.search(question, 6, "dense")]
        assert scoped == alone
        # Word statistics are the scope's: idf, unseen words, vocabulary coverage.
        tokens = tokenizer.query_tokens(question)
        assert searcher.idf_of(tokens, scope.collections) == pytest.approx(laws_alone.idf_of(tokens))
        assert searcher.unseen_idf_of(scope.collections) == pytest.approx(laws_alone.unseen_idf)
        assert searcher.coverage(tokens, scope.collections) == pytest.approx(laws_alone.coverage(tokens))
    # 警告 is in the laws only: across everything it is rarer (higher idf) than within them.
    assert searcher.idf_of(["警告"])["警告"] > searcher.idf_of(["警告"], scope.collections)["警告"]


def test_a_scope_naming_every_collection_is_the_unscoped_search(settings: Settings, encoders, tokenizer) -> None:
    searcher = open_searcher(settings, encoders, tokenizer)
    every = Filters(collections=frozenset({LAWS, DEFAULT_COLLECTION}))
    for question in QUESTIONS:
        assert searcher.search(question, top_k=10, filters=every) == searcher.search(question, top_k=10)


def test_an_unknown_collection_in_a_scope_is_an_error(settings: Settings, encoders, tokenizer) -> None:
    searcher = open_searcher(settings, encoders, tokenizer)
    with pytest.raises(UnknownCollections, match="没有这些文档集：法规"):
        searcher.search("党风廉政建设", filters=Filters(collections=frozenset({"法规", LAWS})))


def test_rebuild_keeps_each_users_document_in_its_collection(settings: Settings, encoders, tokenizer) -> None:
    assert collection_file(settings.uploads_dir, "纪律处分条例").read_text(encoding="utf-8") == LAWS
    build_index(source_files(settings.seeds_dir), settings, encoders, tokenizer, with_uploads=True)
    documents = load_current(settings, encoders).documents
    assert documents["纪律处分条例"].collection == LAWS and documents["医疗机构管理办法"].collection == LAWS
    assert sum(d.collection == DEFAULT_COLLECTION for d in documents.values()) == 5
    delete_documents(settings, encoders, ["纪律处分条例"])
    assert not collection_file(settings.uploads_dir, "纪律处分条例").exists()


def test_re_adding_a_document_into_default_drops_its_recorded_collection(
    settings: Settings, encoders, tokenizer, tmp_path: Path
) -> None:
    changed = write(tmp_path / "again", "纪律处分条例.txt", DISCIPLINE + "第四条 本条例自发布之日起施行。\n")
    add_files(settings, encoders, tokenizer, [changed])
    assert load_current(settings, encoders).documents["纪律处分条例"].collection == DEFAULT_COLLECTION
    assert not collection_file(settings.uploads_dir, "纪律处分条例").exists()


def test_seeds_go_to_the_configured_collection(private_settings: Settings, encoders, tokenizer) -> None:
    settings = private_settings.model_copy(update={"seeds_collection": "卫健党建"})
    build_index(source_files(settings.seeds_dir), settings, encoders, tokenizer)
    assert {d.collection for d in load_current(settings, encoders).documents.values()} == {"卫健党建"}
    with pytest.raises(ValueError, match="只能包含"):
        Settings(seeds_collection="a b")


def test_cli_adds_into_a_collection_lists_and_searches_it(
    private_settings: Settings, law_files: list[Path], tmp_path: Path
) -> None:
    added = run_cli(private_settings, "add", "--collection", LAWS, *map(str, law_files))
    assert added.returncode == 0, added.stderr
    assert f"文档集 {LAWS}" in added.stdout
    docs = run_cli(private_settings, "docs", "--collection", LAWS, "--json")
    assert {row["doc_id"] for row in json.loads(docs.stdout)} == {"纪律处分条例", "医疗机构管理办法"}
    listed = run_cli(private_settings, "docs")
    assert f"{LAWS} 2 篇、6 段" in listed.stdout and "default 5 篇" in listed.stdout
    found = run_cli(private_settings, "search", "党风廉政建设", "--collection", LAWS, "--json")
    assert {row["doc_id"] for row in json.loads(found.stdout)["results"]} <= {"纪律处分条例", "医疗机构管理办法"}
    unknown = run_cli(private_settings, "search", "党风廉政建设", "--collection", "法规")
    assert unknown.returncode == 2 and "没有这些文档集" in unknown.stderr
    invalid = run_cli(private_settings, "add", "--collection", "a/b", str(law_files[0]))
    assert invalid.returncode == 2 and "只能包含" in invalid.stderr


def test_an_index_of_the_previous_format_is_refused_naming_the_rebuild(private_settings: Settings, encoders) -> None:
    version_dir = private_settings.index_dir / "versions" / current_version(private_settings.index_dir)
    manifest = json.loads((version_dir / "manifest.json").read_text(encoding="utf-8"))
    manifest["format_version"] = 3  # documents without collections; Milvus entities without the field
    (version_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(IndexUnavailable, match=r"索引格式版本 3 与本程序的版本 4 不一致.*make index"):
        load_current(private_settings, encoders)


def test_a_queued_upload_job_keeps_its_collection_across_a_restart(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs")
    job = store.create(store.receiving_folder(), [{"name": "a.txt", "path": "upload-0"}], {}, LAWS)
    assert JobStore(tmp_path / "jobs").load(job.job_id).collection == LAWS
    assert JobStore(tmp_path / "jobs").load(job.job_id).public()["collection"] == LAWS
