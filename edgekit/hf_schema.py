"""config.json and tokenizer.json of a Hugging Face checkpoint, validated once against the fields
edgekit reads (pydantic), for every command that reads them.

Contract: `validate_config(config, where)` returns the config unchanged or raises one
EdgekitError naming the file, the field, what it must be and what it holds; so does
`read_tokenizer_json(folder)`. Unknown fields are kept (real configs carry many); the fields the
exports use must have the types and ranges a decoder needs, and the config's `model_type` must be
the one its `architectures` class implies (optimum builds its graph from model_type, llama.cpp
from the class: a Qwen2 checkpoint labelled `llama` would lose its q/k/v biases in ONNX).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from edgekit.errors import EdgekitError
from edgekit.pretokenizers import SUPPORTED_PRE

PositiveInt = Annotated[StrictInt, Field(gt=0)]
Positive = Annotated[Union[StrictFloat, StrictInt], Field(gt=0)]


class DecoderConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    architectures: list[StrictStr] = Field(min_length=1)
    model_type: StrictStr
    hidden_size: PositiveInt
    intermediate_size: PositiveInt
    num_hidden_layers: PositiveInt
    num_attention_heads: PositiveInt
    num_key_value_heads: PositiveInt | None = None
    head_dim: PositiveInt | None = None
    vocab_size: PositiveInt
    rms_norm_eps: Positive
    max_position_embeddings: PositiveInt
    rope_theta: Positive | None = None
    tie_word_embeddings: StrictBool = False
    attention_bias: StrictBool = False

    @model_validator(mode="after")
    def _heads(self):
        kv = self.num_key_value_heads or self.num_attention_heads
        if self.num_attention_heads % kv:
            raise ValueError(f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {kv}")
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                             f"{self.num_attention_heads} (and no head_dim is given)")
        return self


def validate_config(config: Any, where: str = "config.json") -> dict:
    """`config` (parsed config.json) if its types and ranges are what a decoder needs, else one
    EdgekitError. Which classes are supported, and model_type agreeing with the class, is
    edgekit.architectures.architecture_of's check."""
    if not isinstance(config, dict):
        raise EdgekitError(f"{where} does not hold a JSON object", "re-download or re-save the checkpoint")
    try:
        DecoderConfig.model_validate(config)
    except ValidationError as e:
        raise EdgekitError(f"{where}: {_first_problem(e)}",
                           "fix config.json, or re-save the checkpoint with transformers (save_pretrained)") from None
    return config


# ---------------------------------------------------------------- tokenizer.json


class _AddedToken(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: Annotated[StrictInt, Field(ge=0)]
    content: StrictStr
    special: StrictBool = False


class _BPE(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["BPE"]
    vocab: dict[str, Annotated[StrictInt, Field(ge=0)]]
    merges: list[Any] = []


class _Pattern(BaseModel):
    model_config = ConfigDict(extra="forbid")
    Regex: StrictStr | None = None
    String: StrictStr | None = None


class _PreTokenizer(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: StrictStr
    pattern: _Pattern | None = None
    pretokenizers: list["_PreTokenizer"] | None = None


class TokenizerJson(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: _BPE
    added_tokens: list[_AddedToken] = []
    pre_tokenizer: _PreTokenizer | None = None


def read_tokenizer_json(path: Path) -> dict:
    """tokenizer.json of a checkpoint folder, parsed and validated (a byte-level BPE with the fields
    the exports read), as a plain dict."""
    path = Path(path)
    tj_path = path / "tokenizer.json"
    if not tj_path.is_file():
        extra = " (found tokenizer.model: SentencePiece tokenizers are not supported)" \
            if (path / "tokenizer.model").is_file() else ""
        raise EdgekitError(f"no tokenizer.json in {path}{extra}",
                           "save the tokenizer with transformers (tokenizer.save_pretrained) into the checkpoint "
                           "folder")
    try:
        tj = json.loads(tj_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EdgekitError(f"{tj_path} is not valid JSON ({' '.join(str(e).split())})",
                           "re-download or re-save the tokenizer") from None
    if not isinstance(tj, dict) or not isinstance(tj.get("model"), dict):
        raise EdgekitError(f"{tj_path} has no tokenizer model", "re-download or re-save the tokenizer")
    if tj["model"].get("type") != "BPE":
        raise EdgekitError(f"tokenizer model type {tj['model'].get('type')!r} is not supported",
                           f"byte-level BPE tokenizers are supported: {SUPPORTED_PRE}")
    try:
        TokenizerJson.model_validate(tj)
    except ValidationError as e:
        raise EdgekitError(f"{tj_path}: {_first_problem(e)}", "re-download or re-save the tokenizer") from None
    return tj


def check_tokenizer_fits(tokenizer_json: dict, vocab_size: int) -> int:
    """The tokenizer's highest id + 1, refused when it is beyond the model's vocab_size."""
    ids = list(tokenizer_json["model"]["vocab"].values()) + [t["id"] for t in tokenizer_json.get("added_tokens", [])]
    top = max(ids) + 1 if ids else 0
    if top > vocab_size:
        raise EdgekitError(f"tokenizer has ids up to {top - 1}, beyond the model's vocab_size {vocab_size}",
                           "the tokenizer does not belong to this checkpoint")
    return top


def _first_problem(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "the file"
    got = err.get("input")
    shown = json.dumps(got)[:60] if not isinstance(got, dict) else "an object"
    if err["type"] == "missing":
        return f"{where} is missing"
    if err["type"] == "value_error":
        return err["msg"].removeprefix("Value error, ")
    return f"{where} {err['msg'].lower()} (got {shown})"
