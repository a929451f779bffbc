from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest

from monitor.errors import RegistryError
from monitor.model_artifact import FORMAT_VERSION
from monitor.registry import ModelRegistry


def fake_model_dir(root: Path, version: str) -> Path:
    """A minimal, valid model directory (manifest + tokenizer) for registry bookkeeping tests."""
    d = root / f"model-{version}"
    d.mkdir(parents=True)
    (d / "tokenizer.json").write_text("{}")
    manifest = {
        "format_version": FORMAT_VERSION,
        "version": version,
        "labels": {},
        "context": {"mode": "none", "k": 0, "max_length": 64},
    }
    (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def test_register_promote_rollback(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    v1 = registry.register(fake_model_dir(tmp_path, "v1"))
    v2 = registry.register(fake_model_dir(tmp_path, "v2"))
    assert registry.current_version() is None
    registry.promote(v1, "first")
    registry.promote(v2, "better")
    assert registry.current().version == "v2"
    assert registry.rollback("regression") == "v1"
    assert registry.current_version() == "v1"
    assert registry.status("v2") == "rolled_back"
    assert registry.versions() == ["v1", "v2"]


def test_promote_unknown_version_leaves_current_untouched(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    registry.promote(registry.register(fake_model_dir(tmp_path, "v1")))
    with pytest.raises(RegistryError):
        registry.promote("nope")
    assert registry.current_version() == "v1"


def test_failed_register_leaves_no_partial_version(tmp_path: Path, monkeypatch) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    source = fake_model_dir(tmp_path, "v1")

    def failing_copy(*args, **kwargs):  # fault injection: the disk fills up mid-copy
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copytree", failing_copy)
    with pytest.raises(OSError):
        registry.register(source)
    assert registry.versions() == []
    assert list((tmp_path / "reg" / "versions").iterdir()) == []


def test_readers_never_see_a_half_written_pointer(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path / "reg")
    versions = [registry.register(fake_model_dir(tmp_path, f"v{i}")) for i in range(3)]
    registry.promote(versions[0])
    errors: list[Exception] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                assert registry.current().version in versions
            except Exception as exc:  # noqa: BLE001 — collected and asserted below
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(300):
        registry.promote(versions[i % 3])
    stop.set()
    thread.join()
    assert errors == []


def test_model_commands_list_promote_rollback(tmp_path: Path, capsys) -> None:
    from bearwatch.cli import main

    reg = str(tmp_path / "reg")
    for v in ("v1", "v2"):
        assert main(["model", "register", "--registry", reg, str(fake_model_dir(tmp_path, v))]) == 0
    assert main(["model", "promote", "--registry", reg, "v1"]) == 0
    assert main(["model", "promote", "--registry", reg, "v2", "--reason", "better"]) == 0
    capsys.readouterr()
    assert main(["model", "list", "--registry", reg]) == 0
    listing = capsys.readouterr().out
    assert "* v2" in listing and "  v1" in listing
    assert main(["model", "rollback", "--registry", reg]) == 0
    assert ModelRegistry(reg).current_version() == "v1"
    assert main(["model", "promote", "--registry", reg, "v9"]) == 1  # unknown version: an error, CURRENT unchanged
    assert ModelRegistry(reg).current_version() == "v1"


def test_model_init_seeds_an_empty_registry_once(tmp_path: Path) -> None:
    from bearwatch.cli import main

    reg = str(tmp_path / "reg")
    assert main(["model", "init", "--registry", reg, str(fake_model_dir(tmp_path, "v1"))]) == 0
    assert ModelRegistry(reg).current_version() == "v1"
    assert (
        main(["model", "init", "--registry", reg, str(fake_model_dir(tmp_path, "v2"))]) == 0
    )  # a later start: nothing changes
    assert ModelRegistry(reg).current_version() == "v1" and ModelRegistry(reg).versions() == ["v1"]


def test_bench_command_runs_a_script_of_bench_and_names_the_others() -> None:
    import subprocess
    import sys

    listed = subprocess.run(
        [sys.executable, "-m", "bearwatch", "bench", "no-such"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 2 and "naive_baseline" in listed.stderr and "memory" in listed.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "bearwatch", "bench", "retrieval", "--help"], capture_output=True, text=True, timeout=60
    )
    assert helped.returncode == 0 and "--history-items" in helped.stdout
