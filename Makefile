# Two commands on a fresh machine:  `make demo`  (install + full demo run)  and  `make test`  (install + tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch, pinned so CI never pulls a multi-GB CUDA build. On a GPU workstation, install the CUDA
# build of torch into the venv first (see README, "GPU workstation"); this pin is then skipped if torch is present.
TORCH  ?= torch==2.13.0

.PHONY: install demo demo-full test test-fast clean-demo

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

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

clean-demo:
	rm -rf runs/demo runs/demo_full data/synthetic_demo
