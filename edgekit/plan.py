"""`edgekit plan`: what fits where and how fast, from first principles, then checked against
measurements.

Contract:
- Weights per quantization. GGUF: llama.cpp's own quantizer decides each tensor's type, in its
  dry-run mode (`llama_model_quantize` with dry_run: types and sizes, no data read) on a GGUF
  header with the model's real tensor shapes over a sparse data region, so Q4_K_M's mixed types
  (Q6_K output and some attn_v/ffn_down) are llama.cpp's, never re-derived here; bytes per
  tensor are rows x gguf-py's row size of that type. ONNX INT4 (MatMulNBits): 4 bits per weight of
  every linear layer, one scale per block of `block_size` (the activations' float type), the
  embedding and norms at FP32 (edgekit export onnx's defaults). FP16: 2 bytes per weight. The
  DeepSeek-V3/R1 mixture of experts (671B) gets the same dry run on a deepseek2 header (MLA
  attention, merged experts), so its Q4_K_M's Q6_K expert down-projections are llama.cpp's too.
- KV cache at ctx: 2 x layers x kv_heads x head_dim x ctx x 2 bytes (F16); MLA (671B): the
  compressed latent, (kv_lora_rank + qk_rope_head_dim) x layers x ctx x 2 bytes.
- Memory needed = weights + KV + runtime overhead (compute buffers: a default, stated); usable
  = the target's RAM less an OS reserve, on Apple the GPU working-set cap (2/3 of RAM up to
  36 GB, 3/4 above), on Jetson the shared RAM less the reserve.
- tg = efficiency x bandwidth / bytes read per token (weights read, KV at half the context); pp
  = tg x a pp/tg ratio; TTFT(prompt) = prompt / pp + 1 / tg. Efficiency and ratio come from
  measured results (`results`: median per target x runtime) or a stated default; J/token from
  measured watts. Every figure carries where its inputs came from.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import re
import statistics
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from importlib import metadata, resources
from pathlib import Path

from edgekit import native
from edgekit.architectures import architecture_of, head_dim, n_kv_heads, tensor_shapes
from edgekit.converters.gguf import QUANT_TYPES, add_hparams, file_type, plan_tensors_from_shapes
from edgekit.errors import EdgekitError
from edgekit.formats import get_format, resolve_artifact
from edgekit.llamacpp_build import cache_root
from edgekit.llamacpp_log import route_llama_log
from edgekit.report import result_files
from edgekit.results import BenchResult
from edgekit.roofline import host_bandwidth_gb_s
from edgekit.runtimes import get_runtime
from edgekit.synth import PRESETS
from edgekit.targets.host import host_facts
from edgekit.targets.specs import all_specs
from edgekit.tensorrt_rules import build_peak_bytes, build_rule

QUANTS = ("Q4_K_M", "Q8_0", "ONNX-INT4", "F16")   # the default view
TENSORRT_QUANTS = ("TRT-FP16", "TRT-INT4")        # planned on request (--quant), NVIDIA targets only
OVERHEAD_BYTES = 300 * 2**20          # compute buffers + process, default (llama.cpp CPU, n_ubatch 512)
OS_RESERVE_BYTES = 2**30              # at least this much, or 10 % of RAM, kept for the OS
DEFAULT_VOCAB = 32000                 # for the logits, when an artifact does not say


# ---------------------------------------------------------------- models


def r1_family() -> dict[str, dict]:
    return {k: v for k, v in json.loads(resources.files("edgekit").joinpath("data/r1_family.json").read_text(
        encoding="utf-8")).items() if not k.startswith("_")}


@dataclass
class ModelSpec:
    name: str
    config: dict | None
    source: str                      # where the config came from
    published_params: float | None = None
    facts: object = None             # an artifact's ModelFacts: its own quant, measured from the file


def resolve_models(spec: str) -> list[ModelSpec]:
    """MODEL as plan takes it: `r1` (the whole family), a family member or synth preset name, a
    checkpoint folder (its config.json), an artifact (its measured facts: see artifact_rows), or
    a hub id (config.json only, downloaded when online)."""
    family = r1_family()
    if spec == "r1":
        return [ModelSpec(k, v["config"], f"published config.json of {v['hub_id']}", v.get("published_params"))
                for k, v in family.items()]
    if spec in family:
        v = family[spec]
        return [ModelSpec(spec, v["config"], f"published config.json of {v['hub_id']}", v.get("published_params"))]

    if spec in PRESETS:
        config = dict(PRESETS[spec].config)
        if config.get("vocab_size") is None:
            raise EdgekitError(f"the preset {spec} takes its vocabulary size from the tokenizer synth trains",
                               f"synth it (edgekit synth {spec} DIR) and plan the folder")
        return [ModelSpec(spec, config, f"edgekit synth preset {spec}")]
    path = Path(spec)
    if path.is_file() or (path.is_dir() and (path / "manifest.json").is_file()):
        model, fmt = resolve_artifact(path)
        return [ModelSpec(model.name, None, f"the artifact {model} itself ({fmt.name})", facts=fmt.facts(model))]
    if path.is_dir() and (path / "config.json").is_file():
        return [ModelSpec(path.name, json.loads((path / "config.json").read_text(encoding="utf-8")),
                          f"{path / 'config.json'}")]
    if path.exists():
        raise EdgekitError(f"{spec} is not a checkpoint folder (no config.json)",
                           "pass r1, a preset, a checkpoint folder or a hub id (artifacts: edgekit inspect)")
    if "/" in spec and not spec.startswith((".", "/")):
        try:
            from huggingface_hub import hf_hub_download

            cfg = Path(hf_hub_download(spec, "config.json"))
        except Exception as e:
            raise EdgekitError(f"cannot read config.json of {spec} from the hub ({type(e).__name__})",
                               "check the id and the network, or pass a local checkpoint folder") from None
        return [ModelSpec(spec.rsplit("/", 1)[-1], json.loads(cfg.read_text(encoding="utf-8")), f"hub {spec}")]
    known = ", ".join(["r1", *family])
    raise EdgekitError(f"unknown model '{spec}'", f"pass one of {known}, a synth preset, a checkpoint folder or a hub id")


def is_moe(config: dict) -> bool:
    return bool(config.get("n_routed_experts"))


def moe_counts(c: dict) -> dict[str, int]:
    """DeepSeek-V3 parameters by kind: MLA attention, dense and MoE FFNs, router, embeddings."""
    h, layers = c["hidden_size"], c["num_hidden_layers"]
    heads, nope, rope, v = c["num_attention_heads"], c["qk_nope_head_dim"], c["qk_rope_head_dim"], c["v_head_dim"]
    q_rank, kv_rank = c["q_lora_rank"], c["kv_lora_rank"]
    attn = (h * q_rank + q_rank + q_rank * heads * (nope + rope) + h * (kv_rank + rope) + kv_rank
            + kv_rank * heads * (nope + v) + heads * v * h + 2 * h)
    dense_ffn = 3 * h * c["intermediate_size"]
    expert = 3 * h * c["moe_intermediate_size"]
    n_dense = c["first_k_dense_replace"]
    n_moe = layers - n_dense
    routed = n_moe * c["n_routed_experts"] * expert
    shared = n_moe * c["n_shared_experts"] * expert
    router = n_moe * (c["n_routed_experts"] * h + c["n_routed_experts"])
    embed = 2 * c["vocab_size"] * h + h
    total = layers * attn + n_dense * dense_ffn + routed + shared + router + embed
    active = layers * attn + n_dense * dense_ffn + n_moe * c["num_experts_per_tok"] * expert + shared + router + embed
    return {"total": total, "active": active, "routed": routed, "embed_row_only": c["vocab_size"] * h}


def n_params(config: dict) -> int:
    if is_moe(config):
        return moe_counts(config)["total"]

    return sum(math.prod(s) for s in tensor_shapes(config).values())


def kv_bytes_per_position(config: dict) -> int:
    """F16 KV cache per position of context (llama.cpp's default cache type)."""
    if is_moe(config) and config.get("kv_lora_rank"):  # MLA caches the compressed latent and the rope key
        return int(config["num_hidden_layers"] * (config["kv_lora_rank"] + config["qk_rope_head_dim"]) * 2)

    return int(2 * config["num_hidden_layers"] * n_kv_heads(config) * head_dim(config) * 2)


# ---------------------------------------------------------------- weights per quantization


@dataclass
class Weights:
    quant: str
    runtime: str
    total_bytes: int                 # on disk and in RAM
    per_token_bytes: int             # read to generate one token
    types: dict[str, int] = field(default_factory=dict)   # tensor type -> count
    source: str = ""


def _row_bytes(type_name: str, shape: tuple[int, ...]) -> int:
    """Bytes of a tensor of `shape` (GGUF order: ne0 first) in ggml type `type_name`."""
    import gguf

    t = gguf.GGMLQuantizationType[type_name.upper()]
    block, size = gguf.GGML_QUANT_SIZES[t]
    ne0 = shape[0]
    rows = math.prod(shape[1:]) if len(shape) > 1 else 1
    return rows * (ne0 // block) * size


class ShapeOnly:
    """A tensor of a header-only GGUF: name, shape (numpy order, outermost first), F16 or F32."""

    def __init__(self, gguf_name: str, shape: tuple[int, ...]):
        self.gguf_name, self.shape = gguf_name, shape
        self.out = "F32" if len(shape) == 1 else "F16"

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * (4 if self.out == "F32" else 2)

    def np_dtype(self):
        import numpy as np

        return np.float32 if self.out == "F32" else np.float16

    def raw_dtype(self):
        return None


def deepseek2_tensors(c: dict) -> list[ShapeOnly]:
    """The tensors of a DeepSeek-V3/R1 GGUF as llama.cpp's deepseek2 architecture names them: MLA
    attention (q_a/q_b, kv_a_mqa/kv_b), the first dense FFNs, then each layer's merged experts
    (one 3-D tensor per projection), shared expert, router and its bias."""
    h, n_head = c["hidden_size"], c["num_attention_heads"]
    nope, rope, v, qr, kvr = (c[k] for k in ("qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "q_lora_rank",
                                              "kv_lora_rank"))
    n_exp, ef, inter = c["n_routed_experts"], c["moe_intermediate_size"], c["intermediate_size"]
    t = [ShapeOnly("token_embd.weight", (c["vocab_size"], h))]
    for i in range(c["num_hidden_layers"]):
        b = f"blk.{i}."
        t += [ShapeOnly(b + "attn_norm.weight", (h,)), ShapeOnly(b + "attn_q_a.weight", (qr, h)),
              ShapeOnly(b + "attn_q_a_norm.weight", (qr,)), ShapeOnly(b + "attn_q_b.weight", (n_head * (nope + rope), qr)),
              ShapeOnly(b + "attn_kv_a_mqa.weight", (kvr + rope, h)), ShapeOnly(b + "attn_kv_a_norm.weight", (kvr,)),
              ShapeOnly(b + "attn_kv_b.weight", (n_head * (nope + v), kvr)),
              ShapeOnly(b + "attn_output.weight", (h, n_head * v)), ShapeOnly(b + "ffn_norm.weight", (h,))]
        if i < c["first_k_dense_replace"]:
            t += [ShapeOnly(b + "ffn_gate.weight", (inter, h)), ShapeOnly(b + "ffn_up.weight", (inter, h)),
                  ShapeOnly(b + "ffn_down.weight", (h, inter))]
        else:
            shared = ef * c["n_shared_experts"]
            t += [ShapeOnly(b + "ffn_gate_inp.weight", (n_exp, h)), ShapeOnly(b + "exp_probs_b.bias", (n_exp,)),
                  ShapeOnly(b + "ffn_gate_exps.weight", (n_exp, ef, h)), ShapeOnly(b + "ffn_up_exps.weight", (n_exp, ef, h)),
                  ShapeOnly(b + "ffn_down_exps.weight", (n_exp, h, ef)), ShapeOnly(b + "ffn_gate_shexp.weight", (shared, h)),
                  ShapeOnly(b + "ffn_up_shexp.weight", (shared, h)), ShapeOnly(b + "ffn_down_shexp.weight", (h, shared))]
    return t + [ShapeOnly("output_norm.weight", (h,)), ShapeOnly("output.weight", (c["vocab_size"], h))]


def add_deepseek2_hparams(w, c: dict) -> None:
    """What llama.cpp's deepseek2 loader reads of a GGUF header, from a DeepSeek-V3 config."""
    import gguf

    w.add_name("plan")
    w.add_context_length(int(c["max_position_embeddings"]))
    w.add_embedding_length(c["hidden_size"])
    w.add_block_count(c["num_hidden_layers"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c["num_key_value_heads"])
    w.add_rope_freq_base(float(c["rope_theta"]))
    w.add_layer_norm_rms_eps(float(c["rms_norm_eps"]))
    w.add_vocab_size(c["vocab_size"])
    w.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
    w.add_leading_dense_block_count(c["first_k_dense_replace"])
    w.add_q_lora_rank(c["q_lora_rank"])
    w.add_kv_lora_rank(c["kv_lora_rank"])
    w.add_key_length(c["qk_nope_head_dim"] + c["qk_rope_head_dim"])
    w.add_value_length(c["v_head_dim"])
    w.add_expert_feed_forward_length(c["moe_intermediate_size"])
    w.add_expert_count(c["n_routed_experts"])
    w.add_expert_used_count(c["num_experts_per_tok"])
    w.add_expert_shared_count(c["n_shared_experts"])
    w.add_expert_weights_scale(float(c.get("routed_scaling_factor", 2.5)))
    w.add_expert_weights_norm(bool(c.get("norm_topk_prob", True)))
    w.add_expert_gating_func(gguf.ExpertGatingFuncType.SIGMOID)
    w.add_rope_dimension_count(c["qk_rope_head_dim"])


def gguf_tensors(config: dict) -> list[tuple]:
    """(GGUF name, GGUF shape ne0-first, the tensor's plan) of every tensor an F16 GGUF of `config`
    holds: edgekit export gguf's names (converters.gguf.plan_tensors_from_shapes on the config's shapes), or
    llama.cpp's deepseek2 names for DeepSeek-V3/R1."""
    if is_moe(config):
        return [(t.gguf_name, tuple(reversed(t.shape)), t) for t in deepseek2_tensors(config)]

    plans = plan_tensors_from_shapes(config, architecture_of(config), tensor_shapes(config), "F16")
    return [(p.gguf_name, tuple(reversed(p.shape)), p) for p in plans]


def dry_run_types(config: dict, quant: str) -> dict[str, str]:
    """tensor name -> the ggml type llama.cpp's quantizer gives it for `quant` (a dry run on a
    header-only GGUF of `config`'s shapes; cached in edgekit's cache by shapes, quant and
    llama-cpp-python version)."""
    tensors = gguf_tensors(config)
    try:
        version = metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        raise EdgekitError("plan needs llama-cpp-python for GGUF sizes (llama.cpp's quantizer decides the types)",
                           "install the workstation extra: pip install 'edgekit[workstation]'") from None
    key = hashlib.sha256(json.dumps(["v2", quant, version, [(n, s) for n, s, _ in tensors],
                                     {k: config.get(k) for k in ("architectures", "num_attention_heads",
                                                                 "num_key_value_heads")}]).encode()).hexdigest()[:16]
    cache = cache_root() / "plan" / f"{key}.json"
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))["types"]

    found = native.call("edgekit.plan:dry_run_here", config, quant, library="llama.cpp",
                        what=f"llama.cpp's dry-run quantization to {quant}", timeout_s=600)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(found), encoding="utf-8")
    return found["types"]


