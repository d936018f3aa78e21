"""TensorRT optimisation profiles of an ONNX decoder, from its own symbolic dims: what a
TensorRT engine build (converters.tensorrt, trtexec on a device) and ONNX Runtime's TensorRT
execution provider (runners.onnxruntime) are given, so that neither builds for shapes it then
leaves.

- `graph_inputs(model)`: an ONNX model proto's inputs as GraphInput (name, dims, type).
- `derive_profiles(inputs, max_prompt, max_context)`: "prefill" (batch 1, 1..max_prompt tokens,
  an empty cache) and "decode" (batch 1, one token, a cache of 0..max_context-1), for every
  dynamic input; the dims are batch_size, sequence_length, past_sequence_length and sums of
  them; the attention mask is [batch, past + sequence] whatever its dim is called; any other dim
  is refused.
- `shapes_arg(profile, 0|1|2)`: "name:1x1,name2:1x2x0x64" (min, opt, max), trtexec's spelling.
- `ort_tensorrt_options(profiles)`: ONNX Runtime TensorRT EP's trt_profile_{min,opt,max}_shapes,
  every profile in one string (an input named again starts the next profile). ORT only warns
  on a malformed one and drops it, so these strings are built here, never by hand.
Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgekit.errors import EdgekitError

BATCH, SEQ, PAST = "batch_size", "sequence_length", "past_sequence_length"


@dataclass(frozen=True)
class GraphInput:
    name: str
    dims: tuple[int | str, ...]  # an int, or a symbolic dim ("past_sequence_length + sequence_length")
    elem_type: int               # onnx TensorProto type


@dataclass(frozen=True)
class Profile:
    """One optimisation profile: input name -> (min, opt, max) shapes."""

    name: str
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "shapes": {k: {"min": list(v[0]), "opt": list(v[1]), "max": list(v[2])}
                                              for k, v in self.shapes.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> Profile:
        return cls(d["name"], {k: (tuple(v["min"]), tuple(v["opt"]), tuple(v["max"])) for k, v in d["shapes"].items()})


def _dim_value(dim: int | str, values: dict[str, int], input_name: str) -> int:
    if isinstance(dim, int) and dim > 0:
        return dim
    terms = [t.strip() for t in str(dim).split("+")]
    total = 0
    for t in terms:
        if t in values:
            total += values[t]
        else:
            raise EdgekitError(f"input {input_name} has a dim '{dim}' edgekit cannot size a profile for",
                               f"export the ONNX with edgekit export onnx (dims: {BATCH}, {SEQ}, {PAST})")
    return total


def _shape(i: GraphInput, values: dict[str, int]) -> tuple[int, ...]:
    if i.name == "attention_mask" and len(i.dims) == 2:  # [batch, past + sequence], whatever the dim's name
        return (_dim_value(i.dims[0], values, i.name), values[PAST] + values[SEQ])
    return tuple(_dim_value(d, values, i.name) for d in i.dims)


def derive_profiles(inputs: list[GraphInput], max_prompt: int, max_context: int,
                    opt_prompt: int | None = None, opt_context: int | None = None,
                    chunked_prefill: bool = False) -> list[Profile]:
    """The prefill and decode profiles of a decoder graph (see the module's doc). Opt points: the
    prefill's at `opt_prompt` (default max_prompt), the decode's at a cache of `opt_context`
    (default half of max_context). Every dynamic input gets shapes; static ones none.
    `chunked_prefill`: the prefill's cache may already hold up to max_context - max_prompt
    positions (a prompt fed in chunks, as ONNX Runtime's runner does), not only none."""
    if max_prompt < 1 or max_context < 2 or max_prompt > max_context:
        raise EdgekitError(f"--max-prompt {max_prompt} and --max-context {max_context} make no profile",
                           "pass 1 <= --max-prompt <= --max-context, --max-context >= 2")
    opt_prompt = opt_prompt or max_prompt
    opt_context = opt_context if opt_context is not None else max_context // 2
    if not 1 <= opt_prompt <= max_prompt or not 0 <= opt_context <= max_context - 1:
        raise EdgekitError("an opt point lies outside its profile", "keep it within --max-prompt / --max-context")
    points = {
        "prefill": ({BATCH: 1, SEQ: 1, PAST: 0}, {BATCH: 1, SEQ: opt_prompt, PAST: 0},
                    {BATCH: 1, SEQ: max_prompt, PAST: max_context - max_prompt if chunked_prefill else 0}),
        "decode": ({BATCH: 1, SEQ: 1, PAST: 0}, {BATCH: 1, SEQ: 1, PAST: opt_context},
                   {BATCH: 1, SEQ: 1, PAST: max_context - 1}),
    }
    dynamic = [i for i in inputs if any(not (isinstance(d, int) and d > 0) for d in i.dims)]
    if not any(i.name == "input_ids" for i in dynamic):
        raise EdgekitError("the graph has no dynamic input_ids", "pass a decoder exported by edgekit export onnx")
    return [Profile(name, {i.name: tuple(_shape(i, v) for v in vals) for i in dynamic})
            for name, vals in points.items()]


def shapes_arg(profile: Profile, which: int) -> str:
    return ",".join(f"{name}:{'x'.join(map(str, s[which]))}" for name, s in profile.shapes.items())


def graph_inputs(model) -> list[GraphInput]:
    """The inputs of an ONNX model proto (weights not needed)."""
    out = []
    for i in model.graph.input:
        t = i.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim)
        out.append(GraphInput(i.name, dims, t.elem_type))
    return out


def ort_tensorrt_options(profiles: list[Profile]) -> dict[str, str]:
    """trt_profile_min_shapes / _opt_ / _max_ for ONNX Runtime's TensorRT EP: each profile's
    shapes in trtexec's spelling, the profiles one after the other in one string."""
    return {f"trt_profile_{which}_shapes": ",".join(shapes_arg(p, n) for p in profiles)
            for n, which in enumerate(("min", "opt", "max"))}
