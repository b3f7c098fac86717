# The two commands a newcomer runs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo_out

.PHONY: demo test lint bench bench-external clean setup

setup: $(STAMP)

# torch is pinned and installed on its own first: torch==2.13.0 is a CPU wheel on local disk here,
# while an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ehrdx demo --out $(DEMO_OUT)

# Two workers, one thread each (these 2 cores; most tests are single-threaded Python), a test file per
# worker so that module fixtures are built once.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_table.py --patients 100000
	$(PY) benchmarks/bench_events.py --patients 5000

# The external benchmark in its own venv (generators and LightGBM stay out of the library's venv);
# data are generated into benchmarks/.external_data/ (ignored by git).
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[bench]'
	touch $(BENCH_VENV)/.installed

bench-external: $(BENCH_VENV)/.installed
	OMP_NUM_THREADS=1 $(BENCH_VENV)/bin/python benchmarks/bench_external.py --sets eunomia,clinosim,syntha \
		--patients 2500 --seed 1 --out bench_out/external

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
