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


class StoreUnavailable(BearwatchError):
    """The history store could not be read or written (retry later; nothing is committed)."""


class SinkUnavailable(BearwatchError):
    """A destination did not accept what was written to it (for now: the batch is retried).
    `delivered` lists the records (monitor.sinks.base.Record) it did accept before failing."""

    def __init__(self, message: str, delivered: list | None = None) -> None:
        super().__init__(message)
        self.delivered = delivered or []


class SourceUnavailable(BearwatchError):
    """Kafka could not be reached or refused a request."""


class DeliveryFailed(BearwatchError):
    """Slack did not take the message: the alert stays pending for a later pass of the outbox
    (`retry_after`: the seconds Slack asked to wait, on a rate limit), or, when Slack refused it
    for good (`permanent`: the message itself is wrong), is parked as failed."""

    def __init__(
        self, message: str, permanent: bool = False, retry_after: float | None = None, refused: bool = False
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after
        self.refused = refused  # the token or the channel was refused: the operator's to fix


class RegistryError(BearwatchError):
    """A registry operation that cannot be done (unknown version, nothing to roll back to…)."""


class KibanaError(BearwatchError):
    """Kibana refused the import, or could not be reached."""


class SettingsError(BearwatchError, ValueError):
    """Settings that cannot work, said plainly."""


class InvalidItem(BearwatchError, ValueError):
    """A message that is not a valid news item; the message says why."""


class LabelledFileError(BearwatchError, ValueError):
    """A labelled file that cannot be read as CSV/JSONL with text and label."""


class SeriesError(BearwatchError, ValueError):
    """A series file that cannot be read as timestamp,value rows."""


class UnknownLabel(BearwatchError, ValueError):
    """A label outside the head's label set."""


class InvalidLabel(BearwatchError, ValueError):
    """A label row that cannot be used; the message says why."""


class ExportError(BearwatchError, RuntimeError):
    """The exported graph does not reproduce the PyTorch model within tolerance."""


DISK_FULL_ERRNOS = {28, 27, 122}  # ENOSPC, EFBIG, EDQUOT


def check_disk_error(exc: OSError, what: str) -> None:
    """Raise :class:`OutOfSpace` when `exc` says the disk is full; otherwise return."""
    if exc.errno in DISK_FULL_ERRNOS:
        raise OutOfSpace(
            f"no room to write {what}: {exc.strerror}. Free some space (or raise the limit) and run again; "
            "it resumes after the last batch that was written in full"
        ) from exc


class UnknownAlert(BearwatchError, ValueError):
    """An answer about an alert the outbox does not hold."""
