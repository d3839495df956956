"""Export a sentence-transformers model directory to ONNX, once per weights hash.

Serving imports neither torch nor transformers (they cost ~10 s and ~300 MB at start-up): the same
weights run in onnxruntime with the fast `tokenizers` tokenizer. This module is the only place that
imports torch, and only when an export is missing.
"""

import json
import os
import shutil
import tempfile
from pathlib import Path

POOLING_MODES = ("mean", "cls")


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
    import torch
    from transformers import AutoModel, AutoTokenizer

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
