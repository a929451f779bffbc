"""The `bearwatch` command line: the one place that wires settings and components together.

Subcommands import what they need only when they run, so `bearwatch --help` stays instant and a
serving install never loads torch.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


def _settings(args: argparse.Namespace):
    from monitor.settings import load_settings

    return load_settings(getattr(args, "config", None))


def cmd_demo(args: argparse.Namespace) -> int:
    """The embedded default: the whole scoring stage in-process on a bundled (or given) news stream."""
    import shutil
    from dataclasses import replace

    from bearwatch.daemon import run_demo

    settings = _settings(args)
    settings = replace(
        settings,
        model=replace(settings.model, path=args.model or settings.model.path, device=args.device),
        metrics=replace(settings.metrics, port=0),
    )
    labels: list = []
    if args.labels:
        from monitor.evaluation import memory_labels

        labels, rejected = memory_labels(args.labels, "sentiment")
        for line, reason in rejected:
            print(f"{args.labels}:{line}: {reason}", file=sys.stderr)
    out = Path(args.out)
    if out.exists() and not args.resume:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    run = run_demo(
        settings,
        args.input,
        out,
        announce=lambda app: print(
            f"bearwatch demo: scoring {args.input or 'the bundled synthetic stream (fictional companies)'} with "
            f"model {app.models.scorer.version} on {app.models.scorer.provider}"
            + (f", {len(labels)} labelled items in the retrieval memory" if labels else "")
        ),
        labels=labels,
    )
    print(run.summary)
    print(f"report (the dashboards' charts, no Kibana needed): {run.page}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run a benchmark script of bench/ with the remaining arguments. The benchmarks are not in the
    wheel: they run from a repository checkout (its root is the working directory)."""
    import runpy

    bench = Path.cwd() / "bench"
    scripts = sorted(p.stem for p in bench.glob("*.py") if not p.stem.startswith("_")) if bench.is_dir() else []
    if args.name not in scripts:
        have = ", ".join(scripts) or "none here: run it from the root of a bearwatch checkout, where bench/ is"
        print(f"bearwatch: error: no benchmark {args.name!r} (have: {have})", file=sys.stderr)
        return 2
    saved = sys.argv
    sys.argv = [str(bench / f"{args.name}.py"), *args.args]
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        sys.argv = saved
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    """A fault drill against the real services, ending with an exact accounting (drills/run.py)."""
    try:
        from drills.run import main as drill
    except ModuleNotFoundError as exc:
        if exc.name != "drills":
            raise
        print(
            "bearwatch: error: the drills are not in the wheel: run them from the root of a bearwatch checkout "
            "(they start its local Kafka and Elasticsearch, deploy/local)",
            file=sys.stderr,
        )
        return 2

    return drill([args.name, "--scale", args.scale])


