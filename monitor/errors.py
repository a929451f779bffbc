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


class OutOfSpace(BearwatchError):
    """The disk (or the file-size limit) has no room for what must be written. Not retried: the
    daemon stops with this error; nothing after the last fully written batch is committed."""


DISK_FULL_ERRNOS = {28, 27, 122}  # ENOSPC, EFBIG, EDQUOT


def check_disk_error(exc: OSError, what: str) -> None:
    """Raise :class:`OutOfSpace` when `exc` says the disk is full; otherwise return."""
    if exc.errno in DISK_FULL_ERRNOS:
        raise OutOfSpace(f"no room to write {what}: {exc.strerror}. Free some space (or raise the limit) and run again; "
                         "it resumes after the last batch that was written in full") from exc
