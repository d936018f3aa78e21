"""Open a Hugging Face checkpoint (local folder or hub id) and stream its tensors.

Nothing here loads a whole model: tensor names, shapes and dtypes come from the
safetensors headers, and `read_tensor` opens the file for one tensor at a time
so that converting a 7B model never needs the model in RAM.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.architectures import Architecture, architecture_of, tensor_shapes
from edgekit.errors import EdgekitError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.txt"]


@dataclass
class Checkpoint:
    path: Path
    source: str                      # what the user passed: a folder or a hub id
    hub_id: str | None
    config: dict
    arch: Architecture
    tensor_files: dict[str, Path]    # HF tensor name -> safetensors file
    tensor_info: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)  # name -> (shape, dtype)

    @property
    def n_params(self) -> int:
        return sum(_numel(shape) for shape, _ in self.tensor_info.values())

    @property
    def weight_bytes(self) -> int:
        return sum(self.path_sizes.values())

    @property
    def path_sizes(self) -> dict[Path, int]:
        return {p: p.stat().st_size for p in set(self.tensor_files.values())}

    @property
    def source_dtype(self) -> str:
        dtypes = {d for (_, d) in self.tensor_info.values()}
        return dtypes.pop() if len(dtypes) == 1 else "mixed"

    def read_tensor(self, name: str):
        """One tensor as a torch tensor in its stored dtype (file opened and closed per call)."""
        from safetensors import SafetensorError, safe_open

        path = self.tensor_files[name]
        try:
            with safe_open(str(path), framework="pt") as f:
                return f.get_tensor(name)
        except (SafetensorError, OSError, RuntimeError) as e:
            raise EdgekitError(f"cannot read tensor {name} from {path.name}: {_short(e)}",
                               "the weights file is truncated or corrupt; re-download or re-save the checkpoint") from None


def resolve(spec: str) -> tuple[Path, str | None]:
    """A local folder as is; a hub id through the Hugging Face cache (downloading when online)."""
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise EdgekitError(f"{spec} is a file, not a checkpoint folder",
                               "pass the folder that holds config.json and the safetensors files")
        return path, None
    if not HUB_ID.match(spec):
        raise EdgekitError(f"checkpoint '{spec}' not found: no such folder and not a hub id (org/name)",
                           "pass a local checkpoint folder or a Hugging Face hub id")
    from huggingface_hub import snapshot_download

    try:
        cached = Path(snapshot_download(spec, allow_patterns=HUB_PATTERNS, local_files_only=True))
        if _complete(cached):
            return cached, spec
    except Exception:
        pass  # not cached, or only partly (an interrupted download, a tokenizer-only fetch): try the network
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise EdgekitError(f"hub id '{spec}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set",
                           "unset HF_HUB_OFFLINE to download it, or pass a local checkpoint folder")
    try:
        return Path(snapshot_download(spec, allow_patterns=HUB_PATTERNS)), spec
    except Exception as e:  # network errors, 404, gated repos: all end the same way for the user
        raise EdgekitError(f"cannot download hub id '{spec}': {_short(e)}",
                           "check the id and your network (offline machines need a local folder or a filled HF cache)") from None


def _complete(path: Path) -> bool:
    """A cached snapshot with config, tokenizer and every weights file the index names."""
    if not (path / "config.json").is_file() or not (path / "tokenizer.json").is_file():
        return False
    try:
        return bool(weight_files(path))
    except EdgekitError:
        return False


def read_config(path: Path) -> dict:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise EdgekitError(f"no config.json in {path}", "pass a Hugging Face checkpoint folder (config.json + safetensors)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgekitError(f"{cfg_path} is not valid JSON ({_short(e)})", "re-download or re-save the checkpoint") from None
    if not isinstance(config, dict):
        raise EdgekitError(f"{cfg_path} does not hold a JSON object", "re-download or re-save the checkpoint")
    return config


def weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise EdgekitError(f"{index} is corrupt ({_short(e)})", "re-download or re-save the checkpoint") from None
        files = sorted({path / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise EdgekitError(f"weights file {missing[0]} named in {index.name} is missing",
                               "finish the download or re-save the checkpoint")
        return files
    files = sorted(path.glob("*.safetensors"))
    if not files:
        other = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = (f"found {other[0]}: only safetensors weights are read; re-save with save_pretrained(safe_serialization=True)"
                if other else "the folder needs model.safetensors (or shards with an index)")
        raise EdgekitError(f"no safetensors weights in {path}", hint)
    return files


def open_checkpoint(spec: str) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    path, hub_id = resolve(spec)
    config = read_config(path)
    arch = architecture_of(config)
    tensor_files: dict[str, Path] = {}
    info: dict[str, tuple[tuple[int, ...], str]] = {}
    for f in weight_files(path):
        try:
            with safe_open(str(f), framework="pt") as st:
                for name in st.keys():
                    sl = st.get_slice(name)
                    tensor_files[name] = f
                    info[name] = (tuple(sl.get_shape()), sl.get_dtype())
        except (SafetensorError, OSError) as e:
            raise EdgekitError(f"weights file {f.name} is truncated or corrupt ({_short(e)})",
                               "re-download or re-save the checkpoint") from None
    expected = tensor_shapes(config)
    for name, shape in expected.items():
        if name not in info:
            raise EdgekitError(f"tensor {name} is missing from the weights",
                               "the checkpoint does not match its config.json; re-download it")
        if tuple(info[name][0]) != tuple(shape):
            raise EdgekitError(f"tensor {name} has shape {list(info[name][0])}, config.json implies {list(shape)}",
                               "the checkpoint does not match its config.json; re-download it")
    return Checkpoint(path=path, source=spec, hub_id=hub_id, config=config, arch=arch,
                      tensor_files=tensor_files, tensor_info=info)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) < 200 else text[:197] + "..."


def model_basename(ckpt: Checkpoint) -> str:
    """The checkpoint's name for its export files: the hub id's last part or the folder's name."""
    raw = ckpt.hub_id.split("/")[-1] if ckpt.hub_id else Path(ckpt.source).expanduser().resolve().name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-.") or "model"