def cmd_dashboards(args: argparse.Namespace) -> int:
    """Kibana saved objects: export (write the NDJSON), validate (against the mappings), import (Kibana's API)."""
    from bearwatch import dashboards

    if args.dashboards_command != "validate" and args.index_prefix is None:
        args.index_prefix = _settings(args).elasticsearch.index_prefix
    if args.dashboards_command == "export":
        text = dashboards.ndjson(args.index_prefix)
        if args.out == "-":
            sys.stdout.write(text)
        else:
            Path(args.out).write_text(text, encoding="utf-8")
            print(f"{args.out}: {len(text.splitlines())} saved objects")
        return 0
    if args.dashboards_command == "validate":
        problems = dashboards.validate(Path(args.file).read_text(encoding="utf-8"))
        for p in problems:
            print(p, file=sys.stderr)
        print(f"{args.file}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        return 1 if problems else 0
    from bearwatch.kibana import import_saved_objects
    from monitor.settings import Secret

    api_key = os.environ.get("BEARWATCH_KIBANA_API_KEY")
    password = os.environ.get("BEARWATCH_KIBANA_PASSWORD")
    text = Path(args.file).read_text(encoding="utf-8") if args.file else dashboards.ndjson(args.index_prefix)
    result = import_saved_objects(
        args.kibana_url,
        text,
        api_key=Secret(api_key) if api_key else None,
        username=args.username,
        password=Secret(password) if password else None,
        space=args.space,
    )
    print(f"imported {result['successCount']} saved object(s) into {args.kibana_url}")
    return 0


def cmd_monitor_run(args: argparse.Namespace) -> int:
    """The always-on scoring daemon against Kafka and Elasticsearch."""
    from bearwatch.daemon import build_kafka_app, install_signal_handlers

    app = build_kafka_app(_settings(args))
    install_signal_handlers(app)
    stats = app.run(max_batches=args.max_batches, idle_timeout_s=args.idle_exit)
    app.source.close()
    app.publisher.close()
    print(
        f"stopped: {stats.consumed} consumed, {stats.scored} scored, {stats.dead_letters} dead-lettered, "
        f"{stats.duplicates} duplicates"
    )
    return 0


def cmd_detect_series(args: argparse.Namespace) -> int:
    """The count-spike detector over a timestamp,value CSV (causal, one configuration for all)."""
    from monitor.detection.series import run_file
    from monitor.errors import SeriesError

    try:
        flagged = run_file(args.input, args.output)
    except (SeriesError, OSError) as exc:
        print(f"bearwatch: error: {exc}", file=sys.stderr)
        return 1
    print(f"{flagged} row(s) flagged; written to {args.output}")
    return 0


def cmd_detect_run(args: argparse.Namespace) -> int:
    """The detection stage daemon: scored topic -> alerts outbox (Elasticsearch) -> Slack."""
    from bearwatch.daemon import build_detection_stage, install_signal_handlers

    stage = build_detection_stage(_settings(args))
    install_signal_handlers(stage)
    stats = stage.run(max_batches=args.max_batches, idle_timeout_s=args.idle_exit)
    stage.source.close()
    print(f"stopped: {stats.events} events, {len(stats.alerts)} alert events, {stats.delivered} delivered")
    return 0


def cmd_detect_evaluate(args: argparse.Namespace) -> int:
    """The detector scored: on synthetic streams with planted episodes, on the real StockNet
    stream against its tickers' price moves (with the naive daily rules in the same run), or, for
    `detect series`, on real count series with labelled anomaly windows (with a naive rule)."""
    import json

    from monitor.detection.evaluate import candidates, format_table, summary
    from monitor.errors import SettingsError

    data = Path(args.data) if args.data else Path.cwd().parent / "shared" / "data"
    if args.baseline_model and (args.suite != "stocknet" or args.compare):
        raise SettingsError(
            "--baseline-model sets two models side by side on the stocknet suite under the default configuration; "
            "it goes with neither --compare (configurations under one model) nor another suite"
        )
    if args.suite == "series":
        from monitor.detection import labelled

        series_configs = labelled.candidates()
        if not args.compare:
            series_configs = dict(list(series_configs.items())[:1])
        sets: dict[str, labelled.Labelled] = {}

        def windows_of(folder: Path) -> Path | None:  # a windows file, or the files' own label column
            return folder / "windows.json" if (folder / "windows.json").is_file() else None

        if args.series:
            folder = Path(args.series)
            sets[folder.name] = labelled.load_folder(folder, Path(args.windows) if args.windows else windows_of(folder))
        else:
            tweets = data / "stocknet-tweets" / "tweets_stream.csv"
            prices = data / "stocknet-prices" / "prices_daily.csv"
            kept = Path("bench") / "series"  # in the repository, as the README's commands run from its root
            for name in ("nab-real-counts", "cloud-monitoring-counts"):
                if (kept / name).is_dir():
                    sets[name] = labelled.load_folder(kept / name, windows_of(kept / name))
            if tweets.is_file() and prices.is_file():
                sets["stocknet-volume"] = labelled.stocknet_volumes(tweets, prices)
            if not sets:
                raise SettingsError(
                    f"neither {kept} nor {data}/stocknet-tweets/ is here (run from the repository root, or give "
                    "--series or --data)"
                )
        found = {name: labelled.suite(series, series_configs) for name, series in sets.items()}
        if args.json:
            print(json.dumps(found, indent=2))
        else:
            print(
                "\n\n".join(
                    f"{name} ({len(sets[name])} series)\n{labelled.format_suite(rows)}" for name, rows in found.items()
                )
            )
        return 0
    configs = candidates() if args.compare else dict(list(candidates().items())[:1])
    if args.suite == "stocknet":
        from monitor.detection.stocknet import format_suite, suite

        tweets = Path(args.tweets or data / "stocknet-tweets" / "tweets_stream.csv")
        prices = Path(args.prices or data / "stocknet-prices" / "prices_daily.csv")
        for path in (tweets, prices):
            if not path.is_file():
                raise SettingsError(f"{path} does not exist (give --tweets and --prices, or --data)")

        from monitor.progress import Progress

        bar: list[Progress] = []

        def progress(done: int, total: int) -> None:
            if not bar:
                bar.append(Progress("scoring the stream once (cached after)", total=total, every_s=15))
            bar[0].update(done - bar[0].done)
            if done == total:
                bar.pop().close()  # a second stream to score starts a bar of its own

        if args.baseline_model:
            from monitor.detection.stocknet import format_paired, model_version, paired_models, score_stream

            streams = {
                f"{label} {model_version(where)}": score_stream(tweets, where, progress=progress)
                for label, where in (("baseline", args.baseline_model), ("model", args.model))
            }
            found = paired_models(streams, prices, configs[next(iter(configs))], min_tweets=args.min_tweets)
            print(json.dumps(found, indent=2) if args.json else format_paired(found))
            return 0
        rows = suite(tweets, prices, configs, model=args.model, min_tweets=args.min_tweets, progress=progress)
        print(json.dumps(rows, indent=2) if args.json else format_suite(rows))
        return 0
    seeds = list(range(args.seeds))
    rows = {name: summary(seeds, config) for name, config in configs.items()}
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    """Operator view of a model registry: list, show, promote, rollback."""
    import json

    from monitor.errors import SettingsError
    from monitor.registry import ModelRegistry

    registry = ModelRegistry(args.registry or _settings(args).trainer.registry)
    if args.model_command not in ("register", "init") and not registry.versions_dir.is_dir():
        raise SettingsError(
            f"no model registry at {registry.root} (give --registry, or set trainer.registry; "
            "`bearwatch model init` makes one)"
        )
    current = registry.current_version()
    if args.model_command == "list":
        rows: list[dict[str, Any]] = []
        for version in registry.versions():
            m = registry.load(version).manifest.metrics.get("validation", {})
            rows.append(
                {
                    "version": version,
                    "current": version == current,
                    "status": registry.status(version),
                    **{
                        t: {k: m[t]["encoder_only"][k] for k in ("accuracy", "macro_f1")} if t in m else None
                        for t in ("sentiment", "topic")
                    },
                }
            )
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'':2}{'version':<28}{'status':<12}{'sentiment acc/F1':<18}{'topic acc/F1':<14}")
        for row in rows:
            cells = [
                f"{100 * row[t]['accuracy']:.1f}/{100 * row[t]['macro_f1']:.1f}" if row[t] else "-"
                for t in ("sentiment", "topic")
            ]
            mark = "* " if row["current"] else "  "
            print(f"{mark}{row['version']:<28}{row['status']:<12}{cells[0]:<18}{cells[1]:<14}")
    elif args.model_command == "show":
        artifact = registry.load(args.version) if args.version else registry.current()
        print(
            (artifact.path / "MODEL_CARD.md").read_text()
            if (artifact.path / "MODEL_CARD.md").exists()
            else json.dumps(artifact.manifest.to_json(), indent=2)
        )
    elif args.model_command == "promote":
        registry.promote(args.version, reason=args.reason or "promoted by an operator")
        print(f"current: {args.version} (was {current})")
    elif args.model_command == "rollback":
        print(f"current: {registry.rollback(args.reason or 'rolled back by an operator')} (was {current})")
    elif args.model_command == "register":
        print(registry.register(args.model_dir))
    elif args.model_command == "init":
        if current:
            print(f"current: {current} (the registry already serves a model; nothing done)")
        else:
            version = registry.register(args.model_dir)
            registry.promote(version, reason="initial model")
            print(f"current: {version} (registered and promoted)")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    """Analysts' labels into the labels index: one (`add`) or a file (`import`, bad rows reported)."""
    from monitor.elastic.client import connect, ensure_indices
    from monitor.elastic.labels import ElasticsearchLabels
    from monitor.errors import InvalidLabel
    from monitor.indices import LABELS, NEWS
    from monitor.labels_store import make_label, read_label_file

    settings = _settings(args)
    if args.label_command == "add":
        try:
            labels = [
                make_label(
                    {"item_id": args.item_id, "text": args.text, "sentiment": args.sentiment, "topic": args.topic},
                    args.by,
                )
            ]
        except InvalidLabel as exc:
            print(f"bearwatch: error: {exc}", file=sys.stderr)
            return 1
        rejected: list = []
    else:
        labels, rejected = read_label_file(args.file, args.by)
    client = connect(settings.elasticsearch)
    ensure_indices(client, settings.elasticsearch, embedding_dims=384)
    written = ElasticsearchLabels(client, settings.elasticsearch.index(LABELS), settings.elasticsearch.index(NEWS)).put(
        labels
    )
    for line, reason in rejected:
        print(f"{getattr(args, 'file', '')}:{line}: {reason}", file=sys.stderr)
    print(f"{written} label(s) written, {len(rejected)} row(s) rejected")
    return 1 if rejected and not written else 0


