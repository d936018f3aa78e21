# Two entry points for a fresh machine (Python 3.10+, a C/C++ compiler):
#   make demo   set up .venv and run the demo on a built-in model
#   make test   set up .venv with the dev extra and run the default test suite
# The first install compiles llama.cpp (llama-cpp-python, ~6-8 min on 2 cores);
# pip caches the built wheel, so later installs take seconds.
# Extra pip options (e.g. a CPU-only torch index) go in PIP_ARGS.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_ARGS ?=
STAMP := $(VENV)/.edgekit-installed
DEMO_OUT ?= demo-out

.PHONY: demo test install clean

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "edgekit needs Python 3.10 or newer")'
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install $(PIP_ARGS) -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgekit synth small-qwen2 $(DEMO_OUT)/small-qwen2 --force
	$(VENV)/bin/edgekit export gguf $(DEMO_OUT)/small-qwen2 -o $(DEMO_OUT)/gguf --quant Q4_K_M,Q8_0 --force
	$(VENV)/bin/edgekit inspect $(DEMO_OUT)/gguf/small-qwen2-Q4_K_M.gguf

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) $(DEMO_OUT) build dist *.egg-info
