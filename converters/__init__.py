"""Export formats, one module each (installed as `edgekit.converters`).

- `gguf`: Hugging Face checkpoint -> GGUF (F16/BF16/F32) with gguf-py, then
  llama.cpp quantization (Q4_K_M, Q4_0, ...) through llama-cpp-python.

Modules here import their heavy libraries lazily or at module level; nothing
imports them from `edgekit --help`.
"""