def cmd_produce(args: argparse.Namespace) -> int:
    from bearwatch.daemon import produce_file

    sent = produce_file(_settings(args), args.file, args.rate, args.topic)
    print(f"produced {sent} messages")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Metrics of one head of a model directory on a labelled file."""
    import json

    from monitor.evaluation import evaluate_file, format_report, memory_labels
    from monitor.model_artifact import ModelArtifact
    from monitor.retrieval.memory import InProcessMemory
    from monitor.scoring.onnx import OnnxScorer

    artifact = ModelArtifact.load(args.model)
    scorer = OnnxScorer.load(artifact, device=args.device, threads=args.threads, variant=args.variant)
    memory = None
    if args.labels:
        labels, rejected = memory_labels(args.labels, args.task)
        for line, reason in rejected:
            print(f"{args.labels}:{line}: {reason}", file=sys.stderr)
        if not labels:
            print(f"bearwatch: error: no usable label in {args.labels}", file=sys.stderr)
            return 1
        if scorer.memory_fusion is None:
            print(f"bearwatch: warning: model {scorer.version} does not use the retrieval memory", file=sys.stderr)
        memory = InProcessMemory(labels)
    report = evaluate_file(scorer, args.data, args.task, memory)
    if args.labels:
        report.update(memory_labels_file=str(args.labels), memory_rows_rejected=len(rejected))
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


def needs_training_extra(args: argparse.Namespace) -> int:
    print(
        f"bearwatch {args.command} needs the training extra: pip install 'bearwatch[train]' ({args.missing})",
        file=sys.stderr,
    )
    return 2


Adder = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]
Commands = Any  # argparse's subparsers action (a private type)


def _add_version_and_demo(add: Adder) -> None:
    """`version`, and `demo`: the embedded default."""
    version = add("version", cmd_version, "print the version (and, with -v, what it runs on)")
    version.add_argument(
        "-v", "--verbose", action="store_true", help="also list dependency versions and ONNX Runtime providers"
    )
    demo = add("demo", cmd_demo, "run the embedded default (no Kafka, no Elasticsearch) on a bundled news stream")
    demo.add_argument("--input", help="a JSONL news file, or - for standard input (default: the bundled stream)")
    demo.add_argument(
        "--output",
        "--out",
        dest="out",
        default="bearwatch-demo",
        help="folder for the scored items, dead letters and the history index",
    )
    demo.add_argument(
        "--model", help="model directory or registry (default: model.path of the settings, else the shipped model)"
    )
    demo.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    demo.add_argument("--config", help="settings TOML (optional)")
    demo.add_argument("--resume", action="store_true", help="keep --out and continue where the last run stopped")
    demo.add_argument(
        "--labels",
        help="labelled items (CSV/JSONL: text plus sentiment and/or topic, or text,label for sentiment) for the "
        "retrieval memory, as analysts' labels would be",
    )


def _add_monitor(commands: Commands) -> None:
    """`monitor run`: the scoring daemon."""
    monitor = commands.add_parser("monitor", help="the scoring daemon", description="the scoring daemon")
    monitor_commands = monitor.add_subparsers(dest="monitor_command", metavar="COMMAND")
    monitor_commands.required = True
    run = monitor_commands.add_parser(
        "run", help="consume news from Kafka, score, index in Elasticsearch, publish scored items"
    )
    run.set_defaults(handler=cmd_monitor_run)
    run.add_argument("--config", help="settings TOML (environment variables override it)")
    run.add_argument("--max-batches", type=int, help="stop after N batches (tests, drills)")
    run.add_argument("--idle-exit", type=float, help="stop after N seconds without messages (tests, drills)")


def _add_detect(commands: Commands) -> None:
    """`detect run | evaluate | series`."""
    detect = commands.add_parser("detect", help="spike detection", description="spike detection")
    detect_commands = detect.add_subparsers(dest="detect_command", metavar="COMMAND")
    detect_commands.required = True
    drun = detect_commands.add_parser(
        "run", help="the detection daemon: scored items in, alerts to Elasticsearch and Slack"
    )
    drun.set_defaults(handler=cmd_detect_run)
    drun.add_argument("--config", help="settings TOML (environment variables override it)")
    drun.add_argument("--max-batches", type=int)
    drun.add_argument("--idle-exit", type=float, help="stop after N seconds without scored items (tests, drills)")
    devaluate = detect_commands.add_parser(
        "evaluate",
        help="score the detector: on the real StockNet stream against price moves, on labelled real count "
        "series (detect series), or on synthetic streams",
    )
    devaluate.set_defaults(handler=cmd_detect_evaluate)
    devaluate.add_argument(
        "--suite",
        choices=("stocknet", "series", "synthetic"),
        default="synthetic",
        help="stocknet: real tweets against real price-move days (docs/detection.md); series: detect series on "
        "real count series with labelled anomaly windows; synthetic: planted episodes",
    )
    devaluate.add_argument(
        "--data",
        help="the folder holding stocknet-tweets/ and stocknet-prices/ (../shared/data)",
    )
    devaluate.add_argument(
        "--series",
        help="series suite: a folder of timestamp,value CSVs (default: the real labelled count series kept in "
        "bench/series and the StockNet tickers' hourly tweet volumes against their price moves)",
    )
    devaluate.add_argument(
        "--windows",
        help="series suite: JSON of labelled windows per file, as NAB's combined_windows.json (default: "
        "SERIES/windows.json; without one, each file's label column, 1 on anomalous rows, windowed as NAB does)",
    )
    devaluate.add_argument("--tweets", help="StockNet tweets_stream.csv (overrides --data)")
    devaluate.add_argument("--prices", help="StockNet prices_daily.csv (overrides --data)")
    devaluate.add_argument("--model", help="model directory that scores the stream (default: the shipped one)")
    devaluate.add_argument(
        "--baseline-model",
        help="stocknet suite: a second model directory; both score the stream and the default configuration "
        "runs on each, with --model minus this one's figures and their 95%% intervals (the tickers resampled)",
    )
    devaluate.add_argument(
        "--min-tweets", type=int, default=5, help="a price-move day counts for recall with this many tweets"
    )
    devaluate.add_argument(
        "--seeds", type=int, default=10, help="streams per configuration (two weeks, 30 tickers, 8 episodes each)"
    )
    devaluate.add_argument("--compare", action="store_true", help="also score the alternative configurations")
    devaluate.add_argument("--json", action="store_true")
    series = detect_commands.add_parser("series", help="run the count-spike detector over a timestamp,value CSV")
    series.set_defaults(handler=cmd_detect_series)
    series.add_argument("--input", required=True, help="CSV with timestamp,value columns")
    series.add_argument("--output", required=True, help="CSV timestamp,anomaly_score,flag for every input row")


def _add_model(commands: Commands) -> None:
    """`model list | show | register | promote | rollback | init`: the registry."""
    model = commands.add_parser("model", help="the model registry: list, show, register, promote, rollback")
    model_commands = model.add_subparsers(dest="model_command", metavar="COMMAND")
    model_commands.required = True
    for name, help_text in (
        ("list", "versions, their status and validation figures (* = current)"),
        ("show", "a version's model card (default: the current one)"),
        ("register", "copy a model directory into the registry"),
        ("promote", "make a version current (atomic)"),
        ("rollback", "make the previously promoted version current again"),
        ("init", "register and promote a model when the registry has none yet (deployments' first start)"),
    ):
        sub = model_commands.add_parser(name, help=help_text)
        sub.set_defaults(handler=cmd_model)
        sub.add_argument("--registry", help="registry folder (default: trainer.registry of the settings)")
        sub.add_argument("--config", help="settings TOML (for trainer.registry)")
        if name == "list":
            sub.add_argument("--json", action="store_true", help="print the versions as one JSON list")
        if name in ("show", "promote"):
            sub.add_argument("version", nargs="?" if name == "show" else None)
        if name == "register":
            sub.add_argument("model_dir")
        if name == "init":
            sub.add_argument("model_dir", nargs="?", help="default: the model the package ships")
        if name in ("promote", "rollback"):
            sub.add_argument("--reason")


def _add_label(commands: Commands) -> None:
    """`label add | import`: analysts' labels."""
    label = commands.add_parser("label", help="analysts' labels for retraining: add one, or import a file")
    label_commands = label.add_subparsers(dest="label_command", metavar="COMMAND")
    label_commands.required = True
    ladd = label_commands.add_parser("add", help="label (or correct) one item")
    ladd.add_argument("--text", required=True)
    ladd.add_argument("--item-id", help="the news item's id (default: derived from the text)")
    ladd.add_argument("--sentiment", help="bearish, neutral, bullish (negative/positive accepted)")
    ladd.add_argument("--topic", help="one of the 20 topic names")
    limport = label_commands.add_parser(
        "import",
        help="labels from a CSV (text plus sentiment and/or topic; item_id, labelled_by optional) or JSONL file",
    )
    limport.add_argument("file")
    for sub in (ladd, limport):
        sub.set_defaults(handler=cmd_label)
        sub.add_argument("--by", required=True, help="who labelled (recorded with each label)")
        sub.add_argument("--config", help="settings TOML")


