# The README's two commands: `make demo` and `make test`. Both work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# On a machine without an NVIDIA GPU we pin the CPU wheel (2.13.0); a bare `torch` would pull a
# multi-GB CUDA build. With a GPU, the default (CUDA) wheel is what we want.
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup data browser demo test lint bench clean docs docs-serve

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install --upgrade pip
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install -e ".[all]"
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

# The HTML report's browser test drives Debian's chromium through chromium-driver (selenium);
# nothing is downloaded by selenium itself.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
	  echo "chromium + chromedriver: present"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver \
	  || echo "warning: could not install chromium; the report's browser test will be skipped"; \
	else echo "warning: no apt-get; the report's browser test needs chromium + chromedriver"; fi

setup: $(VENV)/.installed data

demo: setup
	$(VENV)/bin/resnetlab train

# The second run caps oneDNN and ATen at AVX2, so any x86 CPU also tests the kernels an
# AVX2-only machine takes (README "Known platform issues"): convolution layers, engine, resume
# and the model zoo's forward+backward.  About 2 minutes on 2 cores.
AVX2_TESTS := tests/layers/test_layers.py tests/engine/test_engine_loop.py tests/run/test_resume_sigkill.py \
	tests/models/test_models.py::test_forward_backward_every_model

test: setup browser docs
	RESNETLAB_TEST_PIP_INSTALL=1 RESNETLAB_DOCS_HTML=$(CURDIR)/docs/_build/html $(PY) -m pytest -q
	@if [ "$$(uname -m)" = x86_64 ]; then echo "== again with DNNL_MAX_CPU_ISA=AVX2 =="; \
	  DNNL_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 $(PY) -m pytest -q -p no:cacheprovider \
	  $(AVX2_TESTS); fi

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/lint-imports

bench: setup
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/data_pipeline.py

# The documentation site (docs/guide/docs.md): quick gallery unless RESNETLAB_DOCS_FULL=1,
# warnings are errors, then every internal link of the built HTML is checked (offline).
docs: setup
	RESNETLAB_DOCS_QUICK=$(if $(RESNETLAB_DOCS_FULL),0,1) $(PY) -m sphinx -W --keep-going -q \
	  -b html docs docs/_build/html
	$(PY) docs/check_links.py docs/_build/html

docs-serve:
	@test -f docs/_build/html/index.html || { echo "error: no site yet; run make docs"; exit 2; }
	$(PY) -m http.server --bind 127.0.0.1 --directory docs/_build/html 8000

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
