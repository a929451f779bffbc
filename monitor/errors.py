"""bearwatch's own errors: adapters translate library exceptions into these, with context."""

from __future__ import annotations


class BearwatchError(Exception):
    """Base of every error bearwatch raises on purpose."""


class ModelArtifactError(BearwatchError):
    """A model directory is missing, incomplete or inconsistent with its manifest."""


class ScoringError(BearwatchError):
    """The model could not score a batch (never turned into a neutral score)."""


class DeviceUnavailable(ScoringError):
    """A GPU was required by the settings but ONNX Runtime cannot use one."""
