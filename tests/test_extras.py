"""The milvus and llm extras: the serving code imports neither unless a setting asks, and a setting that
needs a missing one says which to install (scripts/check_serving_install.sh checks a real install)."""

import subprocess
import sys

import pytest

from service.config import PROJECT_ROOT, Settings
from service.extras import MissingExtra, import_extra
from service.generate import ModelClient

EXTRA_MODULES = ("pymilvus", "milvus_lite", "openai", "httpx2")


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -c code` in the project, with DJQA_* settings from `env`."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=180
    )


def test_the_serving_code_imports_no_extra_unless_configured() -> None:
    code = (
        "import sys, service.cli, service.serve, service.http.app, service.engine, service.generate\n"
        f"print(sorted(set({EXTRA_MODULES!r}) & set(sys.modules)))"
    )
    result = python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def blocked(*modules: str) -> str:
    """Code that makes `modules` uninstalled for the rest of the process (None in sys.modules)."""
    return "import sys\n" + "".join(f"sys.modules[{module!r}] = None\n" for module in modules)


def test_milvus_store_without_the_extra_names_it(tmp_path: object) -> None:
    code = blocked("pymilvus") + "from service.cli import main\nsys.exit(main(['serve']))"
    result = python(code, DJQA_STORE="milvus", DJQA_MILVUS_URI=f"{tmp_path}/milvus.db")
    assert result.returncode == 3, result.stderr
    assert "pip install 'dangjian-qa[milvus]'" in result.stderr and "DJQA_STORE=milvus" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_language_model_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openai", None)
    settings = Settings(llm_base_url="http://127.0.0.1:9/v1")
    with pytest.raises(MissingExtra, match=r"pip install 'dangjian-qa\[llm\]'") as raised:
        ModelClient(settings)
    assert "DJQA_LLM_BASE_URL" in str(raised.value)


def test_a_broken_install_is_not_mistaken_for_a_missing_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)  # a core dependency, not an extra's
    monkeypatch.delitem(sys.modules, "service.stores.milvus", raising=False)
    with pytest.raises(ModuleNotFoundError):
        import_extra("service.stores.milvus", "milvus", "Milvus 存储")
