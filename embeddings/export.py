"""Export a sentence-transformers model directory to ONNX, once per weights hash.

Serving imports neither torch nor transformers (they cost ~10 s and ~300 MB at start-up, and are
not installed without the `export` extra): the same weights run in onnxruntime with the fast
`tokenizers` tokenizer. `make model` writes the export beside the weights
(`python -m embeddings.export models/m3e-small`), so a serving install finds it there. This module
is the only place that imports torch, and only when an export is made.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from embeddings.model import ModelError, weights_sha256

POOLING_MODES = ("mean", "cls")
EXPORT_PREFIX = "onnx-"


def export_dir_for(model_dir: Path, weights_hash: str) -> Path:
    """Where `make model` puts the export of these weights: beside them, named by their hash."""
    return model_dir / f"{EXPORT_PREFIX}{weights_hash[:16]}"


def read_pooling(model_dir: Path) -> str:
    """Pooling mode from the sentence-transformers config; mean (m3e's) when absent."""
    config_path = model_dir / "1_Pooling" / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
        if config.get("pooling_mode_cls_token"):
            return "cls"
    return "mean"


def read_max_length(model_dir: Path) -> int:
    config_path = model_dir / "sentence_bert_config.json"
    if config_path.is_file():
        return int(json.loads(config_path.read_text()).get("max_seq_length", 512))
    return 512


def export_onnx(model_dir: Path, export_dir: Path) -> None:
    """Write model.onnx, tokenizer.json and encoder.json into export_dir, atomically."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: the directory is all we use
    try:
        import torch
        from transformers import AutoModel, AutoTokenizer
    except ModuleNotFoundError as error:
        raise ModelError(
            f"模型 {model_dir} 还没有导出为 ONNX，导出需要 torch（`export` 依赖组）：请运行 `make model`"
        ) from error

    class LastHiddenState(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            output = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return output.last_hidden_state

    model = AutoModel.from_pretrained(str(model_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=export_dir.parent))
    try:
        sample = torch.ones(2, 8, dtype=torch.long)
        names = ["input_ids", "attention_mask", "token_type_ids"]
        with torch.no_grad():
            torch.onnx.export(
                LastHiddenState(model),
                (sample, torch.ones_like(sample), torch.zeros_like(sample)),
                str(staging / "model.onnx"),
                input_names=names,
                output_names=["last_hidden_state"],
                dynamic_axes={name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]},
                opset_version=17,
                dynamo=False,
            )
        tokenizer.backend_tokenizer.save(str(staging / "tokenizer.json"))
        config = {
            "pooling": read_pooling(model_dir),
            "max_length": min(read_max_length(model_dir), tokenizer.model_max_length),
            "dimension": int(model.config.hidden_size),
        }
        (staging / "encoder.json").write_text(json.dumps(config))
        if export_dir.exists():
            shutil.rmtree(export_dir)
        staging.rename(export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description="Export a sentence-transformers model to ONNX beside its weights.")
    parser.add_argument("model_dir", type=Path)
    args = parser.parse_args()
    try:
        target = export_dir_for(args.model_dir, weights_sha256(args.model_dir))
        if not (target / "encoder.json").is_file():
            export_onnx(args.model_dir, target)
    except ModelError as error:
        print(f"错误：{error}", file=sys.stderr)
        return 1
    print(f"ONNX 已就绪：{target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
