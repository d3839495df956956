import json
import os
import subprocess
import sys
from pathlib import Path

from service.config import PROJECT_ROOT, Settings


def run_cli(*args: str, settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DJQA_INDEX_DIR": str(settings.index_dir),
        "DJQA_CACHE_DIR": str(settings.cache_dir),
        "DJQA_UPLOADS_DIR": str(settings.uploads_dir),
    }
    command = [sys.executable, "-m", "service.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=120)


def test_search_json_is_readable_chinese(seed_settings: Settings) -> None:
    result = run_cli("search", "如何推动党建与医疗业务深度融合", "-k", "3", "--json", settings=seed_settings)
    assert result.returncode == 0, result.stderr
    assert "\\u" not in result.stdout and "融合" in result.stdout
    payload = json.loads(result.stdout)
    assert len(payload["results"]) == 3 and payload["results"][0]["title"]


def test_search_prints_titles_and_sections(seed_settings: Settings) -> None:
    result = run_cli("search", "党风廉政建设", "-k", "2", settings=seed_settings)
    assert result.returncode == 0 and "《" in result.stdout and "›" in result.stdout


def test_missing_index_exits_cleanly_with_the_fix(tmp_path: Path, seed_settings: Settings) -> None:
    settings = seed_settings.model_copy(update={"index_dir": tmp_path / "nothing"})
    result = run_cli("search", "党建", settings=settings)
    assert result.returncode == 3 and "make index" in result.stderr and "Traceback" not in result.stderr


def test_blank_query_and_bad_k_are_usage_errors(seed_settings: Settings) -> None:
    assert run_cli("search", "   ", settings=seed_settings).returncode == 2
    assert run_cli("search", "党建", "-k", "0", settings=seed_settings).returncode == 2


def test_index_command_reports_counts(tmp_path: Path, seed_settings: Settings) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("一、抓党建\n各级党组织要认真落实“三会一课”制度。\n", encoding="utf-8")
    settings = seed_settings.model_copy(update={"index_dir": tmp_path / "index"})
    result = run_cli("index", "--seeds", str(docs), settings=settings)
    assert result.returncode == 0 and "1 篇文档" in result.stdout
    assert run_cli("index", "--seeds", str(tmp_path / "missing"), settings=settings).returncode == 4
