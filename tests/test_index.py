import json
import re
from pathlib import Path

import pytest

from service.config import Settings
from service.embed import Encoders
from service.engine import BuildReport, build_index, load_current, open_searcher
from service.index import FULL_HASH_BYTES, IndexUnavailable, current_version, file_digest, verify_files
from service.tokenize import WordTokenizer
from tests.conftest import make_settings, write

DOC_A = "在全县党建工作会议上的讲话\n一、抓好党建\n各级党组织要认真落实“三会一课”制度，严肃党内政治生活。\n"
DOC_B = "医院工作总结\n一、医德医风\n坚持开展医德医风教育，严禁收受红包回扣，树立行业新风。\n"


@pytest.fixture
def small_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "index")


def test_index_round_trip_keeps_passages_and_manifest(
    small_settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    paths = [write(tmp_path / "docs", "a.txt", DOC_A), write(tmp_path / "docs", "b.txt", DOC_B)]
    report = build_index(paths, small_settings, encoders, tokenizer)
    index = load_current(small_settings, encoders)
    assert [p.text for p in index.passages] == [p.text for p in report.corpus.passages]
    assert index.manifest["passage_count"] == 2 and index.manifest["document_count"] == 2
    assert [m["weights_sha256"] for m in index.manifest["models"]] == [e.weights_sha256 for e in encoders.values()]
    assert [m["dimension"] for m in index.manifest["models"]] == [e.dimension for e in encoders.values()]
    assert {"format_version", "models", "corpus_fingerprint", "built_at"} <= index.manifest.keys()
    assert index.documents["a"].title == "在全县党建工作会议上的讲话"


def test_rebuild_replaces_the_version_atomically(
    small_settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    docs = tmp_path / "docs"
    build_index([write(docs, "a.txt", DOC_A)], small_settings, encoders, tokenizer)
    first = current_version(small_settings.index_dir)
    build_index([write(docs, "a.txt", DOC_A), write(docs, "b.txt", DOC_B)], small_settings, encoders, tokenizer)
    second = current_version(small_settings.index_dir)
    assert first != second
    assert load_current(small_settings, encoders).manifest["document_count"] == 2
    leftovers = [p.name for p in (small_settings.index_dir / "versions").iterdir()]
    assert sorted(leftovers) == sorted([first, second])  # the previous version stays for live readers


def test_interrupted_build_leaves_the_old_index_live(
    small_settings: Settings,
    tmp_path: Path,
    encoders: Encoders,
    tokenizer: WordTokenizer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build_index([write(tmp_path / "docs", "a.txt", DOC_A)], small_settings, encoders, tokenizer)
    before = current_version(small_settings.index_dir)

    def crash(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("service.index.write_jsonl", crash)
    with pytest.raises(OSError):
        build_index([write(tmp_path / "docs", "b.txt", DOC_B)], small_settings, encoders, tokenizer)
    assert current_version(small_settings.index_dir) == before
    assert load_current(small_settings, encoders).manifest["document_count"] == 1
    assert not list((small_settings.index_dir / "versions").glob(".staging-*")), "the half-written version is removed"


def test_missing_index_names_the_fix(small_settings: Settings, encoders: Encoders) -> None:
    with pytest.raises(IndexUnavailable, match="make index"):
        load_current(small_settings, encoders)


def test_corrupt_vectors_file_is_reported_not_raised(
    small_settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    report = build_index([write(tmp_path / "docs", "a.txt", DOC_A)], small_settings, encoders, tokenizer)
    (version_dir(small_settings, report) / "vectors-0.f16").write_bytes(b"not vectors")
    with pytest.raises(IndexUnavailable, match=r"索引已损坏.*make index"):
        load_current(small_settings, encoders)


def test_truncated_passage_store_is_reported(
    small_settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    report = build_index([write(tmp_path / "docs", "a.txt", DOC_A)], small_settings, encoders, tokenizer)
    (version_dir(small_settings, report) / "passages.sqlite").write_bytes(b"SQLite format 3\0 truncated")
    with pytest.raises(IndexUnavailable, match="索引已损坏"):
        load_current(small_settings, encoders)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("weights_sha256", "0" * 64, "当前配置的模型"),
        ("dimension", 768, "当前配置的模型"),
        ("format_version", 99, "格式版本"),
    ],
)
def test_mismatched_index_is_refused_with_the_fix(
    small_settings: Settings,
    tmp_path: Path,
    encoders: Encoders,
    tokenizer: WordTokenizer,
    field: str,
    value: object,
    message: str,
) -> None:
    report = build_index([write(tmp_path / "docs", "a.txt", DOC_A)], small_settings, encoders, tokenizer)
    manifest_path = version_dir(small_settings, report) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if field == "format_version":
        manifest[field] = value
    else:
        manifest["models"][0][field] = value
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IndexUnavailable, match=f"{message}.*make index"):
        open_searcher(small_settings, encoders, tokenizer)


@pytest.mark.parametrize("change", ["embed_context", "clause_units", "dictionary"])
def test_index_built_with_other_settings_is_refused_with_the_fix(
    small_settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer, change: str
) -> None:
    build_index([write(tmp_path / "docs", "a.txt", DOC_A)], small_settings, encoders, tokenizer)
    if change in ("embed_context", "clause_units"):
        changed = small_settings.model_copy(update={change: not getattr(small_settings, change)})
    else:
        terms = write(tmp_path, "terms.txt", small_settings.user_dict.read_text(encoding="utf-8") + "新词条\n")
        changed = small_settings.model_copy(update={"user_dict": terms})
    with pytest.raises(IndexUnavailable, match=r"设置.*make index"):
        load_current(changed, encoders)
    assert load_current(small_settings, encoders).manifest["document_count"] == 1


def test_bytes_overwritten_inside_the_vectors_are_refused(
    small_settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    report = build_index([write(tmp_path / "docs", "a.txt", DOC_A)], small_settings, encoders, tokenizer)
    vectors = version_dir(small_settings, report) / "vectors-0.f16"
    data = bytearray(vectors.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = b"\xff" * 8  # a NaN inside a vector: FAISS would load it and serve NaN scores
    vectors.write_bytes(bytes(data))
    with pytest.raises(IndexUnavailable, match=r"vectors-0\.f16 校验失败.*make index"):
        load_current(small_settings, encoders)


@pytest.mark.parametrize("name", ["documents.jsonl", "passages.sqlite"])
def test_emptied_store_file_is_refused(
    small_settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer, name: str
) -> None:
    report = build_index([write(tmp_path / "docs", "a.txt", DOC_A)], small_settings, encoders, tokenizer)
    (version_dir(small_settings, report) / name).write_bytes(b"")
    with pytest.raises(IndexUnavailable, match=re.escape(f"{name} 校验失败")):
        load_current(small_settings, encoders)


def test_manifest_lists_every_file_with_size_and_checksum(
    small_settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    report = build_index([write(tmp_path / "docs", "a.txt", DOC_A)], small_settings, encoders, tokenizer)
    files = json.loads((version_dir(small_settings, report) / "manifest.json").read_text())["files"]
    on_disk = {
        p.relative_to(version_dir(small_settings, report)).as_posix()
        for p in version_dir(small_settings, report).rglob("*")
        if p.is_file()
    }
    assert set(files) == on_disk - {"manifest.json"}
    assert {"vectors-0.f16", "passages.sqlite", "documents.jsonl"} <= set(files)
    assert all(entry["bytes"] > 0 and len(entry["sha256"]) == 64 for entry in files.values())


def test_large_files_are_checked_by_sampled_blocks(tmp_path: Path) -> None:
    """Files past FULL_HASH_BYTES: 64 blocks of 64 KB; a damaged block or a changed size is seen."""
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (FULL_HASH_BYTES // 256 + 4096))
    size = big.stat().st_size
    manifest = {"files": {"big.bin": {"bytes": size, "sha256": file_digest(big, size)}}}
    assert manifest["files"]["big.bin"]["sha256"].startswith("sampled:")
    verify_files(tmp_path, manifest)
    with big.open("r+b") as handle:  # zero the last block, where a torn write would show
        handle.seek(size - 1000)
        handle.write(b"\0" * 1000)
    with pytest.raises(IndexUnavailable, match=r"big\.bin 校验失败"):
        verify_files(tmp_path, manifest)


def version_dir(settings: Settings, report: BuildReport) -> Path:
    return settings.index_dir / "versions" / report.version


def test_a_version_still_read_stays_on_disk_until_its_reader_closes_it(
    small_settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    docs = tmp_path / "docs"
    paths = [write(docs, "a.txt", DOC_A)]
    build_index(paths, small_settings, encoders, tokenizer)
    reader = load_current(small_settings, encoders)  # a server's snapshot, two changes behind below
    first = small_settings.index_dir / "versions" / reader.version
    for text in ("医德医风建设要常抓不懈。", "廉洁行医，拒收红包。"):
        paths.append(write(docs, f"{len(paths)}.txt", DOC_B + text + "\n"))
        build_index(paths, small_settings, encoders, tokenizer)
    assert first.is_dir(), "pruned while a reader still served it"
    assert "三会一课" in reader.passages[0].text, "and its passage table still reads"
    reader.close()
    build_index(paths[:2], small_settings, encoders, tokenizer)
    assert not first.exists(), "removed by the next change once its reader let go"
