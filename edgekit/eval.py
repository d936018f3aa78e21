"""`edgekit eval`: perplexity of an artifact on real English text, and its divergence from a reference.

The method is llama-perplexity's (llama.cpp tools/perplexity), so its numbers compare with
llama.cpp's on the same text: the whole text is tokenized once by the artifact's own tokenizer
(BOS first where the vocabulary adds one), cut into consecutive chunks of `ctx` tokens (the
remainder is dropped), and each chunk is evaluated in one pass from an empty cache, its first
token replaced by BOS where the vocabulary adds one. The first half of a chunk is context only;
each position of the second half but the last is scored on the token that follows it
(ctx - 1 - ctx // 2 positions a chunk). Perplexity is exp(mean negative log-likelihood), with
llama-perplexity's uncertainty (PPL x the standard error of the mean nll).

With a reference (an F16/BF16 GGUF, an FP32 ONNX export, or the Hugging Face checkpoint run
through transformers in float32), both models run on the same chunks in one process, chunk by
chunk, and only per-position scalars are kept: KL(reference || artifact) of the next-token
distributions, whether the most likely token agrees, the artifact's and the reference's nll of
the correct token, and p_artifact - p_reference of it ("Mean Δp" of llama-perplexity's KL mode).
No logit file is written: a chunk's logits (scored rows only) live while that chunk is scored. The
price is memory: both models are loaded at once. They must share the vocabulary (checked on its
size before the reference loads); the text is tokenized by the artifact's tokenizer only.

Runtimes: a GGUF through llama.cpp (edgekit's LlamaCppRunner, one batch per chunk with logits for
the scored rows only); an ONNX export through ONNX Runtime (OrtRunner) with the tokenizer.json
beside it. An export written with `--logits all` scores a chunk in one pass; one with the default
`--logits last` returns only the last position's logits, so the scored half is stepped token by
token on the KV cache (the same numbers, slower). Everything runtime-side runs in an
edgekit.native child: a crash is one error line.
"""

from __future__ import annotations

import ctypes as c
import hashlib
import time
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit import __version__, native
from edgekit.bench import default_threads, host_info
from edgekit.checkpoint import HUB_ID, read_config, resolve, weight_files
from edgekit.errors import EdgekitError
from edgekit.formats import FORMATS, all_formats, get_format, resolve_artifact
from edgekit.formats.gguf import _ggml_gguf, _InitParams, file_type_name
from edgekit.manifest import sha256_of
from edgekit.parity import _load_model, log_softmax
from edgekit.results import ArtifactInfo, EvalResult, EvalSettings, EvalText, KLInfo, RuntimeInfo, ToolInfo
from edgekit.runners.llamacpp import LlamaCppRunner, quiet_llama_logs
from edgekit.runners.onnxruntime import OrtRunner

Progress = Callable[[str, float, float], None]

TEXT_NAME = "pride_and_prejudice.txt"  # edgekit/data/: public domain; its "#" header says why
DEFAULT_CTX = 512                      # or the model's context, when smaller
MIN_CTX = 16
ROW_BLOCK = 16                         # rows scored at a time: float64 temporaries of ROW_BLOCK x vocab


# ---------------------------------------------------------------- the text


def shipped_text() -> str:
    """The text shipped with edgekit, without its header (the leading lines starting with '#')."""
    raw = resources.files("edgekit").joinpath(f"data/{TEXT_NAME}").read_text(encoding="utf-8")
    lines = raw.splitlines(keepends=True)
    start = 0
    while start < len(lines) and lines[start].startswith("#"):
        start += 1
    return "".join(lines[start:])