def _add_bench_and_drill(add: Adder) -> None:
    """`bench NAME` and `drill NAME`."""
    bench = add(
        "bench",
        cmd_bench,
        "run a benchmark: model_ceiling, scoring_stage, naive_baseline, retrieval, memory, gpu (each prints a table, "
        "--json FILE)",
    )
    bench.add_argument("name")
    bench.add_argument(
        "args", nargs=argparse.REMAINDER, help="the script's own arguments (bearwatch bench NAME --help)"
    )

    drills = [
        "crash",
        "rebalance",
        "es-outage",
        "kafka-restart",
        "slack",
        "hostile",
        "secrets",
        "disk",
        "poison",
        "replay",
    ]
    drill = add("drill", cmd_drill, f"fault drills on the local Kafka and Elasticsearch: {', '.join(drills)}, all")
    drill.add_argument("name", choices=[*drills, "all"])
    drill.add_argument(
        "--scale", choices=["ci", "full"], default="full", help="ci: the shortened form the tests run (default: full)"
    )


def _add_dashboards(commands: Commands) -> None:
    """`dashboards export | validate | import`: Kibana's saved objects."""
    dash = commands.add_parser(
        "dashboards", help="Kibana dashboards: export the saved objects, validate them, import them"
    )
    dash_commands = dash.add_subparsers(dest="dashboards_command", metavar="COMMAND")
    dash_commands.required = True
    dexport = dash_commands.add_parser(
        "export", help="write the saved objects (NDJSON) generated from the chart definitions"
    )
    dexport.add_argument("--output", "--out", dest="out", required=True, help="file to write (- for standard output)")
    dvalidate = dash_commands.add_parser(
        "validate", help="check an NDJSON file: JSON, nested JSON, references, fields vs. the mappings"
    )
    dvalidate.add_argument("file")
    dimport = dash_commands.add_parser(
        "import",
        help="import into Kibana (API key in BEARWATCH_KIBANA_API_KEY, or --username with BEARWATCH_KIBANA_PASSWORD)",
    )
    dimport.add_argument("--kibana-url", required=True)
    dimport.add_argument("--file", help="NDJSON to import (default: generated now)")
    dimport.add_argument("--username", help="basic auth user (password in BEARWATCH_KIBANA_PASSWORD)")
    dimport.add_argument("--space", help="Kibana space id (default: the default space)")
    for sub in (dexport, dimport):
        sub.add_argument("--index-prefix", help="the indices' prefix (default: elasticsearch.index_prefix)")
        sub.add_argument("--config", help="settings TOML (for elasticsearch.index_prefix)")
    for sub in (dexport, dvalidate, dimport):
        sub.set_defaults(handler=cmd_dashboards)


