import json
from pathlib import Path

import pytest

from service.config import Settings
from tests.conftest import run_cli


def test_search_json_is_readable_chinese(seed_settings: Settings) -> None:
    result = run_cli(seed_settings, "search", "如何推动党建与医疗业务深度融合", "-k", "3", "--json")
    assert result.returncode == 0, result.stderr
    assert "\\u" not in result.stdout and "融合" in result.stdout
    payload = json.loads(result.stdout)
    assert len(payload["results"]) == 3 and payload["results"][0]["title"]


def test_search_prints_titles_and_sections(seed_settings: Settings) -> None:
    result = run_cli(seed_settings, "search", "党风廉政建设", "-k", "2")
    assert result.returncode == 0 and "《" in result.stdout and "›" in result.stdout


def test_missing_index_exits_cleanly_with_the_fix(tmp_path: Path, seed_settings: Settings) -> None:
    settings = seed_settings.model_copy(update={"index_dir": tmp_path / "nothing"})
    result = run_cli(settings, "search", "党建")
    assert result.returncode == 3 and "make index" in result.stderr and "Traceback" not in result.stderr


def test_blank_query_and_bad_k_are_usage_errors(seed_settings: Settings) -> None:
    assert run_cli(seed_settings, "search", "   ").returncode == 2
    assert run_cli(seed_settings, "search", "党建", "-k", "0").returncode == 2


def test_index_command_reports_counts(tmp_path: Path, seed_settings: Settings) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("一、抓党建\n各级党组织要认真落实“三会一课”制度。\n", encoding="utf-8")
    settings = seed_settings.model_copy(update={"index_dir": tmp_path / "index"})
    result = run_cli(settings, "index", "--seeds", str(docs))
    assert result.returncode == 0 and "1 篇文档" in result.stdout
    assert run_cli(settings, "index", "--seeds", str(tmp_path / "missing")).returncode == 4


def test_bench_scale_prints_its_measurements_as_the_last_json_line(seed_settings: Settings, tmp_path: Path) -> None:
    result = run_cli(seed_settings, "bench-scale", "--passages", "300", "--json", "--dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "合成" in result.stderr  # says the corpus is synthetic and its vectors composed
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    wanted = {"passages", "units", "build_s", "disk_mb", "cold_start_s", "rss_mb", "p50_ms", "p95_ms", "recall_at_10"}
    assert wanted <= measured.keys() and measured["passages"] == 300
    assert measured["units"] > 300 and measured["recall_at_10"] == 1.0  # 300 passages: exact search
    assert 0 < measured["p50_ms"] <= measured["p95_ms"] and measured["cold_start_s"] > 0
    assert not list(tmp_path.iterdir()), "the synthetic index is removed afterwards"


def test_bench_scale_refuses_a_corpus_of_nothing(seed_settings: Settings) -> None:
    result = run_cli(seed_settings, "bench-scale", "--passages", "0")
    assert result.returncode == 2 and "至少" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--passages", "9" * 40], "至多"),
        (["--passages", "10", "--dir", "/no/such/目录" + "长" * 200], "不是已有的目录"),
    ],
)
def test_bench_scale_refuses_huge_counts_and_missing_folders(
    seed_settings: Settings, args: list[str], message: str
) -> None:
    result = run_cli(seed_settings, "bench-scale", *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
