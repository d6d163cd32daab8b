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

.PHONY: install install-cosyvoice run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0 $(TORCH_INDEX_ARG)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# The real CosyVoice engine: upstream code from PyPI (cosyvoice2-fr-infer) and its curated dependencies.
$(VENV)/.cosyvoice-installed: $(VENV)/.installed requirements-cosyvoice.txt scripts/install_cosyvoice.sh
	bash scripts/install_cosyvoice.sh $(VENV)
	touch $@

install-cosyvoice: $(VENV)/.cosyvoice-installed

run: install $(if $(filter cosyvoice,$(ENGINE)),install-cosyvoice,)
	COSYVOICE_ENGINE=$(ENGINE) $(BIN)/uvicorn --factory app.main:create_app --host $(HOST) --port $(PORT) --timeout-graceful-shutdown 10

lint: install
	$(BIN)/ruff check app tests scripts
	$(BIN)/ruff format --check app tests scripts

test: install-cosyvoice lint
	$(BIN)/pytest -q

bench: install $(if $(filter cosyvoice,$(ENGINE)),install-cosyvoice,)
	COSYVOICE_ENGINE=$(ENGINE) $(BIN)/python scripts/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache data
