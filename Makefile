# facediff: `make demo` samples 16 faces from the bundled model into samples/grid.png;
# `make test` runs the test suite; `make demo-train` trains a tiny model on drawn faces and
# samples from it. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
# the CPU build lies on the dev machines' disk; on a CUDA machine PyPI's build is the GPU one
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_STEPS ?= 600

.PHONY: install demo demo-train test lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,eval,app,faces]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/facediff sample --n 16 --out samples

demo-train: $(STAMP)
	$(VENV)/bin/facediff data synth --out demo/faces --n 1024 --size 32
	$(VENV)/bin/facediff train --data demo/faces --preset tiny --out demo/run --max-steps $(DEMO_STEPS)
	$(VENV)/bin/facediff sample demo/run --n 16 --out demo/samples
	@echo "faces: demo/samples/grid.png"

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check facediff tests bench

clean:
	rm -rf demo samples .pytest_cache .ruff_cache
