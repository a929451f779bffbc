"""The read side of a model directory: manifest, files, the settings the model was trained with.

A model directory holds ``manifest.json``, the ONNX model(s), ``tokenizer.json``, optionally the
labelled pool it retrieves from (``history.npz``) and fusion layers (``fusion-<task>.npz``), and a
human-readable ``MODEL_CARD.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from monitor.errors import ModelArtifactError

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
CONTEXT_MODES = ("none", "concat", "fusion")


@dataclass(frozen=True)
class ContextSettings:
    """How a model uses retrieved context; recorded in its manifest and read back at serving."""

    mode: str = "none"
    k: int = 0
    max_length: int = 64  # whole input, in tokens, special tokens included
    context_budget: int = 0  # tokens given to neighbours in concat mode

    def __post_init__(self) -> None:
        if self.mode not in CONTEXT_MODES:
            raise ValueError(f"context mode must be one of {CONTEXT_MODES}, not {self.mode!r}")
        if self.k < 0 or self.max_length < 8 or self.context_budget < 0:
            raise ValueError(f"invalid context settings {self}")


@dataclass(frozen=True)
class Manifest:
    """A model directory's ``manifest.json``: typed where serving depends on it; the descriptive rest
    (data, training, metrics, speed, notes, ...) is kept as written, in `document`."""

    version: str
    created_at: datetime | None  # when it was trained (a hand-made test model may not say)
    labels: dict[str, tuple[str, ...]]  # per task (topic, sentiment), in the model's output order
    context: ContextSettings
    near_duplicate: float  # retrieval leakage rule: neighbours at least this similar are never used
    history: str | None  # the labelled pool it retrieves from (history.npz), if any
    fusion: dict[str, str]  # task -> fusion layer file
    memory: dict[str, Any] | None  # how the retrieval memory moves scores (MemoryFusion); None: not used
    onnx_serve: str | None  # the variant to serve (fp32, int8); None before export
    onnx_files: dict[str, str]  # variant -> file
    document: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.document.get("metrics") or {}

    @classmethod
    def from_json(cls, doc: dict[str, Any], where: str = MANIFEST) -> Manifest:
        if doc.get("format_version") != FORMAT_VERSION:
            raise ModelArtifactError(f"{where}: unsupported format_version {doc.get('format_version')!r}")
        try:
            c, onnx = doc["context"], doc.get("onnx") or {}
            return cls(
                version=str(doc["version"]),
                created_at=datetime.fromisoformat(doc["created_at"]) if doc.get("created_at") else None,
                labels={task: tuple(names) for task, names in doc["labels"].items()},
                context=ContextSettings(
                    mode=c["mode"], k=c["k"], max_length=c["max_length"], context_budget=c.get("context_budget", 0)
                ),
                near_duplicate=float(c.get("near_duplicate", 0.97)),
                history=c.get("history"),
                fusion=dict(c.get("fusion", {})),
                memory=dict(c["memory"]) if c.get("memory") else None,
                onnx_serve=onnx.get("serve"),
                onnx_files=dict(onnx.get("files", {})),
                document=doc,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelArtifactError(f"{where}: not a valid manifest ({type(exc).__name__}: {exc})") from None

    def to_json(self) -> dict[str, Any]:
        doc = json.loads(json.dumps(self.document))  # a copy; the typed fields win
        doc["version"] = self.version
        if self.created_at is not None:
            doc["created_at"] = self.created_at.isoformat()
        doc["labels"] = {task: list(names) for task, names in self.labels.items()}
        context = doc.setdefault("context", {})
        context.update(mode=self.context.mode, k=self.context.k, max_length=self.context.max_length)
        if self.context.context_budget or "context_budget" in context:
            context["context_budget"] = self.context.context_budget
        if self.near_duplicate != 0.97 or "near_duplicate" in context:
            context["near_duplicate"] = self.near_duplicate
        for name, value in (("history", self.history), ("fusion", self.fusion or None), ("memory", self.memory)):
            if value is None:
                context.pop(name, None)
            else:
                context[name] = value
        if self.onnx_serve is not None:
            doc.setdefault("onnx", {}).update(serve=self.onnx_serve, files=dict(self.onnx_files))
        return doc


@dataclass(frozen=True)
class ModelArtifact:
    path: Path
    manifest: Manifest

    @classmethod
    def load(cls, path: str | Path) -> ModelArtifact:
        path = Path(path)
        file = path / MANIFEST
        if not file.is_file():
            raise ModelArtifactError(f"{path} is not a bearwatch model directory (no {MANIFEST})")
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelArtifactError(f"{file} is not valid JSON: {exc}") from exc
        artifact = cls(path, Manifest.from_json(doc, str(file)))
        for name in (
            "tokenizer.json",
            *artifact.fusion_files.values(),
            *([artifact.history_file] if artifact.history_file else []),
        ):
            if not (path / name).is_file():
                raise ModelArtifactError(f"{path}: manifest names {name}, which is missing")
        return artifact

    @property
    def version(self) -> str:
        return self.manifest.version

    def labels(self, task: str) -> tuple[str, ...]:
        return self.manifest.labels[task]

    @property
    def context(self) -> ContextSettings:
        return self.manifest.context

    @property
    def near_duplicate(self) -> float:
        return self.manifest.near_duplicate

    @property
    def history_file(self) -> str | None:
        return self.manifest.history

    @property
    def fusion_files(self) -> dict[str, str]:
        return dict(self.manifest.fusion)

    def onnx_file(self, variant: str | None = None) -> Path:
        """The ONNX file to serve: `variant` ("fp32", "int8") or the manifest's choice."""
        m = self.manifest
        if m.onnx_serve is None:
            raise ModelArtifactError(
                f"{self.path}: the model has not been exported to ONNX (run bearwatch export --model {self.path})"
            )
        variant = variant or m.onnx_serve
        if variant not in m.onnx_files:
            raise ModelArtifactError(f"{self.path}: no {variant} ONNX model (have: {', '.join(m.onnx_files)})")
        path = self.path / m.onnx_files[variant]
        if not path.is_file():
            raise ModelArtifactError(f"{path} is missing")
        return path
