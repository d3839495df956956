"""kill -9 at any moment of adding or removing documents leaves an index that loads, old or new.

A real process is killed: `dangjian-qa add|remove` runs in a subprocess and gets SIGKILL, at the
moments of saving that matter (tests/crash_writer.py stops it there) and after random delays.
"""

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.config import PROJECT_ROOT, Settings
from service.embed import Encoders
from service.engine import load_current
from service.tokenize import WordTokenizer
from service.update import add_files

NEW_DOCS = {
    "fever": "发热门诊党员突击队实行二十四小时轮值，队员佩戴党员徽章上岗，在疫情防控一线亮身份、作表率。\n",
    "night": "夜班护士党小组建立“暖心驿站”，为夜间就诊的老年患者提供代挂号、代取药和陪同检查服务。\n",
}


@pytest.fixture
def settings(tmp_path: Path, seed_settings: Settings) -> Settings:
    shutil.copytree(seed_settings.index_dir, tmp_path / "index")
    return seed_settings.model_copy(update={"index_dir": tmp_path / "index", "uploads_dir": tmp_path / "uploads"})


@pytest.fixture
def new_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "docs"
    folder.mkdir()
    for doc_id, text in NEW_DOCS.items():
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    return sorted(folder.iterdir())


def start(settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    """`python -m ARGS` against the settings' index; its stderr goes to a file beside the index."""
    env = {
        **os.environ,
        "DJQA_INDEX_DIR": str(settings.index_dir),
        "DJQA_CACHE_DIR": str(settings.cache_dir),
        "DJQA_UPLOADS_DIR": str(settings.uploads_dir),
    }
    with (settings.index_dir.parent / "writer.log").open("ab") as log:
        command = [sys.executable, "-m", *args]
        return subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=log)


def kill_at_marker(process: subprocess.Popen[bytes], marker: Path) -> None:
    deadline = time.monotonic() + 90
    while not marker.exists():
        if process.poll() is not None:
            log = marker.parent / "writer.log"
            pytest.fail(f"the writer ended before the moment to kill it: {log.read_text(errors='replace')[-2000:]}")
        assert time.monotonic() < deadline, "the writer never reached the moment to be killed at"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


def doc_ids(settings: Settings, encoders: Encoders) -> set[str]:
    index = load_current(settings, encoders)
    assert all(len(vectors.matrix) == int(index.row_starts[-1]) for vectors in index.vectors.values())
    assert index.bm25.scores["num_docs"] == len(index.passages) == index.manifest["passage_count"]
    return set(index.documents)


def staging_folders(settings: Settings) -> list[Path]:
    return list((settings.index_dir / "versions").glob(".staging-*"))


@pytest.mark.parametrize(
    ("moment", "lands_on_new"), [("staged", False), ("before-current", False), ("after-current", True)]
)
def test_add_killed_while_saving_leaves_the_old_or_the_new_index(
    settings: Settings,
    new_files: list[Path],
    tmp_path: Path,
    encoders: Encoders,
    tokenizer: WordTokenizer,
    moment: str,
    lands_on_new: bool,
) -> None:
    old = doc_ids(settings, encoders)
    marker = tmp_path / "stopped"
    writer = start(settings, "tests.crash_writer", moment, str(marker), "add", *map(str, new_files))
    kill_at_marker(writer, marker)
    assert doc_ids(settings, encoders) == (old | NEW_DOCS.keys() if lands_on_new else old)
    assert bool(staging_folders(settings)) == (moment == "staged")

    # The next writer finds the debris, removes it and completes its own change.
    add_files(settings, encoders, tokenizer, new_files)
    assert doc_ids(settings, encoders) == old | NEW_DOCS.keys()
    assert staging_folders(settings) == []


def test_remove_killed_before_current_is_replaced_leaves_the_document(
    settings: Settings, tmp_path: Path, encoders: Encoders
) -> None:
    old = doc_ids(settings, encoders)
    victim = sorted(old)[0]
    marker = tmp_path / "stopped"
    kill_at_marker(start(settings, "tests.crash_writer", "before-current", str(marker), "remove", victim), marker)
    assert doc_ids(settings, encoders) == old


def test_add_killed_after_random_delays_leaves_the_old_or_the_new_index(
    seed_settings: Settings, new_files: list[Path], tmp_path: Path, encoders: Encoders
) -> None:
    rng = random.Random(5)
    for attempt, delay in enumerate(sorted(rng.uniform(0.5, 5.0) for _ in range(3))):
        settings = seed_settings.model_copy(
            update={"index_dir": tmp_path / f"index-{attempt}", "uploads_dir": tmp_path / f"uploads-{attempt}"}
        )
        shutil.copytree(seed_settings.index_dir, settings.index_dir)
        old = doc_ids(settings, encoders)
        writer = start(settings, "service.cli", "add", *map(str, new_files))
        time.sleep(delay)
        finished = writer.poll() is not None
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        after = doc_ids(settings, encoders)
        assert after == old | NEW_DOCS.keys() if finished else after in (old, old | NEW_DOCS.keys()), delay
