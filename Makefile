# Two commands on a fresh machine:  `make demo`  (install + full demo run)  and  `make test`  (install + tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch, pinned so CI never pulls a multi-GB CUDA build. On a GPU workstation, install the CUDA
# build of torch into the venv first (see README, "GPU workstation"); this pin is then skipped if torch is present.
TORCH  ?= torch==2.13.0
# Test processes (pytest-xdist): one per core, at most 4; each test file runs whole in one process, so a module's
# fixture (the semi-real pipeline run, the tiny-cohort run) is computed once. `make test TEST_WORKERS=1` runs serially.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: install browser demo demo-full test test-fast clean-demo

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: install
	$(BIN)/vent run configs/demo.yaml

demo-full: install
	$(BIN)/vent run configs/demo_full.yaml

# The report's browser test opens the HTML in headless Chromium (Debian's package; Playwright from the test extras
# drives it). Installed here when missing and apt-get can (root); otherwise this says what to run.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ -n "$$VENT_CHROMIUM" ] || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	    apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || \
	  { echo "make: the tests need Chromium: run 'sudo apt-get install -y chromium' (or set VENT_CHROMIUM)"; exit 1; }

test: install browser
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: install browser
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

clean-demo:
	rm -rf runs/demo runs/demo_full data/synthetic_demo
