"""The `bearwatch` command line: the one place that wires settings and components together.

Subcommands import what they need only when they run, so `bearwatch --help` stays instant and a
serving install never loads torch.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
from collections.abc import Callable, Sequence

from bearwatch import __version__

# Distributions `bearwatch version` reports, in the order a bug report wants them.
_REPORTED_DISTRIBUTIONS = (
    "kafka-python",
    "elasticsearch",
    "onnxruntime",
    "onnxruntime-gpu",
    "tokenizers",
    "apscheduler",
    "slack-sdk",
    "torch",
    "transformers",
    "peft",
)


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _onnxruntime_providers() -> list[str] | None:
    try:
        import onnxruntime
    except ImportError:
        return None
    return list(onnxruntime.get_available_providers())


def cmd_version(args: argparse.Namespace) -> int:
    """Print bearwatch's version and, with --verbose, the versions of what it runs on."""
    print(f"bearwatch {__version__}")
    if not args.verbose:
        return 0
    print(f"python {platform.python_version()} ({platform.platform()})")
    for distribution in _REPORTED_DISTRIBUTIONS:
        version = _installed_version(distribution)
        print(f"{distribution} {version or '(not installed)'}")
    providers = _onnxruntime_providers()
    print(f"onnxruntime providers: {', '.join(providers) if providers else '(onnxruntime not installed)'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded default. The pipeline arrives with the monitor issue; until then, say what it will do."""
    print(
        "bearwatch demo runs the whole pipeline in-process on a bundled synthetic news stream:\n"
        "  file source -> validation -> embedded retrieval index -> ONNX scoring -> spike detection\n"
        "  -> console/file/HTML output.\n"
        "The scoring pipeline is not implemented yet in this version; nothing was processed."
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Metrics of one head of a model directory on a labelled file."""
    import json

    from monitor.evaluation import evaluate_file, format_report
    from monitor.model_artifact import ModelArtifact
    from monitor.scoring.onnx import OnnxScorer

    scorer = OnnxScorer(ModelArtifact.load(args.model), device=args.device, threads=args.threads, variant=args.variant)
    report = evaluate_file(scorer, args.data, args.task)
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def _training_commands():
    """The training side's subcommands, if torch and friends are installed."""
    import importlib.util

    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        return None, f"missing: {', '.join(missing)}"
    from training import cli as training_cli

    return training_cli, None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bearwatch",
        description="Streaming financial-news sentiment monitor.",
    )
    parser.add_argument("--version", action="version", version=f"bearwatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    version = add("version", cmd_version, "print the version (and, with -v, what it runs on)")
    version.add_argument("-v", "--verbose", action="store_true", help="also list dependency versions and ONNX Runtime providers")
    add("demo", cmd_demo, "run the embedded default on a bundled news stream")

    evaluate = add("evaluate", cmd_evaluate, "accuracy, macro-F1, per-class metrics and confusion matrix of a model on a labelled file")
    evaluate.add_argument("--model", required=True, help="model directory")
    evaluate.add_argument("--data", required=True, help="CSV (text,label) or JSONL file")
    evaluate.add_argument("--task", required=True, choices=["sentiment", "topic"])
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--variant", choices=["fp32", "int8"], help="ONNX file to use (default: the one the manifest serves)")
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    evaluate.add_argument("--threads", type=int, default=0)

    training_cli, missing = _training_commands()
    if training_cli is not None:
        training_cli.add_commands(commands, add)
    else:
        def needs_training_extra(args: argparse.Namespace) -> int:
            print(f"bearwatch {args.command} needs the training extra: pip install 'bearwatch[train]' ({missing})", file=sys.stderr)
            return 2
        for name in ("train", "export"):
            add(name, needs_training_extra, f"(needs bearwatch[train]) {name}").add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from monitor.errors import BearwatchError

    try:
        return args.handler(args)
    except BearwatchError as exc:
        print(f"bearwatch: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
