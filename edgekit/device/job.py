"""job.json: what the workstation asks a device to run, in one typed model both ends read.

The workstation (edgekit.device.runs; `edgekit eval --host`) writes it into the run folder; the
device's agent (edgekit.device.agent) reads it back with `read_job` and runs exactly that. Both
ends run the same edgekit (deploy installs this machine's own wheel), so the model is the
contract. A job written before `kind` existed is a bench."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field, TypeAdapter

from edgekit.settings import BenchSettings

JOB_FILE = "job.json"


class BenchJob(BaseModel):
    """edgekit bench of `model` (a path on the device) with these settings."""

    kind: Literal["bench"] = "bench"
    model: str
    format: str | None = None        # the artifact's format ("gguf", "onnx"); None: from the file
    artifact_key: str                # the deploy's models/<key>/, and the results folder's name
    host: str | None = None          # how the workstation reached the device (the result's host.reached_as)
    settings: BenchSettings
    timeout_s: float | None = None
    library: str = "the runtime"     # the native library a crash would come from


class EvalJob(BaseModel):
    """edgekit eval of `model`; relative paths (`text`, a `reference`) are files in the run folder."""

    kind: Literal["eval"]
    model: str
    reference: str | None = None
    artifact_key: str
    text: str | None = None
    chunks: int | None = None
    ctx: int | None = None
    threads: int | None = None
    host: str | None = None
    timeout_s: float | None = None


Job = Annotated[Union[BenchJob, EvalJob], Field(discriminator="kind")]
_JOB = TypeAdapter(Job)


def parse_job(text: str) -> BenchJob | EvalJob:
    """A job.json's text as its model (ValueError when it is not one)."""
    data = json.loads(text)
    if isinstance(data, dict):
        data.setdefault("kind", "bench")
    return _JOB.validate_python(data)


def read_job(run: Path) -> BenchJob | EvalJob:
    return parse_job((Path(run) / JOB_FILE).read_text(encoding="utf-8"))


def job_json(job: BenchJob | EvalJob) -> str:
    return job.model_dump_json(indent=2) + "\n"
