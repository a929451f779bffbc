"""The read side of a model directory: manifest, files, the settings the model was trained with.

A model directory holds ``manifest.json``, the ONNX model(s), ``tokenizer.json``, optionally the
labelled pool it retrieves from (``history.npz``) and fusion layers (``fusion-<task>.npz``), and a
human-readable ``MODEL_CARD.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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
class ModelArtifact:
    path: Path
    manifest: dict

    @classmethod
    def load(cls, path: str | Path) -> ModelArtifact:
        path = Path(path)
        file = path / MANIFEST
        if not file.is_file():
            raise ModelArtifactError(f"{path} is not a bearwatch model directory (no {MANIFEST})")
        try:
            manifest = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelArtifactError(f"{file} is not valid JSON: {exc}") from exc
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ModelArtifactError(f"{file}: unsupported format_version {manifest.get('format_version')!r}")
        artifact = cls(path, manifest)
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
        return self.manifest["version"]

    def labels(self, task: str) -> tuple[str, ...]:
        return tuple(self.manifest["labels"][task])

    @property
    def context(self) -> ContextSettings:
        c = self.manifest["context"]
        return ContextSettings(
            mode=c["mode"], k=c["k"], max_length=c["max_length"], context_budget=c.get("context_budget", 0)
        )

    @property
    def near_duplicate(self) -> float:
        return float(self.manifest["context"].get("near_duplicate", 0.97))

    @property
    def history_file(self) -> str | None:
        return self.manifest["context"].get("history")

    @property
    def fusion_files(self) -> dict[str, str]:
        return dict(self.manifest["context"].get("fusion", {}))

    def onnx_file(self, variant: str | None = None) -> Path:
        """The ONNX file to serve: `variant` ("fp32", "int8") or the manifest's choice."""
        onnx = self.manifest.get("onnx")
        if not onnx:
            raise ModelArtifactError(
                f"{self.path}: the model has not been exported to ONNX (run bearwatch export --model {self.path})"
            )
        variant = variant or onnx["serve"]
        files = onnx["files"]
        if variant not in files:
            raise ModelArtifactError(f"{self.path}: no {variant} ONNX model (have: {', '.join(files)})")
        path = self.path / files[variant]
        if not path.is_file():
            raise ModelArtifactError(f"{path} is missing")
        return path
