"""Files shipped inside the package: the default model and the embedded default's demo stream.

Found through importlib.resources, so they are where the installed package is (a wheel in any
virtual environment) as well as in a checkout; nothing is looked up relative to the working
directory or the repository.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _packaged(*parts: str) -> Path:
    # bearwatch installs as plain directories (no zip imports), so the traversable is a real path.
    return Path(str(files("monitor").joinpath(*parts)))


def shipped_model() -> Path:
    """The model directory the package ships (``monitor/models/default``: int8 ONNX, tokenizer,
    manifest, card): what serves when ``model.path`` is empty."""
    return _packaged("models", "default")


def demo_stream() -> Path:
    """The bundled synthetic news stream of ``bearwatch demo`` (fictional companies)."""
    return _packaged("demo", "news.jsonl")
