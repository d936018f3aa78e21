"""The command line's vocabularies: the words its options accept, as plain tuples.

The CLI modules build their click.Choice lists and help texts from these at import time, so
`edgekit --help` names every choice without importing what owns them (gguf, torch, onnx,
llama_cpp, onnxruntime). This module imports nothing. Each tuple copies a table that lives
elsewhere, named beside it; tests/test_registry.py checks every copy against its table, so they
cannot drift apart.
"""

from __future__ import annotations

# edgekit.power.SENSORS, in its order (plugins add more: `--power` takes any installed sensor's key)
POWER_SENSORS = ("rapl", "nvml", "jetson", "tegrastats", "rpi5", "powermetrics")
# what `--power` accepts: the target's own sensor (auto), no measurement (none), or a sensor's key
POWER_CHOICES = ("auto", "none", *POWER_SENSORS)
# edgekit.power.logs.PARSERS: the sensors whose raw logs `edgekit power parse` reads
POWER_LOG_SENSORS = ("tegrastats", "rpi5", "powermetrics")

# edgekit.runners.llamacpp.FLASH_ATTN (its keys)
FLASH_ATTN = ("auto", "on", "off")
# edgekit.runners.onnxruntime.GRAPH_OPT
GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")
# edgekit.runners.onnxruntime.PROVIDER_ALIASES (its keys): the short names `--providers` takes
PROVIDER_SHORT_NAMES = ("cpu", "cuda", "tensorrt", "tensorrt-rtx", "coreml", "directml", "xnnpack")

# edgekit.converters.onnx.PRECISIONS
ONNX_PRECISIONS = ("fp32", "fp16", "int4")
# edgekit.converters.tensorrt.PRECISIONS, BUILDER_MODULES (its keys)
TENSORRT_PRECISIONS = ("fp16", "int4")
TENSORRT_BUILDERS = ("tensorrt", "tensorrt-rtx")  # the Python modules: tensorrt, tensorrt_rtx
# edgekit.converters.onnx.LOGITS_MODES
ONNX_LOGITS = ("last", "all")
# edgekit.converters.onnx.METHODS
ONNX_METHODS = ("stream", "trace")
# edgekit.converters.gguf.ALL_TYPES (its keys, in its order: unquantized first)
GGUF_QUANTS = ("F32", "F16", "BF16", "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S",
               "Q4_1", "Q4_0", "IQ4_NL", "IQ4_XS", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K")

# the file suffixes edgekit.report.write_report knows: HTML (table and plots) or Markdown (table)
REPORT_SUFFIXES = (".html", ".htm", ".md")
# JSON layouts of `edgekit bench -o/--json`: BenchResult.to_json or BenchResult.to_llama_bench
RESULT_FORMATS = ("edgekit", "llama-bench")

# edgekit.synth.PRESETS (its keys)
SYNTH_PRESETS = ("r1-distill-qwen-1.5b", "r1-distill-qwen-7b", "r1-distill-llama-8b", "small-qwen2", "tiny-qwen2",
                 "tiny-llama")


def listed(words: tuple[str, ...] | list[str], last: str = "or") -> str:
    """'a, b or c': words for a help text."""
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} {last} {words[-1]}"
