# Everything a fresh machine needs: `make run` serves, `make test` tests, `make bench` measures.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
ENGINE ?= auto
# Optional: a PyTorch index for CPU-only wheels, e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_INDEX_ARG := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)
# The upstream CosyVoice code the engine runs: FunAudioLLM/CosyVoice at this commit (2026-03-16). Set
# COSYVOICE_SRC to a checkout of it to use that instead of fetching it.
COSYVOICE_COMMIT := ace7c47f41bbd303aa6bf1ea80e6f9fbd595cd40
export COSYVOICE_COMMIT
# The checkout `make install-cosyvoice` chose (COSYVOICE_SRC, the fetched commit, or none), for the recipes.
WITH_UPSTREAM = src=$${COSYVOICE_SRC:-$$(cat $(VENV)/cosyvoice-src 2>/dev/null)}; env $${src:+COSYVOICE_SRC=$$src}
LANES := fr-infer-cv2 upstream-cv2 upstream-cv3

.PHONY: install install-cosyvoice browser run test lint bench bench-model gpu-bundle soak load-test clean $(LANES:%=test-lane-%)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0 $(TORCH_INDEX_ARG)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# gRPC stubs for upstream's runtime API, generated from our copy of its contract (not kept in git)
GRPC_STUBS := app/api/runtime/cosyvoice_pb2.py app/api/runtime/cosyvoice_pb2_grpc.py
$(GRPC_STUBS) &: app/api/runtime/cosyvoice.proto $(VENV)/.installed
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. app/api/runtime/cosyvoice.proto

install: $(VENV)/.installed $(GRPC_STUBS)

# The real CosyVoice engine: its dependencies from PyPI (scripts/install_cosyvoice.sh), then the choice of
# upstream's code (scripts/use_upstream.sh: COSYVOICE_SRC, the recorded checkout, or a fetch of the commit).
$(VENV)/.cosyvoice-installed: $(VENV)/.installed requirements-cosyvoice.txt scripts/install_cosyvoice.sh
	bash scripts/install_cosyvoice.sh $(VENV)
	touch $@

install-cosyvoice: $(VENV)/.cosyvoice-installed
	@bash scripts/use_upstream.sh $(VENV)

# the CosyVoice engine is installed when it is asked for, or when `auto` will find a model
MODEL_DIR := $(or $(COSYVOICE_MODEL_DIR),pretrained_models/CosyVoice2-0.5B)
ENGINE_INSTALL := $(if $(or $(filter cosyvoice,$(ENGINE)),$(and $(filter auto,$(ENGINE)),$(wildcard \
	$(MODEL_DIR)/cosyvoice2.yaml $(MODEL_DIR)/cosyvoice3.yaml))),install-cosyvoice,)

run: install $(ENGINE_INSTALL)
	$(WITH_UPSTREAM) COSYVOICE_ENGINE=$(ENGINE) $(BIN)/python -m app.server --host $(HOST) --port $(PORT)

# No Docker engine in CI: the container files are checked with hadolint (a PyPI wheel of its binary).
# The docs: docs/settings.md is what app/config.py gives, the README's links lead somewhere, and the MkDocs site
# builds with no broken link or anchor (into site/, which git ignores).
lint: install
	$(BIN)/ruff check app tests scripts
	$(BIN)/ruff format --check app tests scripts
	$(BIN)/hadolint --failure-threshold warning Dockerfile
	@grep -qx "ARG COSYVOICE_COMMIT=$(COSYVOICE_COMMIT)" Dockerfile \
		|| { echo "the Dockerfile's COSYVOICE_COMMIT is not the Makefile's" >&2; exit 1; }
	$(BIN)/python scripts/settings_reference.py --check
	$(BIN)/python scripts/check_readme_links.py
	$(BIN)/mkdocs build --strict --quiet --site-dir site

# The web page's test drives Debian's Chromium (never a browser a test tool downloads): installed when missing
# and this user may (root, or sudo without a password); otherwise the test fails and says how to install it.
# A CJK font, so that the page's screenshot shows the Chinese mode and voice names.
CHROMIUM ?= /usr/bin/chromium
CJK_FONT := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
browser:
	@test -x $(CHROMIUM) -a -f $(CJK_FONT) || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else \
			echo "no $(CHROMIUM), and no permission to install it: apt-get install chromium" >&2; exit 0; fi; \
		echo "installing Debian's chromium (log: $(VENV)/chromium-install.log)"; \
		{ $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium fonts-wqy-microhei; } \
			>$(VENV)/chromium-install.log 2>&1 || echo "installing chromium failed; the web page test will fail" >&2; }

# Three engine lanes in parallel, each in a process of its own (one `cosyvoice` package per process):
# the whole suite with the CosyVoice contract on cosyvoice2-fr-infer, and the engine contract and the CosyVoice
# contract on upstream's code with a tiny CosyVoice2 and a tiny CosyVoice3.
test: install-cosyvoice lint browser
	@$(MAKE) --no-print-directory -j3 --output-sync=target $(LANES:%=test-lane-%)

# the lanes need the engine installed; `test` (or `make install-cosyvoice`) chooses the upstream code once
test-lane-fr-infer-cv2: $(VENV)/.cosyvoice-installed
	env -u COSYVOICE_SRC $(BIN)/pytest -q --lane fr-infer-cv2

# a static pattern rule: make searches no implicit rule for a phony target
test-lane-upstream-cv2 test-lane-upstream-cv3: test-lane-upstream-%: $(VENV)/.cosyvoice-installed
	$(WITH_UPSTREAM) $(BIN)/pytest -q --lane upstream-$* tests/engines/test_contract.py \
		tests/engines/test_cosyvoice.py tests/engines/test_cosyvoice_runtime.py tests/engines/test_cosyvoice_openai.py \
		tests/engines/test_cosyvoice_doors.py tests/engines/test_cosyvoice_exact.py

bench: install $(ENGINE_INSTALL)
	$(WITH_UPSTREAM) COSYVOICE_ENGINE=$(ENGINE) $(BIN)/python scripts/bench.py

# A bounded mix of every door, disconnects, hostile bodies and clones at 4x the concurrency limit (10 min)
# SOAK_ARGS=--keys-oss: API keys on every request, users' voices in OSS (the test server), an OSS outage mid-run
soak: install
	$(BIN)/python scripts/soak.py --seconds $(or $(SOAK_SECONDS),600) $(SOAK_ARGS)

# At 4x the concurrency limit on loopback: every request completes or gets a 429, /health latency, memory (60 s)
load-test: install
	$(BIN)/python scripts/load_test.py --seconds $(or $(LOAD_SECONDS),60)

# Full-size random CosyVoice2-0.5B and Fun-CosyVoice3-0.5B shapes, built once into the model cache (~4 GB):
# the service beside upstream's own non-streaming path, in one run. Takes about half an hour on 2 cores.
bench-model: install-cosyvoice
	$(WITH_UPSTREAM) $(BIN)/python scripts/bench_model.py

# For a GPU machine that reaches no network: the engine's wheels for Python 3.12 and upstream's package into
# .gpu/ (git ignores it); there, with .gpu carried along: `OUT=<dir> bash scripts/gpu_bench.sh`
gpu-bundle: install-cosyvoice
	$(WITH_UPSTREAM) bash scripts/gpu_bundle.sh $(VENV)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache data site
