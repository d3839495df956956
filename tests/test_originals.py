"""Users' originals are kept beside the index, so a rebuild (`dangjian-qa index`) keeps their documents."""

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from service.config import PROJECT_ROOT, Settings
from service.embed import Encoders
from service.engine import build_index, load_current, source_files
from service.index import current_version, writer_lock
from service.ingest import MAX_DOC_ID_BYTES, doc_id_for
from service.originals import INCOMING_PREFIX, original_files, original_path
from service.tokenize import WordTokenizer
from service.update import ADDED, DUPLICATE, REPLACED, add_files, delete_documents
from tests.conftest import run_cli, write
from tests.make_documents import make_docx

FEVER_CLINIC = "发热门诊党员突击队实行二十四小时轮值，队员佩戴党员徽章上岗，在疫情防控一线亮身份、作表率。\n"
NIGHT_SHIFT = "夜班护士党小组建立“暖心驿站”，为夜间就诊的老年患者提供代挂号、代取药和陪同检查服务。\n"


@pytest.fixture
def settings(private_settings: Settings) -> Settings:
    return private_settings


def test_added_file_is_kept_under_its_doc_id_after_the_index_is_saved(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    upload = write(tmp_path, "upload-3f9a2c", FEVER_CLINIC)  # an upload's temp file, under the user's name
    report = add_files(settings, encoders, tokenizer, [("../../材料/2024年 支部总结.TXT", upload)])
    assert [o.status for o in report.outcomes] == [ADDED]
    kept = settings.uploads_dir / "2024年_支部总结.txt"
    assert original_files(settings.uploads_dir) == [kept]
    assert kept.read_bytes() == upload.read_bytes()
    assert not list(settings.uploads_dir.glob(f"{INCOMING_PREFIX}*"))


def test_replacing_with_another_format_leaves_one_original(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    add_files(settings, encoders, tokenizer, [write(tmp_path / "v1", "plan.txt", FEVER_CLINIC)])
    (tmp_path / "v2").mkdir()
    plan = make_docx(tmp_path / "v2" / "plan.docx", "支部工作计划", [("Normal", NIGHT_SHIFT.strip())])
    report = add_files(settings, encoders, tokenizer, [plan])
    assert [o.status for o in report.outcomes] == [REPLACED]
    assert original_files(settings.uploads_dir) == [settings.uploads_dir / "plan.docx"]


def test_removed_document_loses_its_original(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    add_files(settings, encoders, tokenizer, [write(tmp_path, "fever.txt", FEVER_CLINIC)])
    delete_documents(settings, encoders, ["fever"])
    assert original_files(settings.uploads_dir) == []


def test_adding_the_same_file_again_restores_a_missing_original(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    fever = write(tmp_path, "fever.txt", FEVER_CLINIC)
    add_files(settings, encoders, tokenizer, [fever])
    (settings.uploads_dir / "fever.txt").unlink()  # as if killed between saving the index and keeping the file
    (settings.uploads_dir / f"{INCOMING_PREFIX}abc").write_bytes(b"half")
    version = current_version(settings.index_dir)
    report = add_files(settings, encoders, tokenizer, [fever])
    assert [o.status for o in report.outcomes] == [DUPLICATE] and current_version(settings.index_dir) == version
    assert original_files(settings.uploads_dir) == [settings.uploads_dir / "fever.txt"]
    assert not (settings.uploads_dir / f"{INCOMING_PREFIX}abc").exists()


def test_a_restored_original_survives_the_next_writer(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    """A change's pending removals are carried out once, never replayed over a file written since."""
    add_files(settings, encoders, tokenizer, [write(tmp_path, "fever.txt", FEVER_CLINIC)])
    replacement = write(tmp_path, "fever.md", FEVER_CLINIC + NIGHT_SHIFT)  # replaces it: fever.txt is removed
    add_files(settings, encoders, tokenizer, [replacement])
    same_text = write(tmp_path / "again", "fever.txt", FEVER_CLINIC + NIGHT_SHIFT + "\n\n")
    report = add_files(settings, encoders, tokenizer, [same_text])  # the same document: its original is kept
    assert [o.status for o in report.outcomes] == [DUPLICATE]
    assert original_files(settings.uploads_dir) == [settings.uploads_dir / "fever.txt"]
    add_files(settings, encoders, tokenizer, [write(tmp_path, "other.txt", NIGHT_SHIFT + "另一篇。\n")])
    assert (settings.uploads_dir / "fever.txt").is_file(), "the next writer must not replay the old removal"


def test_an_original_name_is_never_a_path() -> None:
    for doc_id in ("../evil", "a/b", "", "..", "a.b"):
        with pytest.raises(ValueError):
            original_path(Path("/uploads"), doc_id, ".txt")
    with pytest.raises(ValueError):
        original_path(Path("/uploads"), "fine", ".exe")


def test_index_command_rebuilds_seeds_and_users_documents(settings: Settings, tmp_path: Path) -> None:
    added = run_cli(settings, "add", str(write(tmp_path / "mine", "fever.txt", FEVER_CLINIC)))
    assert added.returncode == 0 and (settings.uploads_dir / "fever.txt").is_file(), added.stderr
    rebuilt = run_cli(settings, "index")
    assert rebuilt.returncode == 0 and "已索引 6 篇文档" in rebuilt.stdout, rebuilt.stderr
    removed = run_cli(settings, "remove", "fever")
    assert removed.returncode == 0 and not (settings.uploads_dir / "fever.txt").exists()
    assert "已索引 5 篇文档" in run_cli(settings, "index").stdout


def test_rebuild_keeps_users_documents_and_their_replacements(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    seed = sorted(source_files(settings.seeds_dir))[0]
    add_files(settings, encoders, tokenizer, [write(tmp_path / "mine", "fever.txt", FEVER_CLINIC)])
    add_files(settings, encoders, tokenizer, [write(tmp_path / "mine", seed.name, NIGHT_SHIFT)])
    build_index(source_files(settings.seeds_dir), settings, encoders, tokenizer, with_uploads=True)
    index = load_current(settings, encoders)
    assert len(index.documents) == 6 and "fever" in index.documents
    assert [p.text for p in index.passages if p.doc_id == seed.stem] == [NIGHT_SHIFT.strip()]


def test_source_files_take_every_supported_format(tmp_path: Path) -> None:
    for name in ("a.txt", "b.md", "c.DOCX", "sub/d.pdf", "e.pptx", "f.doc"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in source_files(tmp_path)] == ["a.txt", "b.md", "c.DOCX", "d.pdf"]


def test_a_build_waits_for_a_writer_holding_the_lock(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    finished: list[float] = []
    paths = [write(tmp_path / "docs", "fever.txt", FEVER_CLINIC)]
    build = threading.Thread(
        target=lambda: finished.append(time.monotonic()) if build_index(paths, settings, encoders, tokenizer) else None
    )
    with writer_lock(settings.index_dir):
        build.start()
        time.sleep(1.0)
        released = time.monotonic()
        assert not finished, "the build ran while another writer held the lock"
    build.join(timeout=60)
    assert finished and finished[0] >= released
    assert list(load_current(settings, encoders).documents) == ["fever"]


LONG_NAME = "𠀀" * 80 + ".txt"  # 80 four-byte characters: a 320-byte stem, past the 255-byte limit of a file name


def test_doc_id_of_a_long_name_is_bounded_in_bytes_and_stable() -> None:
    doc_id = doc_id_for(Path(LONG_NAME))
    assert len(doc_id.encode("utf-8")) <= MAX_DOC_ID_BYTES and re.fullmatch("𠀀{57}_[0-9a-f]{8}", doc_id), doc_id
    assert doc_id_for(Path(f"{doc_id}.docx")) == doc_id, "a kept original maps back to its id"
    assert doc_id_for(Path("党" * 80 + ".txt")) == "党" * 80, "ids of 80 BMP characters are unchanged"
    assert doc_id_for(Path("党" * 81 + ".txt")) != doc_id_for(Path("党" * 80 + "建.txt")), "cut, then told apart"


def test_names_the_id_cannot_keep_get_a_stable_hash_and_never_collide() -> None:
    emoji = [doc_id_for(Path(face * 75 + ".txt")) for face in ("😀", "😺")]
    assert emoji[0] != emoji[1] and all(re.fullmatch("document_[0-9a-f]{8}", doc_id) for doc_id in emoji)
    brackets = [doc_id_for(Path(name)) for name in ("院感制度（一）.txt", "院感制度【一】.txt", "院感制度_一.txt")]
    assert len(set(brackets)) == 3 and brackets[2] == "院感制度_一"
    assert doc_id_for(Path("😀" * 75 + ".docx")) == emoji[0], "stable: the same name, the same id"
    assert doc_id_for(Path("2024年 支部总结.txt")) == "2024年_支部总结", "spaces still read as underscores"
    assert all(doc_id_for(Path(f"{doc_id}.pdf")) == doc_id for doc_id in emoji + brackets)


def test_file_with_a_long_name_is_added_kept_and_removed(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    upload = write(tmp_path, "upload-0", FEVER_CLINIC)
    report = add_files(settings, encoders, tokenizer, [(LONG_NAME, upload)])
    assert [o.status for o in report.outcomes] == [ADDED]
    doc_id = report.outcomes[0].doc_id
    assert original_files(settings.uploads_dir) == [settings.uploads_dir / f"{doc_id}.txt"]
    delete_documents(settings, encoders, [doc_id])
    assert original_files(settings.uploads_dir) == []


def test_an_original_that_cannot_be_stored_leaves_the_index_untouched(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    settings.uploads_dir.parent.mkdir(parents=True, exist_ok=True)
    settings.uploads_dir.write_text("a file where the uploads folder should be")  # every write below it fails
    version = current_version(settings.index_dir)
    with pytest.raises(OSError):
        add_files(settings, encoders, tokenizer, [write(tmp_path, "fever.txt", FEVER_CLINIC)])
    assert current_version(settings.index_dir) == version
    assert "fever" not in load_current(settings, encoders).documents


def test_writer_killed_after_the_switch_leaves_the_originals_to_the_next_writer(
    settings: Settings, tmp_path: Path, encoders: Encoders, tokenizer: WordTokenizer
) -> None:
    """kill -9 after CURRENT names the new version, before its originals are in place: a rebuild keeps them."""
    fever = write(tmp_path / "mine", "fever.txt", FEVER_CLINIC)
    marker = tmp_path / "stopped"
    env = {**os.environ, "DJQA_INDEX_DIR": str(settings.index_dir), "DJQA_UPLOADS_DIR": str(settings.uploads_dir)}
    command = [sys.executable, "-m", "tests.crash_writer", "after-current", str(marker), "add", str(fever)]
    writer = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while not marker.exists():
        assert writer.poll() is None and time.monotonic() < deadline, "the writer never reached the switch"
        time.sleep(0.02)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert "fever" in load_current(settings, encoders).documents and original_files(settings.uploads_dir) == []
    build_index(source_files(settings.seeds_dir), settings, encoders, tokenizer, with_uploads=True)
    assert original_files(settings.uploads_dir) == [settings.uploads_dir / "fever.txt"]
    assert "fever" in load_current(settings, encoders).documents
    assert not list(settings.uploads_dir.glob(f"{INCOMING_PREFIX}*"))