def read_text(path: Path | None) -> tuple[str, str]:
    """(name, text): the --text file as UTF-8, or the shipped text."""
    if path is None:
        return TEXT_NAME, shipped_text()
    path = Path(path)
    if not path.is_file():
        raise EdgekitError(f"--text {path} is not a file", "pass a UTF-8 text file, or leave --text out for "
                           f"edgekit's own ({TEXT_NAME})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise EdgekitError(f"--text {path} is not UTF-8 text (byte {e.start})", "convert it to UTF-8") from None
    if not text.strip():
        raise EdgekitError(f"--text {path} is empty", "pass a file with a few thousand words of text")
    return str(path), text


# ---------------------------------------------------------------- chunks and scores (pure numpy)


def chunk_plan(n_tokens: int, ctx: int, chunks: int | None) -> tuple[int, list[str]]:
    """How many chunks of `ctx` tokens are evaluated (and warnings)."""
    available = n_tokens // ctx
    if available < 1:
        raise EdgekitError(f"the text is {n_tokens} tokens, too short for one chunk of {ctx}",
                           f"pass a longer --text, or a smaller --ctx (at most {max(n_tokens, MIN_CTX)}; "
                           f"at least {MIN_CTX})")
    if chunks is None or chunks <= available:
        return (chunks or available), []
    return available, [f"--chunks {chunks} asked for more than the text holds: {available} chunks of {ctx} "
                       f"tokens evaluated"]


def chunk_ids(tokens: np.ndarray, i: int, ctx: int, bos: int | None) -> np.ndarray:
    chunk = np.array(tokens[i * ctx:(i + 1) * ctx], dtype=np.int64)
    if bos is not None:
        chunk[0] = bos
    return chunk


class Scores:
    """Per scored position: the artifact's nll of the correct token and, with a reference, the
    reference's nll, KL(reference || artifact), same top token, p_artifact - p_reference."""

    def __init__(self, with_reference: bool):
        self.with_reference = with_reference
        self.nll: list[np.ndarray] = []
        self.ref_nll: list[np.ndarray] = []
        self.kl: list[np.ndarray] = []
        self.same_top: list[np.ndarray] = []
        self.dp: list[np.ndarray] = []

    def add(self, rows: np.ndarray, targets: np.ndarray, ref_rows: np.ndarray | None = None) -> None:
        """`rows` [n, vocab]: the logits predicting `targets` [n]; `ref_rows` the reference's."""
        for s in range(0, len(targets), ROW_BLOCK):
            t = np.asarray(targets[s:s + ROW_BLOCK])
            at = np.arange(len(t))
            a = rows[s:s + ROW_BLOCK]
            if ref_rows is None:  # the nll alone: log-sum-exp less the target's logit, summed in float64
                m = a.max(-1, keepdims=True)
                lse = m[:, 0].astype(np.float64) + np.log(np.exp(a - m).sum(-1, dtype=np.float64))
                self.nll.append(lse - a[at, t].astype(np.float64))
                continue
            la = log_softmax(a)
            self.nll.append(-la[at, t])
            r = ref_rows[s:s + ROW_BLOCK]
            lr = log_softmax(r)
            pr = np.exp(lr)
            terms = pr * (lr - la)
            self.kl.append(np.maximum(np.where(pr > 0, terms, 0.0).sum(-1), 0.0))  # >= 0 up to rounding
            self.same_top.append(a.argmax(-1) == r.argmax(-1))
            self.ref_nll.append(-lr[at, t])
            self.dp.append(np.exp(la[at, t]) - pr[at, t])

    def perplexity(self) -> tuple[float, float, float, int]:
        """(PPL, its uncertainty, mean nll, n) as llama-perplexity computes them."""
        nll = np.concatenate(self.nll)
        n = len(nll)
        mean = float(nll.mean())
        var = float((nll ** 2).mean() - mean ** 2)
        err = float(np.sqrt(max(var, 0.0) / (n - 1))) if n > 1 else 0.0
        ppl = float(np.exp(mean))
        return ppl, ppl * err, mean, n

    def divergence(self) -> dict:
        kl = np.concatenate(self.kl)
        dp = np.concatenate(self.dp)
        nll, ref_nll = np.concatenate(self.nll), np.concatenate(self.ref_nll)
        return {"kl_divergence": {"mean": float(kl.mean()), "median": float(np.median(kl)),
                                  "p99": float(np.quantile(kl, 0.99)), "max": float(kl.max())},
                "same_top_rate": float(np.concatenate(self.same_top).mean()),
                "delta_p_mean": float(dp.mean()), "delta_p_stdev": float(dp.std(ddof=1)) if len(dp) > 1 else 0.0,
                "reference_perplexity": float(np.exp(ref_nll.mean())),
                "ln_ppl_ratio": float((nll - ref_nll).mean())}


# ---------------------------------------------------------------- what is evaluated, and against what


@dataclass(frozen=True)
class Model:
    """An artifact or a reference, as the child is told: `kind` is a format name ("gguf", "onnx")
    or "hf" (a Hugging Face checkpoint folder, run through transformers)."""

    path: str
    kind: str
    source: str = ""   # what the user passed (a hub id for "hf")


def resolve_reference(spec: str) -> Model:
    """--reference: a GGUF, an ONNX export (file or folder), or a Hugging Face checkpoint (a folder
    with config.json, or a hub id in the local cache)."""
    path = Path(spec).expanduser()
    holds_model = path.is_dir() and any(fmt.find_in(path) for fmt in all_formats())
    if path.is_file() or holds_model:
        model, fmt = resolve_artifact(path)
        return Model(str(model), fmt.name, spec)
    if path.is_dir() and (path / "config.json").is_file():
        weight_files(path)  # refused here when it has no safetensors
        return Model(str(path), "hf", spec)
    if path.is_dir():
        raise EdgekitError(f"--reference {spec} holds no .gguf, no .onnx and no config.json",
                           "pass an F16 GGUF, an FP32 ONNX export folder or a Hugging Face checkpoint folder")

    looks_local = spec.startswith(("/", "./", "../", "~")) or spec.count("/") != 1 or \
        path.suffix.lower() in (".gguf", ".onnx", ".json", ".safetensors")
    if looks_local or not HUB_ID.match(spec):
        raise EdgekitError(f"--reference {spec} does not exist",
                           "pass an F16 GGUF, an FP32 ONNX export folder or a Hugging Face checkpoint folder")
    folder, _hub = resolve(spec)
    return Model(str(folder), "hf", spec)


def check_options(ctx: int | None, chunks: int | None, threads: int | None) -> None:
    if chunks is not None and chunks < 1:
        raise EdgekitError(f"--chunks must be at least 1 (got {chunks})", "pass --chunks 1 or more, or leave it out "
                           "(every chunk the text holds)")
    if ctx is not None and ctx < MIN_CTX:
        raise EdgekitError(f"--ctx {ctx} is below {MIN_CTX} tokens", f"pass --ctx {MIN_CTX} or more (default: the "
                           f"model's context, at most {DEFAULT_CTX})")
    if threads is not None and threads < 1:
        raise EdgekitError(f"--threads must be at least 1 (got {threads})", "pass --threads 1 or more, or leave it out")


def library_of(kind: str) -> str:
    """The library a crash in loading a model of this kind would come from."""
    return get_format(kind).library if kind in FORMATS else "transformers"  # "hf": a checkpoint


def run_eval(artifact: Path, reference: str | None = None, text: Path | None = None, chunks: int | None = None,
             ctx: int | None = None, threads: int | None = None, progress: Progress | None = None):
    """Check the inputs here, then evaluate in an edgekit.native child; returns an EvalResult."""
    check_options(ctx, chunks, threads)
    path, fmt = resolve_artifact(Path(artifact))
    name, body = read_text(text)
    ref = resolve_reference(reference) if reference else None
    for model, kind in ((path, fmt.name), *(((Path(ref.path), ref.kind),) if ref else ())):
        if kind in FORMATS and get_format(kind).reads_header_only:  # truncated or corrupt: its own line,
            get_format(kind).check(model)                            # before a child loads it
    libraries = [library_of(fmt.name)] + ([library_of(ref.kind)] if ref and ref.kind != fmt.name else [])
    what = f"the evaluation of {path.name}" + (f" against {Path(ref.path).name}" if ref else "")
    return native.call("edgekit.eval:evaluate", Model(str(path), fmt.name, str(artifact)), name, body, ref, ctx,
                       chunks, threads, library=" / ".join(libraries), what=what, progress=progress)


# ---------------------------------------------------------------- the models, in the child


class _Loaded:
    """A loaded model for eval: n_vocab; bos (None where the vocabulary adds none); tokenize(text) (the
    artifact's tokenizer); rows(chunk, first) -> float32 logits [len(chunk) - 1 - first, n_vocab], the
    rows predicting chunk[first + 1:], from an empty cache; notes: extra EvalSettings fields."""

    n_vocab: int
    bos: int | None
    notes: dict

    def tokenize(self, text: str) -> np.ndarray:
        raise NotImplementedError

    def rows(self, chunk: np.ndarray, first: int) -> np.ndarray:
        raise NotImplementedError

    def n_params(self) -> int | None:
        return None

    def close(self) -> None:
        pass


@dataclass
class Meta:
    """What the result says of a model, read before it loads (n_params may come after)."""

    format: str
    quant: str | None
    size_bytes: int
    n_params: int | None
    architecture: str | None
    context: int | None          # the context it was trained for; None: unknown
    n_vocab: int | None          # None: unknown before load
    external_data: tuple[str, ...] = ()


# enum gguf_type -> ggml's getter and its C type (a getter of another type aborts, so the type is read first)
_GGUF_INTS = {0: ("u8", "c_uint8"), 1: ("i8", "c_int8"), 2: ("u16", "c_uint16"), 3: ("i16", "c_int16"),
              4: ("u32", "c_uint32"), 5: ("i32", "c_int32"), 10: ("u64", "c_uint64"), 11: ("i64", "c_int64")}
_GGUF_STRING, _GGUF_ARRAY = 8, 9  # enum gguf_type


def gguf_meta(path: Path) -> Meta | None:
    """The few header values eval needs, through ggml's C GGUF reader (milliseconds, where gguf-py's
    reader takes seconds on a 262k-token vocabulary); None where that library is not there."""
    lib = _ggml_gguf()
    if lib is None:
        return None
    for name, args, res in (("gguf_find_key", [c.c_void_p, c.c_char_p], c.c_int64),
                            ("gguf_get_kv_type", [c.c_void_p, c.c_int64], c.c_int),
                            ("gguf_get_val_str", [c.c_void_p, c.c_int64], c.c_char_p),
                            ("gguf_get_arr_n", [c.c_void_p, c.c_int64], c.c_size_t),
                            *((f"gguf_get_val_{t}", [c.c_void_p, c.c_int64], getattr(c, ctype))
                              for t, ctype in _GGUF_INTS.values())):
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, res
    ctx = lib.gguf_init_from_file(str(path).encode(), _InitParams(True, None))
    if not ctx:
        return None  # llama.cpp's load then says what is wrong
    try:
        def key(name: str):
            i = lib.gguf_find_key(ctx, name.encode())
            return None if i < 0 else (i, lib.gguf_get_kv_type(ctx, i))

        def integer(name: str) -> int | None:
            k = key(name)
            if not k or k[1] not in _GGUF_INTS:
                return None
            return int(getattr(lib, f"gguf_get_val_{_GGUF_INTS[k[1]][0]}")(ctx, k[0]))

        arch_key = key("general.architecture")
        arch = None
        if arch_key and arch_key[1] == _GGUF_STRING:
            arch = (lib.gguf_get_val_str(ctx, arch_key[0]) or b"").decode()
        tokens = key("tokenizer.ggml.tokens")
        ftype = integer("general.file_type")
        return Meta(format="gguf", quant=file_type_name(ftype) if ftype is not None else None,
                    size_bytes=path.stat().st_size, n_params=None, architecture=arch,
                    context=integer(f"{arch}.context_length") if arch else None,
                    n_vocab=int(lib.gguf_get_arr_n(ctx, tokens[0])) if tokens and tokens[1] == _GGUF_ARRAY else None)
    finally:
        lib.gguf_free(ctx)


FAST_META = {"gguf": gguf_meta}  # format -> a reader of its header alone, faster than its facts()


def model_meta(model: Model) -> Meta:
    """A GGUF's from its header (gguf_meta), an ONNX export's from edgekit inspect's facts and its
    genai_config.json, a checkpoint's from config.json."""

    path = Path(model.path)
    if model.kind == "hf":
        config = read_config(path)
        text = config.get("text_config") or {}
        vocab = config.get("vocab_size") or text.get("vocab_size")
        return Meta(format="hf", quant="F32", size_bytes=sum(f.stat().st_size for f in weight_files(path)),
                    n_params=None, architecture=(config.get("architectures") or [config.get("model_type")])[0],
                    context=config.get("max_position_embeddings") or text.get("max_position_embeddings"),
                    n_vocab=int(vocab) if vocab else None)
    fast = FAST_META.get(model.kind)
    found = fast(path) if fast else None
    if found is not None:
        return found
    facts = get_format(model.kind).facts(path)
    return Meta(format=model.kind, quant=facts.quant, size_bytes=facts.size_bytes, n_params=facts.n_params,
                architecture=facts.architecture, context=int(facts.context_length) if facts.context_length else None,
                n_vocab=int(facts.n_vocab) if facts.n_vocab else None, external_data=tuple(facts.external_data))


class _GGUF(_Loaded):
    def __init__(self, path: Path, threads: int, ctx: int):
        self.runner = LlamaCppRunner(path, threads=threads, gpu_layers=0, ctx=ctx, n_batch=ctx, n_ubatch=ctx,
                                     flash_attn="auto")
        self.runner.load()
        self.n_vocab = self.runner.n_vocab
        self.bos = self.runner.bos if self.runner.add_bos else None
        self.notes = {}

    def tokenize(self, text: str) -> np.ndarray:
        """llama.cpp's tokenizer, as llama-perplexity calls it: special tokens added (BOS where the
        vocabulary adds one), special-token text not parsed."""
        import llama_cpp as L

        data = text.encode("utf-8")
        size = len(data) + 16
        buf = (L.llama_token * size)()
        n = L.llama_tokenize(self.runner.vocab, data, len(data), buf, size, True, False)
        if n < 0:
            size = -n
            buf = (L.llama_token * size)()
            n = L.llama_tokenize(self.runner.vocab, data, len(data), buf, size, True, False)
        return np.array(buf[:n], dtype=np.int64)

    def rows(self, chunk: np.ndarray, first: int) -> np.ndarray:
        """One batch of the whole chunk from an empty cache; logits only for the scored rows."""
        import llama_cpp as L

        r, n = self.runner, len(chunk)
        r.clear()
        batch = L.llama_batch_init(n, 0, 1)
        try:
            batch.n_tokens = n
            for i, token in enumerate(chunk):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = int(token), i, 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = first <= i < n - 1
            rc = L.llama_decode(r.context, batch)
            if rc != 0:
                raise EdgekitError(f"llama_decode failed with code {rc} on a chunk of {n} tokens",
                                   "lower --ctx, or free memory")
            L.llama_synchronize(r.context)
            out = np.ctypeslib.as_array(L.llama_get_logits(r.context), shape=(n - 1 - first, self.n_vocab))
            return np.array(out, dtype=np.float32)
        finally:
            L.llama_batch_free(batch)

    def n_params(self) -> int | None:
        import llama_cpp as L

        return int(L.llama_model_n_params(self.runner.model)) if self.runner.model else None

    def close(self) -> None:
        self.runner.close()


class _Onnx(_Loaded):
    def __init__(self, path: Path, threads: int, ctx: int):
        self.runner = OrtRunner(path.parent, threads=threads, model_file=path.name, n_batch=ctx)
        self.runner.load()
        self.n_vocab = self.runner.n_vocab
        self.notes = {"onnx_logits": "last" if self.runner.last_logits_only else "all"}
        self._tokenizer = None
        self.bos = None

    def tokenize(self, text: str) -> np.ndarray:
        """The tokenizer.json beside the model (`tokenizers`), special tokens added as the
        tokenizer's post-processor adds them (BOS where it adds one)."""
        from tokenizers import Tokenizer

        file = self.runner.folder / "tokenizer.json"
        if not file.is_file():
            raise EdgekitError(f"no tokenizer.json beside {self.runner.path.name} in {self.runner.folder}",
                               "pass the whole folder edgekit export onnx wrote (it copies the tokenizer files)")
        try:
            tok = Tokenizer.from_file(str(file))
        except Exception as e:
            raise EdgekitError(f"{file} cannot be read ({' '.join(str(e).split())[:160]})",
                               "re-export the model, or copy the checkpoint's tokenizer.json beside it") from None
        probe_plain, probe = tok.encode("a", add_special_tokens=False).ids, tok.encode("a", add_special_tokens=True).ids
        if len(probe) > len(probe_plain) and probe[1:1 + len(probe_plain)] == probe_plain:
            self.bos = int(probe[0])
        ids = tok.encode(text, add_special_tokens=False).ids
        return np.array(([self.bos] if self.bos is not None else []) + ids, dtype=np.int64)

    def rows(self, chunk: np.ndarray, first: int) -> np.ndarray:
        r, n = self.runner, len(chunk)
        cache = r.empty_cache(n)
        if not r.last_logits_only:  # every position's logits: one pass
            logits, _ = r.forward(chunk[:n - 1], cache, 0)
            return np.array(logits.numpy()[0, first:], dtype=np.float32)
        # last-position logits only (`--logits last`): the context half in one pass, then one step per scored row
        out = np.empty((n - 1 - first, self.n_vocab), dtype=np.float32)
        logits, cache = r.forward(chunk[:first + 1], cache, 0)
        out[0] = r.last_row(logits)
        for k, pos in enumerate(range(first + 1, n - 1), start=1):
            logits, cache = r.forward(chunk[pos:pos + 1], cache, pos)
            out[k] = r.last_row(logits)
        return out

    def close(self) -> None:
        self.runner.close()


class _HF(_Loaded):
    """A Hugging Face checkpoint through transformers, float32 (a reference only: no tokenizer here)."""

    def __init__(self, path: Path, threads: int, ctx: int):
        self.model = _load_model(path, threads)
        self.n_vocab = int(self.model.get_output_embeddings().weight.shape[0])
        self.bos, self.notes = None, {}

    def rows(self, chunk: np.ndarray, first: int) -> np.ndarray:
        import torch

        with torch.no_grad():
            logits = self.model(torch.tensor(chunk[None, :len(chunk) - 1], dtype=torch.long)).logits
        return logits[0, first:].float().numpy()

    def n_params(self) -> int | None:
        return sum(p.numel() for p in self.model.parameters()) if self.model is not None else None

    def close(self) -> None:
        self.model = None


def _open(model: Model, threads: int, ctx: int) -> _Loaded:
    return {"gguf": _GGUF, "onnx": _Onnx, "hf": _HF}[model.kind](Path(model.path), threads, ctx)


def _infos(model: Model, loaded: _Loaded, meta: Meta):
    """(ArtifactInfo, RuntimeInfo) as bench writes them ("hf": the checkpoint through transformers)."""
    path = Path(model.path)
    fields = dict(format=meta.format, quant=meta.quant, size_bytes=meta.size_bytes,
                  n_params=meta.n_params or loaded.n_params(), architecture=meta.architecture)
    if model.kind == "hf":
        return (ArtifactInfo(path=model.source or str(path), sha256=None, **fields),
                RuntimeInfo(name="transformers", version=f"transformers {metadata.version('transformers')}, torch "
                            f"{metadata.version('torch')}", backend="CPU", build_flags="float32"))

    form, runner = get_format(model.kind), loaded.runner
    extra = runner.runtime_facts() if hasattr(runner, "runtime_facts") else {"runtime": {}, "artifact": {}}
    sha256 = sha256_of(path, 8 << 20, *[path.parent / e for e in meta.external_data])
    artifact = ArtifactInfo(path=str(path), sha256=sha256, **fields, **extra["artifact"])
    runtime = RuntimeInfo(name=form.runtime, version=form.runtime_version(), backend=runner.backend(),
                          build_flags=runner.system_info(), **extra["runtime"])
    return artifact, runtime


def evaluate(artifact: Model, text_name: str, text: str, reference: Model | None = None, ctx: int | None = None,
             chunks: int | None = None, threads: int | None = None, progress: Progress | None = None):
    """The evaluation, in this process (what the native child runs): see the module's docstring."""
    t0 = time.perf_counter()
    check_options(ctx, chunks, threads)
    threads = threads or default_threads()
    if "gguf" in (artifact.kind, reference.kind if reference else None):
        quiet_llama_logs()
    meta = model_meta(artifact)
    context = meta.context
    if ctx is None:
        ctx = min(context, DEFAULT_CTX) if context else DEFAULT_CTX
    elif context and ctx > context:
        raise EdgekitError(f"--ctx {ctx} is more than {Path(artifact.path).name}'s context of {context} tokens",
                           f"pass --ctx {context} or less")
    loaded = ref = None
    try:
        loaded = _open(artifact, threads, ctx)
        tokens = loaded.tokenize(text)
        n_chunks, warnings = chunk_plan(len(tokens), ctx, chunks)
        ref_info = None
        if reference is not None:
            ref_meta = model_meta(reference)
            if ref_meta.n_vocab is not None and ref_meta.n_vocab != loaded.n_vocab:  # before it loads
                raise _vocab_error(artifact, loaded.n_vocab, reference, ref_meta.n_vocab)
            if ref_meta.context and ctx > ref_meta.context:
                raise EdgekitError(f"--ctx {ctx} is more than the reference's context of {ref_meta.context} tokens",
                                   f"pass --ctx {ref_meta.context} or less")
            ref = _open(reference, threads, ctx)
            if ref.n_vocab != loaded.n_vocab:
                raise _vocab_error(artifact, loaded.n_vocab, reference, ref.n_vocab)
            try:  # a checkpoint reference (transformers) is read through the artifact's tokens
                ref_tokens = ref.tokenize(text)
            except NotImplementedError:
                ref_tokens = None
            if ref_tokens is not None:
                check_same_tokens(tokens, ref_tokens, artifact, reference)
            ref_info = _infos(reference, ref, ref_meta)
        first = ctx // 2
        scores = Scores(ref is not None)
        label = f"eval {Path(artifact.path).name}"
        for i in range(n_chunks):
            chunk = chunk_ids(tokens, i, ctx, loaded.bos)
            targets = chunk[first + 1:]
            rows = loaded.rows(chunk, first)
            ref_rows = ref.rows(chunk, first) if ref is not None else None
            scores.add(rows, targets, ref_rows)
            del rows, ref_rows
            if progress:
                progress(label, i + 1, n_chunks)
        art_info, runtime = _infos(artifact, loaded, meta)
    finally:
        for m in (loaded, ref):
            if m is not None:
                m.close()
    ppl, err, nll, n = scores.perplexity()
    if not np.isfinite(ppl):
        warnings.append("the perplexity is not finite: the artifact gave a correct token probability 0 "
                        "(non-finite logits?)")
    kl = KLInfo(reference=ref_info[0], reference_runtime=ref_info[1], **scores.divergence()) if ref_info else None
    backend = runtime.backend
    return EvalResult(
        tool=ToolInfo(version=__version__), host=host_info([backend] if backend != "CPU" else []),
        artifact=art_info, runtime=runtime,
        text=EvalText(name=text_name, sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), chars=len(text),
                      tokens=len(tokens)),
        ctx=ctx, chunks=n_chunks, n_tokens=n, perplexity=ppl, perplexity_stderr=err, nll_mean=nll,
        settings=EvalSettings(threads=threads, add_bos=loaded.bos is not None, scored_per_chunk=ctx - 1 - first,
                              **loaded.notes),
        kl=kl, seconds=round(time.perf_counter() - t0, 3), warnings=warnings)


