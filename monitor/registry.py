"""The model registry on disk: versions, a pointer to the current one, atomic promotion.

Layout::

    REGISTRY/
      versions/<version>/   one model directory per version (never changed once registered)
      CURRENT               the current version's name (replaced atomically)
      events.jsonl          what happened: registered, promoted, rejected, rolled back

Both writes that matter are atomic on POSIX file systems: a version is copied into a temporary
folder and renamed into place, and ``CURRENT`` is written to a temporary file and renamed over the
old one. A reader therefore sees the old version or the new one, never a half-written one.

>>> registry = ModelRegistry("/tmp/registry")  # doctest: +SKIP
>>> version = registry.register("runs/default/model")  # doctest: +SKIP
>>> registry.promote(version, reason="beats current by 1.2 macro-F1")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from monitor.errors import RegistryError
from monitor.model_artifact import ModelArtifact

CURRENT = "CURRENT"
EVENTS = "events.jsonl"


@dataclass(frozen=True)
class Event:
    at: str
    action: str  # registered | promoted | rejected | rolled_back | failed
    version: str
    reason: str = ""


class ModelRegistry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"

    # --- read side -------------------------------------------------------------------------------
    def current_version(self) -> str | None:
        try:
            return (self.root / CURRENT).read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def current(self) -> ModelArtifact:
        version = self.current_version()
        if version is None:
            raise RegistryError(f"registry {self.root} has no current model (promote one first)")
        return self.load(version)

    def load(self, version: str) -> ModelArtifact:
        path = self.versions_dir / version
        if not path.is_dir():
            raise RegistryError(f"registry {self.root} has no version {version!r}")
        return ModelArtifact.load(path)

    def versions(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def events(self) -> list[Event]:
        path = self.root / EVENTS
        if not path.exists():
            return []
        return [Event(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def status(self, version: str) -> str:
        """The latest decision about a version: candidate, promoted, rejected or rolled_back."""
        state = "candidate"
        for event in self.events():
            if event.version == version and event.action != "registered":
                state = event.action
        return state

    # --- write side ------------------------------------------------------------------------------
    def register(self, model_dir: str | Path) -> str:
        """Copy a model directory in under its manifest's version; returns the version."""
        artifact = ModelArtifact.load(model_dir)
        target = self.versions_dir / artifact.version
        if target.exists():
            raise RegistryError(f"version {artifact.version} is already registered")
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{artifact.version}.", dir=self.versions_dir))
        try:
            shutil.copytree(model_dir, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("torch"))
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self._log("registered", artifact.version)
        return artifact.version

    def promote(self, version: str, reason: str = "") -> None:
        self.load(version)  # refuses unknown or broken versions before touching CURRENT
        self._write_current(version)
        self._log("promoted", version, reason)

    def reject(self, version: str, reason: str) -> None:
        self.load(version)
        self._log("rejected", version, reason)

    def rollback(self, reason: str = "") -> str:
        """Make the previously promoted version current again; returns it."""
        current = self.current_version()
        promoted = [e.version for e in self.events() if e.action == "promoted"]
        earlier = [v for v in promoted if v != current]
        if not earlier:
            raise RegistryError("nothing to roll back to: no other version was ever promoted")
        previous = earlier[-1]
        self._write_current(previous)
        if current:
            self._log("rolled_back", current, reason)
        self._log("promoted", previous, f"rollback: {reason}".strip(": "))
        return previous

    def record_failure(self, reason: str) -> None:
        """A retraining cycle that failed: logged, nothing else changes."""
        self._log("failed", "-", reason)

    def _write_current(self, version: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".CURRENT.", dir=self.root)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(version + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.root / CURRENT)

    def _log(self, action: str, version: str, reason: str = "") -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        event = Event(datetime.now(timezone.utc).isoformat(timespec="seconds"), action, version, reason)
        with (self.root / EVENTS).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(event.__dict__) + "\n")
