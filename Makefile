# Two commands do all the set-up on a fresh machine:
#   make demo   - creates .venv on first use, then runs `fluoden demo`
#   make test   - creates .venv on first use, starts a single-node SLURM where it can
#                 (.ci/slurm-up.sh: root and apt; else its tests skip), adds napari, pytest-qt
#                 and Xvfb where they install (.ci/napari-up.sh; else the napari viewer tests
#                 skip), runs the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fluoden-installed
# CPU wheel of torch where none is installed; users with a GPU install their CUDA torch first.
TORCH_CPU ?= torch==2.13.0

.PHONY: demo test test-all lint bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_CPU)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fluoden demo

# SLURM for tests/cluster/test_slurm.py and napari for tests/napari: neither fails the
# target; without them those tests skip
test: $(STAMP)
	@timeout 300 bash .ci/slurm-up.sh || echo "make test: no SLURM here, the tests marked slurm skip"
	@timeout 600 bash .ci/napari-up.sh $(PY) || echo "make test: no napari viewer here, the tests marked napari skip"
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# The benchmark suite (benchmarks/run_suite.py): every experiment, tables and plots in
# benchmarks/results/ (hours on 2 cores); bench-quick: minutes, into benchmarks/results/quick/,
# real-data parts skipped with a message where ../shared/data is absent.
bench: $(STAMP)
	$(PY) benchmarks/run_suite.py

bench-quick: $(STAMP)
	$(PY) benchmarks/run_suite.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache *.egg-info