def check_same_tokens(tokens: np.ndarray, ref_tokens: np.ndarray, artifact: Model, reference: Model) -> None:
    """The reference must read the text as the same token ids: a vocabulary of the same size can be
    another one (another architecture's), and KL over it would compare unrelated tokens."""
    n = max(len(tokens), len(ref_tokens))
    shared = min(len(tokens), len(ref_tokens))
    differ = int(np.count_nonzero(np.asarray(tokens[:shared]) != np.asarray(ref_tokens[:shared]))) + n - shared
    if differ:
        raise EdgekitError(f"the reference {Path(reference.path).name} tokenizes the text differently from "
                           f"{Path(artifact.path).name} ({differ} of {n} tokens differ): its vocabulary is another "
                           "one, so their next-token distributions cannot be compared",
                           "pass a reference of the same model (its F16 GGUF, FP32 ONNX export or its checkpoint)")


def _vocab_error(artifact: Model, n_art: int, reference: Model, n_ref: int) -> EdgekitError:
    return EdgekitError(f"the reference {Path(reference.path).name} has a vocabulary of {n_ref} tokens and "
                        f"{Path(artifact.path).name} one of {n_art}: their next-token distributions cannot be compared",
                        "pass a reference of the same model (its F16 GGUF, FP32 ONNX export or its checkpoint)")