def dry_run_here(config: dict, quant: str) -> dict:
    """dry_run_types in this process: the header-only GGUF (sparse data) and the dry run ->
    {"types": tensor -> type, "quant_size_mib": llama.cpp's own total of the quantized size}."""
    import gguf
    import llama_cpp
    import numpy as np

    plans = [p for _, _, p in gguf_tensors(config)]
    lines: list[str] = []

    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "shapes.gguf"
        if is_moe(config):
            w = gguf.GGUFWriter(path=None, arch="deepseek2")
            add_deepseek2_hparams(w, config)
        else:
            w = gguf.GGUFWriter(path=None, arch=architecture_of(config).gguf_arch)
            add_hparams(w, config, "plan", "F16")
        for p in plans:
            w.add_tensor_info(p.gguf_name, p.shape, np.dtype(p.np_dtype()), p.nbytes, raw_dtype=p.raw_dtype())
        w.write_header_to_file(src)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        w.close()
        align = 32
        data = sum((p.nbytes + align - 1) // align * align for p in plans)
        size = os.path.getsize(src)
        os.truncate(src, (size + align - 1) // align * align + data)  # sparse: nothing is written or read
        route_llama_log(lambda _level, text: lines.append(text.decode("utf-8", "replace")))
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = file_type(quant) if quant in QUANT_TYPES else int(gguf.LlamaFileType.MOSTLY_F16)
        params.dry_run = True
        if llama_cpp.llama_model_quantize(str(src).encode(), str(Path(d) / "out.gguf").encode(),
                                          ctypes.byref(params)) != 0:
            raise EdgekitError(f"llama.cpp's dry run for {quant} failed ({''.join(lines)[-200:].strip()})",
                               "please report this with the model's config.json")
    log = "".join(lines)
    size = re.search(r"quant size\s*=\s*([\d.]+) MiB", log)
    return {"types": parse_dry_run(log), "quant_size_mib": float(size.group(1)) if size else None}


_DRY_LINE = re.compile(
    r"\[\s*\d+/\s*\d+\]\s+(\S+)\s+-\s+\[[^\]]*\],\s+type =\s+(\w+),\s+size =\s+[\d.]+ MiB(?: ->\s+[\d.]+ MiB \((\w+)\))?")


def parse_dry_run(log: str) -> dict[str, str]:
    """llama.cpp's dry-run lines (`[  12/ 339] blk.0.attn_v.weight - [ 1536,   256,     1,     1], type =
    f16, size =    0.750 MiB ->    0.211 MiB (q6_K)`) -> tensor name -> the type it ends in. Pure."""
    out = {}
    for m in _DRY_LINE.finditer(log):
        out[m.group(1)] = (m.group(3) or m.group(2)).upper()
    return out


def gguf_weights(config: dict, quant: str) -> Weights:
    tensors = gguf_tensors(config)
    types = dry_run_types(config, quant)
    tied = not any(n == "output.weight" for n, _, _ in tensors)
    # a token reads the experts it is routed to: num_experts_per_tok of n_routed_experts of each merged tensor
    routed = config["num_experts_per_tok"] / config["n_routed_experts"] if is_moe(config) else 1.0
    total = per_token = 0
    for name, shape, plan in tensors:
        kind = types.get(name) or ("F32" if len(shape) == 1 else "F16")
        b = _row_bytes(kind, shape)
        total += b
        if not (name == "token_embd.weight" and not tied) and not name.startswith("rope_freqs"):
            per_token += int(b * routed) if "_exps." in name else b
    return Weights(quant, "llama.cpp", total, per_token, dict(Counter(types.values()).most_common()),
                   "llama.cpp's quantizer (dry run) on the model's tensor shapes" +
                   (f"; per token {config['num_experts_per_tok']} of {config['n_routed_experts']} routed experts"
                    if is_moe(config) else ""))


def onnx_int4_weights(config: dict, block_size: int = 32, scale_bytes: int = 4) -> Weights:
    """MatMulNBits INT4 (edgekit export onnx --precision int4 defaults: symmetric, block 32, FP32
    scales and activations, the embedding and norms kept FP32; a separate lm_head packed too)."""
    if is_moe(config):
        raise EdgekitError("ONNX INT4 sizes for a mixture of experts are not planned", "plan GGUF quants for it")
    total = per_token = 0
    for name, shape in tensor_shapes(config).items():
        if len(shape) == 2 and name != "model.embed_tokens.weight":
            n, k = shape
            b = n * k // 2 + n * math.ceil(k / block_size) * scale_bytes
        else:
            b = math.prod(shape) * 4
        total += b
        if name != "model.embed_tokens.weight" or config.get("tie_word_embeddings"):
            per_token += b
    return Weights("ONNX-INT4", "onnxruntime", total, per_token, {"int4": 1},
                   f"MatMulNBits: 4 bits + one FP32 scale per {block_size} weights; embedding and norms FP32")


def tensorrt_weights(config: dict, quant: str, group: int = 128) -> Weights:
    """A TensorRT engine's weights: FP16 throughout (TRT-FP16), or weight-only INT4 of every linear
    layer with one FP16 scale per `group` weights (TRT-INT4: AWQ/GPTQ-style, as TensorRT-LLM and
    TensorRT Edge-LLM build them), the embedding, the output layer and the norms kept FP16."""
    if is_moe(config):
        raise EdgekitError("TensorRT sizes for a mixture of experts are not planned", "plan GGUF quants for it")
    total = per_token = 0
    for name, shape in tensor_shapes(config).items():
        n = math.prod(shape)
        linear = len(shape) == 2 and name not in ("model.embed_tokens.weight", "lm_head.weight")
        b = n // 2 + math.ceil(n / group) * 2 if quant == "TRT-INT4" and linear else n * 2
        total += b
        if name != "model.embed_tokens.weight" or config.get("tie_word_embeddings"):
            per_token += b
    what = ("FP16 weights" if quant == "TRT-FP16" else
            f"INT4 weight-only linear layers, one FP16 scale per {group}; embedding, output and norms FP16")
    return Weights(quant, "tensorrt", total, per_token, {quant: 1}, f"TensorRT engine: {what}")


def tensorrt_build_peak(config: dict, engine_bytes: int) -> int:
    """Memory the engine's build on the device needs at its peak, by the rule the device builds are
    refused with (edgekit.tensorrt_rules): plan's TRT rows are Edge-LLM engines (INT4 with one scale
    per 128 weights, as its AWQ export writes them), built from their FP16 ONNX."""
    return build_peak_bytes("edgellm", n_params(config), tensorrt_weights(config, "TRT-FP16").total_bytes,
                            engine_bytes)


def weights_for(config: dict, quant: str) -> Weights:
    if quant == "ONNX-INT4":
        return onnx_int4_weights(config)
    if quant in TENSORRT_QUANTS:
        return tensorrt_weights(config, quant)
    return gguf_weights(config, quant)


# ---------------------------------------------------------------- targets


@dataclass
class Target:
    name: str
    ram_bytes: int | None
    usable_bytes: int | None
    usable_source: str
    bandwidth_gb_s: float | None
    bandwidth_source: str
    family: str
    nvidia: bool = False             # an NVIDIA GPU (TensorRT runs there)


# ---------------------------------------------------------------- the fit rule (plan and deploy's preflight)


def usable_memory(spec_family: str, ram_bytes: int) -> tuple[int, str]:
    """What a model may use of `ram_bytes`: Apple's GPU working set cap (about 2/3 of RAM up to 36 GB,
    3/4 above: Metal's recommendedMaxWorkingSetSize), else RAM less max(1 GiB, 10 %) for the OS;
    never below 0."""
    if spec_family == "apple-m":
        share = 0.67 if ram_bytes <= 36 * 10**9 else 0.75
        return int(ram_bytes * share), f"Metal working-set cap, {share:.0%} of RAM"
    reserve = max(OS_RESERVE_BYTES, int(0.1 * ram_bytes))
    shared = " (RAM shared by CPU and GPU)" if spec_family == "jetson" else ""
    return max(0, ram_bytes - reserve), f"RAM less {reserve / 2**30:.1f} GiB for the OS{shared}"


def overhead_bytes(n_vocab: int | None) -> int:
    """What a run needs beside weights and KV cache: compute buffers and the process (a default),
    plus a ubatch (512) of float32 logits."""
    return OVERHEAD_BYTES + int(n_vocab or DEFAULT_VOCAB) * 4 * 512


def memory_need(weights_bytes: int, kv_bytes: int, n_vocab: int | None) -> int:
    """The memory a run of a model needs: weights + KV cache + overhead_bytes."""
    return weights_bytes + kv_bytes + overhead_bytes(n_vocab)


def trained_context(m: ModelSpec) -> int | None:
    """The context a model was trained for: its artifact's, else its config's max_position_embeddings."""
    if m.facts is not None:
        return m.facts.context_length
    value = (m.config or {}).get("max_position_embeddings")
    return int(value) if isinstance(value, int) and value > 0 else None


def resolve_targets(name: str) -> list[Target]:
    def of(spec) -> Target:
        ram = int(spec.ram_gb * 10**9) if spec.ram_gb else None
        usable, why = usable_memory(spec.family, ram) if ram else (None, "RAM not in the spec")
        return Target(spec.name, ram, usable, why, spec.bandwidth_gb_s,
                      f"spec sheet: {spec.sources[0]}" if spec.bandwidth_gb_s else "not in the spec", spec.family,
                      "NVIDIA" in spec.accelerator or spec.family == "jetson")

    if name == "all":
        return [of(s) for s in all_specs().values() if s.ram_gb and s.bandwidth_gb_s]
    if name == "local":
        ram = host_facts()["ram_bytes"]
        usable, why = usable_memory("linux", ram)
        bw, source = host_bandwidth_gb_s()
        return [Target("local host", ram, usable, why, bw, source, "linux")]
    if name in all_specs():
        return [of(all_specs()[name])]
    raise EdgekitError(f"unknown target '{name}'", "pass all, local, or a name from `edgekit targets`")


# ---------------------------------------------------------------- calibration


@dataclass
class Calibration:
    efficiency: dict[tuple[str, str], float] = field(default_factory=dict)   # (target, runtime) -> tg/bound
    pp_tg: dict[tuple[str, str], float] = field(default_factory=dict)
    watts: dict[tuple[str, str], float] = field(default_factory=dict)         # tg average W
    n: dict[tuple[str, str], int] = field(default_factory=dict)
    results: list = field(default_factory=list)


def calibrate(results_dir: Path | None) -> Calibration:
    """Median efficiency (achieved tg / its roofline bound), pp/tg ratio and tg watts per target x
    runtime from edgekit bench results (files or folders)."""
    cal = Calibration()
    if results_dir is None:
        return cal

    groups: dict[tuple[str, str], list] = {}
    for p in result_files([results_dir]):
        try:
            r = BenchResult.load(p)
        except EdgekitError:
            continue  # an eval result or another JSON beside them
        cal.results.append(r)
        groups.setdefault((r.target, r.runtime.name), []).append(r)
    for key, rs in groups.items():
        eff = [r.roofline.efficiency for r in rs if r.roofline and r.roofline.efficiency]
        if eff:
            cal.efficiency[key] = statistics.median(eff)
        ratios = [r.metrics.pp_tok_s.mean / r.metrics.tg_tok_s.mean for r in rs if r.metrics.pp_tok_s and
                  r.metrics.tg_tok_s]
        if ratios:
            cal.pp_tg[key] = statistics.median(ratios)
        w = [r.power.tg_avg_w for r in rs if r.power.tg_avg_w]
        if w:
            cal.watts[key] = statistics.median(w)
        cal.n[key] = len(rs)
    return cal


# ---------------------------------------------------------------- the plan


@dataclass
class Row:
    model: str
    quant: str
    runtime: str
    target: str
    n_params: int
    weights_bytes: int
    kv_bytes: int
    overhead_bytes: int
    need_bytes: int
    usable_bytes: int | None
    fits: bool | None
    why: str
    tg_tok_s: float | None
    pp_tok_s: float | None
    ttft_s: float | None
    j_per_tok: float | None
    measured_tg_tok_s: float | None
    error: float | None               # predicted / measured - 1
    sources: dict[str, str]

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("tg_tok_s", "pp_tok_s", "ttft_s", "j_per_tok", "measured_tg_tok_s", "error"):
            if d[k] is not None:
                d[k] = float(f"{d[k]:.6g}")  # six significant digits: stable, and exact enough for J/token
        return d


def fits(need: int, usable: int | None) -> tuple[bool | None, str]:
    if usable is None:
        return None, "the target's RAM is not known"
    if need <= usable:
        return True, f"fits: {need / 2**30:.2f} of {usable / 2**30:.2f} GiB usable"
    return False, f"does not fit: needs {need / 2**30:.2f} GiB, {usable / 2**30:.2f} GiB usable"


def plan(models: list[ModelSpec], targets: list[Target], quants: list[str], ctx: int = 4096, prompt: int = 512,
         cal: Calibration | None = None) -> list[Row]:
    cal = cal or Calibration()
    rows = []
    for m in models:
        for q in ([m.facts.quant or m.facts.format] if m.facts else quants):
            if m.facts is None and q in ("ONNX-INT4", *TENSORRT_QUANTS) and is_moe(m.config):
                continue
            if m.facts is not None:  # an artifact: what its file holds, not a prediction
                f = m.facts
                runtime = get_format(f.format).runtime
                w = Weights(q, runtime, f.size_bytes, f.weight_bytes_per_token, source="the file's tensors")
                kv_pos, vocab, params = f.kv_bytes_per_position, (f.details.get("tokenizer") or {}).get(
                    "n_tokens") or DEFAULT_VOCAB, f.n_params
            else:
                w = weights_for(m.config, q)
                kv_pos, vocab, params = kv_bytes_per_position(m.config), int(m.config["vocab_size"]), n_params(m.config)
            kv = kv_pos * ctx
            overhead = overhead_bytes(vocab)
            need = memory_need(w.total_bytes, kv, vocab)
            rt = get_runtime(w.runtime)
            build = tensorrt_build_peak(m.config, w.total_bytes) if rt.plan_build_peak else None
            per_token = w.per_token_bytes + kv_pos * ctx // 2
            for t in targets:
                if rt.nvidia_only and not t.nvidia:
                    ok, why = None, f"{rt.label} needs an NVIDIA GPU"
                else:
                    ok, why = fits(max(need, build or 0), t.usable_bytes)
                    if build and build > need:
                        why += f" (the engine build's peak, {build_rule('edgellm')}: {build / 2**30:.2f} GiB)"
                key = (t.name, w.runtime)
                eff = cal.efficiency.get(key, rt.plan_efficiency)
                eff_src = (f"measured: median of {cal.n[key]} result(s)" if key in cal.efficiency
                           else f"default {rt.plan_efficiency} for {w.runtime} (no results)")
                ratio = cal.pp_tg.get(key, rt.plan_pp_tg_ratio)
                tg = eff * t.bandwidth_gb_s * 1e9 / per_token if t.bandwidth_gb_s and ok else None
                pp = tg * ratio if tg else None
                ttft = prompt / pp + 1 / tg if tg else None
                watts = cal.watts.get(key)
                measured = _measured(cal, m, q, w, t)
                rows.append(Row(
                    m.name, q, w.runtime, t.name, params, w.total_bytes, kv, overhead, need,
                    t.usable_bytes, ok, why, tg, pp, ttft, watts / tg if watts and tg else None,
                    measured, tg / measured - 1 if tg and measured else None,
                    {"config": m.source, "weights": w.source, "usable": t.usable_source,
                     "bandwidth": t.bandwidth_source, "efficiency": eff_src,
                     "pp/tg": "measured" if key in cal.pp_tg else f"default {ratio:g}",
                     "power": "measured" if watts else "none measured",
                     "overhead": f"default {OVERHEAD_BYTES / 2**20:.0f} MiB + a ubatch of logits"}))
    return rows


def _measured(cal: Calibration, m: ModelSpec, quant: str, w: Weights, t: Target) -> float | None:
    """Median measured tg of results of this model (same parameter count, 0.5 %) and quant on this target."""
    want = m.facts.n_params if m.facts else n_params(m.config)
    got = [r.metrics.tg_tok_s.mean for r in cal.results
           if r.target == t.name and r.metrics.tg_tok_s and r.artifact.n_params
           and abs(r.artifact.n_params - want) <= 0.005 * want
           and (r.artifact.quant == quant or (quant == "ONNX-INT4" and r.runtime.name == w.runtime))]
    return statistics.median(got) if got else None
