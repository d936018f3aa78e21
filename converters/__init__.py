"""Export formats (installed as `edgekit.converters`): one entry module per format, its steps beside it.

- `gguf`: Hugging Face checkpoint -> GGUF (F16/BF16/F32) with gguf-py, then
  llama.cpp quantization (Q4_K_M, Q4_0, ...) through llama-cpp-python;
  `gguf_vocab` writes the tokenizer into it.
- `onnx`: Hugging Face checkpoint -> ONNX decoder with KV cache (FP32/FP16/INT4) through
  optimum-onnx; `onnx_graph` (saving models, the graph rewrites), `onnx_int4` (MatMulNBits
  quantization and its checks) and `onnx_genai` (genai_config.json) are its steps.

Modules here import their heavy libraries lazily or at module level; nothing
imports them from `edgekit --help`.
"""
