"""Every user error ends with one line ``bearwatch: error: …`` and a non-zero exit, never a traceback.

Each command is run in-process on a path that does not exist or with a bad setting (through
``BEARWATCH_CONFIG`` or the environment, as an operator would give it). None of these gets as far
as a broker or a cluster: a bad setting or a missing file is said before anything is contacted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bearwatch.cli import main

MODEL = str(Path(__file__).resolve().parents[1] / "monitor" / "models" / "default")


def _one_error_line(capsys, argv: list[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("bearwatch")]
    assert rc != 0, f"{argv} exited 0"
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("bearwatch: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["evaluate", "--model", MODEL, "--task", "sentiment", "--data", "/missing/test.csv"], "/missing/test.csv"),
        (["evaluate", "--model", "/missing/model", "--task", "sentiment", "--data", "x.csv"], "/missing/model"),
        (["dashboards", "validate", "/missing/objects.ndjson"], "No such file"),
        (["model", "list", "--registry", "/missing/registry"], "no model registry at /missing/registry"),
        (["model", "show", "--registry", "/missing/registry"], "no model registry"),
        (["detect", "series", "--input", "/missing/series.csv", "--output", "-"], "/missing/series.csv"),
        (["detect", "evaluate", "--suite", "stocknet", "--data", "/missing"], "does not exist"),
        (["detect", "evaluate", "--suite", "stocknet", "--compare", "--baseline-model", MODEL], "goes with neither"),
        (["detect", "evaluate", "--suite", "series", "--baseline-model", MODEL], "goes with neither"),
        (["label", "import", "/missing/labels.csv", "--by", "me"], "/missing/labels.csv"),
        (["produce", "/missing/news.jsonl"], "/missing/news.jsonl"),
        (["package", "--model", "/missing/model", "--output", "/missing/out"], "/missing/model"),
    ],
)
def test_a_missing_path_is_one_line(capsys, monkeypatch, tmp_path, argv: list[str], says: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert says in _one_error_line(capsys, argv)


def test_the_demo_on_a_missing_input_is_one_line(capsys, tmp_path) -> None:
    line = _one_error_line(capsys, ["demo", "--input", "/missing/news.jsonl", "--output", str(tmp_path / "out")])
    assert "/missing/news.jsonl" in line


DAEMONS = [
    ["monitor", "run"],
    ["detect", "run"],
    ["trainer", "run-once"],
    ["trainer", "run"],
    ["label", "add", "--text", "shares fall", "--sentiment", "bearish", "--by", "me"],
    ["produce", "news.jsonl"],
    ["demo", "--output", "out"],
]


@pytest.mark.parametrize("argv", DAEMONS, ids=lambda a: " ".join(a[:2]))
@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('[kafka]\npartitions = "three"\n', "kafka.partitions (from "),
        ('[kafka]\ngroup_id = "g"\n', "unknown setting(s) in [kafka]: group_id"),
        ("[metrics]\nport = 99999\n", "metrics.port"),
    ],
    ids=["type", "unknown-key", "range"],
)
def test_a_bad_setting_file_is_one_line_for_every_command(
    capsys, monkeypatch, tmp_path, argv: list[str], toml: str, says: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "news.jsonl").write_text('{"id": "1", "text": "x"}\n')
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    monkeypatch.setenv("BEARWATCH_CONFIG", str(config))
    assert says in _one_error_line(capsys, argv)


@pytest.mark.parametrize("argv", DAEMONS, ids=lambda a: " ".join(a[:2]))
def test_a_bad_environment_value_is_one_line_for_every_command(capsys, monkeypatch, tmp_path, argv) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "news.jsonl").write_text('{"id": "1", "text": "x"}\n')
    monkeypatch.setenv("BEARWATCH_DETECTION_ALPHA", "-5")
    line = _one_error_line(capsys, argv)
    assert "detection.alpha (from BEARWATCH_DETECTION_ALPHA): must be greater than 0, not '-5'" in line


def test_model_list_json_and_the_registry_from_the_settings(capsys, monkeypatch, tmp_path) -> None:
    import json

    monkeypatch.setenv("BEARWATCH_TRAINER_REGISTRY", str(tmp_path / "reg"))
    assert main(["model", "init", MODEL]) == 0  # no --registry anywhere: trainer.registry of the settings
    capsys.readouterr()
    assert main(["model", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["current"] is True and rows[0]["status"]
    assert set(rows[0]["sentiment"]) == {"accuracy", "macro_f1"}


def test_dashboards_export_takes_the_index_prefix_from_the_settings(capsys, monkeypatch) -> None:
    import json

    monkeypatch.setenv("BEARWATCH_ES_INDEX_PREFIX", "desk7")
    assert main(["dashboards", "export", "--output", "-"]) == 0
    patterns = [o for o in map(json.loads, capsys.readouterr().out.splitlines()) if o["type"] == "index-pattern"]
    assert sorted(p["attributes"]["title"] for p in patterns) == ["desk7-alerts", "desk7-news"]
