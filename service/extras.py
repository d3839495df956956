"""Optional dependencies (pyproject.toml extras), imported only when a setting needs them.

The serving install (`pip install .`) has neither the Milvus client (`.[milvus]`: pymilvus brings
pandas and grpc, 0.4 s and 110 MB at start-up) nor the language-model client (`.[llm]`).
"""

import importlib
from types import ModuleType

# The top-level packages each extra installs: a missing one of these is the extra missing, anything
# else missing is a broken install and is raised as it is.
EXTRA_PACKAGES = {"milvus": {"pymilvus", "milvus_lite"}, "llm": {"openai", "httpx2"}}


class MissingExtra(Exception):
    """A setting asks for something whose optional dependencies are not installed."""


def import_extra(module: str, extra: str, needed_for: str) -> ModuleType:
    """`module` imported; MissingExtra naming the pip command when a package of `extra` is missing."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] not in EXTRA_PACKAGES[extra]:
            raise
        raise MissingExtra(
            f"{needed_for}需要可选依赖 {extra}（未安装 {error.name}）：请运行 pip install 'dangjian-qa[{extra}]'"
            f"（在源码目录中：pip install '.[{extra}]'），或改用不需要它的设置"
        ) from None
