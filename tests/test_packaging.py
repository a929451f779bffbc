"""The wheel works outside the checkout: a fresh virtual environment with only the built wheel (and
its dependencies from the package index) runs `bearwatch demo` from an empty directory, with the
model the wheel ships; what belongs to the checkout (drills, benchmarks) says so instead of failing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    had_build = (ROOT / "build").exists()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if not had_build:  # setuptools builds in the source tree: leave the checkout as it was
        shutil.rmtree(ROOT / "build", ignore_errors=True)
    (found,) = out.glob("bearwatch-*.whl")
    return found


def test_the_wheel_holds_three_packages_and_the_shipped_model(wheel) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        top = z.read(next(n for n in names if n.endswith(".dist-info/top_level.txt"))).decode().split()
    assert sorted(top) == ["bearwatch", "monitor", "training"]
    assert not [n for n in names if n.split("/")[0] in ("drills", "bench", "tests")]
    manifest = json.loads(zipfile.ZipFile(wheel).read("monitor/models/default/manifest.json"))
    for name in ("model.int8.onnx", "tokenizer.json", "MODEL_CARD.md"):
        assert f"monitor/models/default/{name}" in names
    assert "monitor/demo/news.jsonl" in names and manifest["version"]


def test_a_fresh_environment_with_the_wheel_runs_the_demo_from_an_empty_directory(wheel, tmp_path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{wheel}[cpu]"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    empty = tmp_path / "empty"
    empty.mkdir()
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BEARWATCH_", "PYTHON"))}
    where = subprocess.run(
        [str(py), "-c", "import monitor, training, bearwatch; print(monitor.__file__)"],
        cwd=empty,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert str(env_dir) in where.stdout and str(ROOT) not in where.stdout
    demo = subprocess.run(
        [str(env_dir / "bin" / "bearwatch"), "demo", "--out", "out"],
        cwd=empty,
        env=clean,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "with model" in demo.stdout and "alerts (" in demo.stdout
    scored = (empty / "out" / "bearwatch.news.scored.jsonl").read_text().splitlines()
    assert len(scored) > 100 and json.loads(scored[0])["value"]["model_version"]
    for argv, says in ((["drill", "poison"], "not in the wheel"), (["bench", "scoring_stage"], "bearwatch checkout")):
        run = subprocess.run(
            [str(env_dir / "bin" / "bearwatch"), *argv],
            cwd=empty,
            env=clean,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2 and says in run.stderr, (argv, run.stderr[-1000:])