def _add_produce_and_evaluate(add: Adder) -> None:
    """`produce` (a file to Kafka) and `evaluate` (a model on a labelled file)."""
    produce = add("produce", cmd_produce, "publish a JSONL news file to Kafka (demos, tests, replays)")
    produce.add_argument("file")
    produce.add_argument("--rate", type=float, help="messages per second (default: as fast as possible)")
    produce.add_argument("--topic", help="default: the news topic of the settings")
    produce.add_argument("--config", help="settings TOML")

    evaluate = add(
        "evaluate",
        cmd_evaluate,
        "accuracy, macro-F1, per-class metrics and confusion matrix of a model on a labelled file",
    )
    evaluate.add_argument("--model", required=True, help="model directory")
    evaluate.add_argument("--data", required=True, help="CSV (text,label) or JSONL file")
    evaluate.add_argument("--task", required=True, choices=["sentiment", "topic"])
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument(
        "--variant", choices=["fp32", "int8"], help="ONNX file to use (default: the one the manifest serves)"
    )
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    evaluate.add_argument("--threads", type=int, default=0)
    evaluate.add_argument(
        "--labels",
        help="CSV (text,label) or JSONL of labelled items to put in the model's retrieval memory first, as "
        "analysts' labels would be (an item never retrieves its own text or a near-duplicate)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bearwatch",
        description="Streaming financial-news sentiment monitor.",
    )
    parser.add_argument("--version", action="version", version=f"bearwatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        # argparse %-formats a help string (a literal percent is %%) but not a description
        sub = commands.add_parser(name, help=help_text, description=help_text.replace("%%", "%"))
        sub.set_defaults(handler=handler)
        return sub

    _add_version_and_demo(add)
    _add_monitor(commands)
    _add_detect(commands)
    _add_model(commands)
    _add_label(commands)
    _add_bench_and_drill(add)
    _add_dashboards(commands)
    _add_produce_and_evaluate(add)
    training_cli, missing = _training_commands()
    if training_cli is not None:
        training_cli.add_commands(commands, add)
    else:
        for name in ("train", "export", "package", "trainer"):
            add(name, needs_training_extra, f"(needs bearwatch[train]: {missing})").set_defaults(missing=missing)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    from monitor.progress import log_lines

    log_lines()
    logging.getLogger("elastic_transport").setLevel(logging.WARNING)  # one line per HTTP request otherwise
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.handler is not needs_training_extra:  # a placeholder takes any arguments
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    from monitor.errors import BearwatchError

    try:
        return args.handler(args)
    except BearwatchError as exc:
        print(f"bearwatch: error: {exc}", file=sys.stderr)
        return 1
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        # A path the user gave that cannot be read or written: their error, said in one line.
        print(f"bearwatch: error: {exc.filename or exc}: {exc.strerror or exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
