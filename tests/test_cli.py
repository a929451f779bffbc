from __future__ import annotations

import subprocess
import sys

import bearwatch
from bearwatch.cli import main


def test_version_prints_package_version(capsys) -> None:
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"bearwatch {bearwatch.__version__}"


def test_version_verbose_lists_runtime(capsys) -> None:
    assert main(["version", "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "kafka-python 3.0" in out
    assert "onnxruntime providers: " in out and "CPUExecutionProvider" in out


def test_console_script_help_lists_commands() -> None:
    result = subprocess.run([sys.executable, "-m", "bearwatch", "--help"], capture_output=True, text=True, check=True)
    assert "version" in result.stdout and "demo" in result.stdout


def test_training_commands_without_the_train_extra_say_what_to_install(monkeypatch, capsys) -> None:
    import bearwatch.cli as cli

    monkeypatch.setattr(cli, "_training_commands", lambda: (None, "missing: torch"))  # a serving-only install
    assert cli.main(["train", "--config", "x.toml", "--output", "runs/x"]) == 2
    assert "pip install 'bearwatch[train]'" in capsys.readouterr().err


def test_every_command_s_help_renders_and_shows_a_percent_sign_as_one() -> None:
    """argparse %-formats help strings, not descriptions: a `%%` must read as `%` in both."""
    import argparse

    from bearwatch.cli import build_parser

    def parsers(parser: argparse.ArgumentParser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    helps = [p.format_help() for p in parsers(build_parser())]
    assert len(helps) > 20 and all("%%" not in h for h in helps)
    assert any("95% intervals" in h for h in helps)
