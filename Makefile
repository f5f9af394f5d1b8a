# The README's two commands: `make demo` and `make test`. Both work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# On a machine without an NVIDIA GPU we pin the CPU wheel (2.13.0); a bare `torch` would pull a
# multi-GB CUDA build. With a GPU, the default (CUDA) wheel is what we want.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup data demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[dev,onnx]"
	touch $@

# The default data set comes from Debian's `dataset-fashion-mnist`; other machines use
# --data-dir, $$RESNETLAB_DATA or the official download.
data:
	@if [ -f $(FASHION_MNIST) ]; then echo "fashion-mnist: present"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist \
	  || echo "warning: could not install dataset-fashion-mnist; pass --data-dir to resnetlab"; \
	else echo "warning: no apt-get; pass --data-dir or set RESNETLAB_DATA for fashion-mnist"; fi

setup: $(VENV)/.installed data

demo: setup
	$(VENV)/bin/resnetlab train

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/data_pipeline.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
