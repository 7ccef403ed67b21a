# Two commands: `make bench` (the kernel benchmarks) and `make test` (the test suite).
# Each sets up everything on a fresh machine first: a virtual environment, PyTorch, the package with
# its compiled extension (CPU part always; CUDA part when nvcc is found), and the test/bench extras.

VENV        ?= .venv
PYTHON      ?= python3
# The CPU wheel of this torch lies on the CI machines' disk; override for a CUDA machine,
# e.g. `make test TORCH_SPEC=torch` (or install torch yourself and use `make install`).
TORCH_SPEC  ?= torch==2.13.0
# The Triton of the GPU machines the benchmarks come from; an unpinned one may be a newer release
# whose interpreter and compiler the tests have not seen.
TRITON_SPEC ?= triton==3.6.0
# pytest-xdist workers for `make test`: one per core, at most 4 (each builds its own copy of the
# emulated CUDA kernels); TEST_WORKERS=0 runs the suite in one process
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.led-kernels-installed
SOURCES     := pyproject.toml CMakeLists.txt $(shell find csrc -type f 2>/dev/null)

.PHONY: install test test-all bench lint clean

install: $(STAMP)

$(STAMP): $(SOURCES)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" "$(TRITON_SPEC)"
	$(PY) -m pip install -q "scikit-build-core>=0.10" "pybind11>=2.12" ninja
	$(PY) -m pip install -q --no-build-isolation -e ".[test,bench]"
	touch $@

lint: install
	$(PY) -m ruff check .

test: install lint
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# everything, including the long sweeps marked `slow`
test-all: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "slow or not slow"

bench: install
	$(PY) -m benchmarks

clean:
	rm -rf build $(VENV) .pytest_cache
