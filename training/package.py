"""A model directory trimmed for shipping: one ONNX variant, no PyTorch weights, card regenerated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from monitor.model_artifact import MANIFEST, ModelArtifact
from training.export import TORCH_DIR
from training.model_card import write_model_card


def package_model(
    model_dir: str | Path,
    out: str | Path,
    variant: str = "int8",
    reproduce: str | None = None,
    notes: str | None = None,
) -> Path:
    """Copy `model_dir` to `out` keeping only the `variant` ONNX file; `out` is replaced atomically."""
    source = ModelArtifact.load(model_dir)
    keep = source.onnx_file(variant).name
    out = Path(out)
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    dropped = {TORCH_DIR, *[f for v, f in source.manifest.onnx_files.items() if v != variant]}
    shutil.copytree(
        model_dir, staging, ignore=lambda d, names: [n for n in names if Path(d) == Path(model_dir) and n in dropped]
    )
    manifest = json.loads((staging / MANIFEST).read_text())
    manifest["onnx"]["files"] = {variant: keep}
    manifest["onnx"]["serve"] = variant
    if reproduce:
        manifest["reproduce"] = reproduce
    if notes:
        manifest["notes"] = notes
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    write_model_card(staging)
    ModelArtifact.load(staging).onnx_file()  # the result must load
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out
