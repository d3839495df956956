"""Adding and removing users' documents: searchable at once, gone at once, nothing encoded twice."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from embeddings.encoder import VectorCache
from service.config import Settings
from service.embed import Encoders, unit_texts
from service.engine import load_current, open_searcher
from service.index import IndexUnavailable, SearchIndex, current_version
from service.tokenize import WordTokenizer
from service.update import (
    ADDED,
    DUPLICATE,
    FAILED,
    REPLACED,
    TOO_LARGE,
    UNSUPPORTED,
    UnknownDocuments,
    WouldEmptyIndex,
    add_files,
    delete_documents,
)
from tests.conftest import run_cli, write
from tests.make_documents import make_docx

FEVER_CLINIC = (
    "发热门诊党员突击队实行二十四小时轮值，队员佩戴党员徽章上岗，在疫情防控一线亮身份、作表率。\n"
    "突击队每周召开一次复盘会，把群众反映的排队时间长、检查结果慢等问题逐条列出整改清单。\n"
)
NIGHT_SHIFT = "夜班护士党小组建立“暖心驿站”，为夜间就诊的老年患者提供代挂号、代取药和陪同检查服务。\n"


@pytest.fixture
def settings(private_settings: Settings) -> Settings:
    return private_settings


def doc_ids_of_hits(
    settings: Settings, encoders: Encoders, tokenizer: WordTokenizer, query: str, mode: str
) -> list[str]:
    searcher = open_searcher(settings, encoders, tokenizer)
    return [hit.passage.doc_id for hit in searcher.search(query, top_k=3, mode=mode)]


def test_added_documents_are_found_by_search(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    fever = write(tmp_path / "docs", "fever.txt", FEVER_CLINIC)
    plan = make_docx(
        tmp_path / "docs" / "支部工作计划.docx",
        "党支部年度工作计划",
        [("Heading 1", "重点任务"), [["任务", "责任人"], ["组建发热门诊党员突击队", "门诊党支部书记"]]],
    )
    report = add_files(settings, encoders, tokenizer, [fever, plan])
    assert [(o.doc_id, o.status) for o in report.outcomes] == [("fever", ADDED), ("支部工作计划", ADDED)]
    for mode in ("dense", "lexical", "hybrid"):
        assert doc_ids_of_hits(settings, encoders, tokenizer, "发热门诊党员突击队轮值", mode)[0] == "fever"
    # The table's words are indexed: only the docx names who is responsible. (Not 「突击队」: BM25 also
    # reads each passage's document title, and fever's title, its first sentence, repeats that word.)
    assert doc_ids_of_hits(settings, encoders, tokenizer, "责任人 门诊党支部书记", "lexical")[0] == "支部工作计划"
    manifest = load_current(settings, encoders).manifest
    assert manifest["document_count"] == 7 and "updated_at" in manifest


def test_removed_document_leaves_no_vectors_tokens_or_passages(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    before = load_current(settings, encoders)
    add_files(settings, encoders, tokenizer, [write(tmp_path / "docs", "fever.txt", FEVER_CLINIC)])
    delete_documents(settings, encoders, ["fever"])
    after = load_current(settings, encoders)
    assert "fever" not in after.documents and all(p.doc_id != "fever" for p in after.passages)
    for model, vectors in after.vectors.items():
        assert len(vectors.matrix) == len(before.vectors[model].matrix) == int(after.row_starts[-1])
    assert after.bm25.scores["num_docs"] == len(after.passages) == len(before.passages)
    assert after.manifest["corpus_fingerprint"] == before.manifest["corpus_fingerprint"]
    for mode in ("dense", "lexical"):
        assert "fever" not in doc_ids_of_hits(settings, encoders, tokenizer, "发热门诊党员突击队轮值", mode)


def test_same_content_is_skipped_as_duplicate_under_any_name(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    add_files(settings, encoders, tokenizer, [write(tmp_path / "a", "fever.txt", FEVER_CLINIC)])
    version = current_version(settings.index_dir)
    again = [write(tmp_path / "b", "fever.txt", FEVER_CLINIC), write(tmp_path / "b", "copy.txt", FEVER_CLINIC)]
    report = add_files(settings, encoders, tokenizer, again)
    assert [(o.status, o.doc_id) for o in report.outcomes] == [(DUPLICATE, "fever"), (DUPLICATE, "fever")]
    assert not report.changed and report.version is None and not report.documents
    assert current_version(settings.index_dir) == version  # nothing written


def test_changed_file_with_the_same_name_replaces_the_old_version(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    add_files(settings, encoders, tokenizer, [write(tmp_path / "v1", "notes.txt", FEVER_CLINIC)])
    report = add_files(settings, encoders, tokenizer, [write(tmp_path / "v2", "notes.txt", NIGHT_SHIFT)])
    assert [(o.status, o.doc_id) for o in report.outcomes] == [(REPLACED, "notes")]
    index = load_current(settings, encoders)
    assert [p.text for p in index.passages if p.doc_id == "notes"] == [NIGHT_SHIFT.strip()]
    assert len(index.documents) == 6
    assert doc_ids_of_hits(settings, encoders, tokenizer, "暖心驿站 代挂号", "lexical")[0] == "notes"
    assert "notes" not in doc_ids_of_hits(settings, encoders, tokenizer, "发热门诊党员突击队", "lexical")


def test_only_new_passages_are_encoded(
    settings: Settings,
    tmp_path: Path,
    encoders: Encoders,
    tokenizer: WordTokenizer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Empty vector caches: re-encoding any seed passage would reach a model and be counted.
    embedded: dict[str, list[str]] = {name: [] for name in encoders}
    for name, encoder in encoders.items():
        cache = VectorCache(tmp_path / f"vectors-{name}.sqlite", encoder.weights_sha256)
        monkeypatch.setattr(encoder, "cache", cache)

        def counting_embed_batch(texts: list[str], real=encoder.embed_batch, seen=embedded[name]):
            seen.extend(texts)
            return real(texts)

        monkeypatch.setattr(encoder, "embed_batch", counting_embed_batch)
    add_files(settings, encoders, tokenizer, [write(tmp_path / "docs", "fever.txt", FEVER_CLINIC)])
    new_passages = [p for p in load_current(settings, encoders).passages if p.doc_id == "fever"]
    expected = sorted(
        text for p in new_passages for text in unit_texts(p, settings.embed_context, settings.clause_units)
    )
    assert all(sorted(texts) == expected for texts in embedded.values()) and len(new_passages) == 2


def unit_ids_of(index: SearchIndex, doc_id: str) -> set[int]:
    rows = np.array(index.passages.rows_of(doc_id), dtype=np.int64)
    return set(index.unit_ids[index.positions_of_rows(rows)[0]].tolist())


def test_vector_ids_are_never_reused(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    add_files(settings, encoders, tokenizer, [write(tmp_path / "docs", "fever.txt", FEVER_CLINIC)])
    fever_ids = unit_ids_of(load_current(settings, encoders), "fever")
    delete_documents(settings, encoders, ["fever"])
    add_files(settings, encoders, tokenizer, [write(tmp_path / "docs", "night.txt", NIGHT_SHIFT)])
    second = load_current(settings, encoders)
    night_ids = unit_ids_of(second, "night")
    assert min(night_ids) > max(fever_ids)
    assert second.manifest["next_unit_id"] == max(night_ids) + 1


def test_unknown_doc_id_is_an_error_and_changes_nothing(settings: Settings, encoders: Encoders) -> None:
    version = current_version(settings.index_dir)
    some_seed = next(iter(load_current(settings, encoders).documents))
    with pytest.raises(UnknownDocuments, match="no-such-doc"):
        delete_documents(settings, encoders, [some_seed, "no-such-doc"])
    with pytest.raises(WouldEmptyIndex):
        delete_documents(settings, encoders, list(load_current(settings, encoders).documents))
    assert current_version(settings.index_dir) == version


def test_uploaded_name_gives_the_doc_id_and_is_never_a_path(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    upload = write(tmp_path, "upload-3f9a2c", FEVER_CLINIC)  # the API's temp file
    report = add_files(settings, encoders, tokenizer, [("..\\材料/../2024年 支部总结.txt", upload)])
    assert [(o.name, o.doc_id) for o in report.outcomes] == [("2024年 支部总结.txt", "2024年_支部总结")]
    assert report.documents["2024年_支部总结"].source == "2024年 支部总结.txt"
    assert load_current(settings, encoders).documents["2024年_支部总结"].source == "2024年 支部总结.txt"


def test_file_limits_are_reported_per_file_with_their_kind(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 200})
    files = [
        write(tmp_path, "slides.pptx", "幻灯片"),
        write(tmp_path, "long.txt", FEVER_CLINIC * 3),
        write(tmp_path, "empty.txt", ""),
        write(tmp_path, "blank.md", "\n \n"),
    ]
    report = add_files(small, encoders, tokenizer, files)
    assert [(o.name, o.status) for o in report.outcomes] == [
        ("slides.pptx", UNSUPPORTED),
        ("long.txt", TOO_LARGE),
        ("empty.txt", FAILED),
        ("blank.md", FAILED),
    ]
    assert ".docx" in report.outcomes[0].reason and "MB" in report.outcomes[1].reason
    assert "空" in report.outcomes[2].reason and "正文" in report.outcomes[3].reason


def test_missing_index_is_unavailable_not_created(
    tmp_path: Path, settings: Settings, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    nowhere = settings.model_copy(update={"index_dir": tmp_path / "nowhere"})
    with pytest.raises(IndexUnavailable, match="make index"):
        add_files(nowhere, encoders, tokenizer, [write(tmp_path, "fever.txt", FEVER_CLINIC)])
    assert not (tmp_path / "nowhere").exists()


def test_concurrent_writers_do_not_lose_each_others_changes(settings: Settings, encoders: Encoders) -> None:
    seeds = sorted(load_current(settings, encoders).documents)[:2]
    writers = [threading.Thread(target=delete_documents, args=(settings, encoders, [doc_id])) for doc_id in seeds]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert not set(seeds) & load_current(settings, encoders).documents.keys()


def test_stale_staging_folder_is_removed_by_the_next_writer(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    stale = settings.index_dir / "versions" / ".staging-20240101T000000-deadbeef"
    stale.mkdir()
    (stale / "manifest.json").write_text("{", encoding="utf-8")
    add_files(settings, encoders, tokenizer, [write(tmp_path / "docs", "fever.txt", FEVER_CLINIC)])
    assert not stale.exists()
    assert "fever" in load_current(settings, encoders).documents


def test_cli_add_reports_each_file_and_docs_lists_them(settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    write(folder, "fever.txt", FEVER_CLINIC)
    write(folder / "sub", "night.md", "# 暖心服务\n" + NIGHT_SHIFT)
    (folder / "sub" / "broken.docx").write_bytes(b"PK\x03\x04 broken")
    write(folder, "ignored.xlsx", "not picked up from folders")
    result = run_cli(settings, "add", str(folder))
    assert result.returncode == 0, result.stderr
    assert "新增：fever.txt → fever" in result.stdout and "新增：night.md → night" in result.stdout
    assert "broken.docx：文件已损坏" in result.stderr and "ignored" not in result.stderr + result.stdout
    assert "新增 2 篇" in result.stdout and "失败 1 个" in result.stdout

    again = run_cli(settings, "add", str(folder / "fever.txt"))
    assert again.returncode == 0 and "跳过重复 1 篇" in again.stdout

    listed = run_cli(settings, "docs", "--json")
    rows = {row["doc_id"]: row for row in json.loads(listed.stdout)}
    assert rows["night"]["passages"] == 1 and rows["night"]["title"] and rows["fever"]["added_at"]
    assert len(rows) == 7


def test_cli_add_of_only_bad_files_exits_4_and_remove_of_unknown_id_exits_4(settings: Settings, tmp_path: Path) -> None:
    version = current_version(settings.index_dir)
    failed = run_cli(settings, "add", str(write(tmp_path, "slides.pptx", "x")), str(tmp_path / "missing.txt"))
    assert failed.returncode == 4 and "不支持的文件类型 .pptx" in failed.stderr and "文件不存在" in failed.stderr
    unknown = run_cli(settings, "remove", "no-such-doc")
    assert unknown.returncode == 4 and "no-such-doc" in unknown.stderr and "Traceback" not in unknown.stderr
    assert current_version(settings.index_dir) == version


def test_cli_add_without_an_index_names_the_fix(tmp_path: Path, settings: Settings) -> None:
    nowhere = settings.model_copy(update={"index_dir": tmp_path / "nowhere"})
    result = run_cli(nowhere, "add", str(write(tmp_path, "fever.txt", FEVER_CLINIC)))
    assert result.returncode == 3 and "make index" in result.stderr


def test_add_to_an_index_built_with_other_settings_is_refused(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    before = current_version(settings.index_dir)
    changed = settings.model_copy(update={"embed_context": not settings.embed_context})
    with pytest.raises(IndexUnavailable, match="make index"):
        add_files(changed, encoders, tokenizer, [write(tmp_path / "docs", "fever.txt", FEVER_CLINIC)])
    assert current_version(settings.index_dir) == before
