"""Handlers of `bearwatch train` and `bearwatch export` (imported only when those run)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def cmd_train(args: argparse.Namespace) -> int:
    from training.recipe import train_model
    from training.train import TrainConfig, TrainingStopped

    overrides = dict(
        output=args.output,
        base_model=args.base_model,
        method=args.method,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        limit_per_source=args.limit_per_source,
        context_mode=args.context,
        threads=args.threads,
        resume=args.resume or None,
        checkpoint_minutes=args.checkpoint_minutes,
        max_length=args.max_length,
        data_root=args.data_root,
        soft_labels=args.soft_labels,
        average=args.average,
    )
    config = TrainConfig.from_toml(args.config, **overrides)
    try:
        model_dir = train_model(config, export=not args.no_export)
    except TrainingStopped as stopped:
        print(f"bearwatch: {stopped}; go on with --resume", file=sys.stderr)
        return 130
    print(model_dir)
    return 0


def cmd_distil_labels(args: argparse.Namespace) -> int:
    """The teacher's logits for the recipe's training texts (resumable), and its figures on validation."""
    import torch

    from monitor.labels import TASKS
    from training.distil import load_teacher, logit_line, teacher_logits, write_soft_labels
    from training.train import LABELS, TrainConfig, load_dataset

    config = TrainConfig.from_toml(
        args.config,
        output=".",
        data_root=args.data_root,
        soft_labels=args.output,
        limit_per_source=args.limit_per_source,
    )
    if not config.soft_labels:
        raise SystemExit("give --output FILE (or set soft_labels in the recipe)")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(config)
    teacher = load_teacher(args.teacher, args.base_model)
    # The labelled training texts first, then the unlabelled ones: a run cut short (a session's end)
    # leaves a file that at least covers a recipe without unlabelled sources.
    counts: dict[str, int] = {}
    for part in (data.train, data.unlabelled):
        done = write_soft_labels(
            teacher, [e.text for e in part], config.soft_labels, LABELS, config.max_length, args.batch_size
        )
        counts = {k: counts.get(k, 0) + v for k, v in done.items()}
    summary: dict = {"soft_labels": config.soft_labels, "teacher": teacher.description, **counts}
    if not args.no_validation:
        # The teacher's own figures, on the validation split the student is judged on (never written to the file).
        logits = teacher_logits(teacher, [e.text for e in data.valid], config.max_length, args.batch_size)
        summary["teacher_validation"] = _figures(data.valid, logits)
        by_source: dict[str, list[int]] = {}
        for i, e in enumerate(data.valid):
            by_source.setdefault(e.source, []).append(i)
        summary["teacher_validation_by_source"] = {
            name: _figures([data.valid[i] for i in rows], {t: logits[t][rows] for t in TASKS})
            for name, rows in sorted(by_source.items())
        }
        Path(config.soft_labels + ".teacher.json").write_text(json.dumps(summary, indent=2) + "\n")
        # The teacher's own logits on validation, by text key, apart from the soft labels (which
        # never hold a validation text): what compares it with a student item by item later.
        with open(config.soft_labels + ".validation.jsonl", "w", encoding="utf-8") as fh:
            for i, e in enumerate(data.valid):
                fh.write(logit_line(e.text, {t: logits[t][i] for t in TASKS}))
    print(json.dumps(summary, indent=2))
    return 0


def _figures(examples, logits) -> dict:
    """Accuracy, macro-F1 and n per head, and each class's precision and recall."""
    from monitor.labels import TASKS
    from training.train import head_reports

    reports = head_reports(examples, logits)
    return {
        t: {
            **{m: reports[t][m] for m in ("accuracy", "macro_f1", "n")},
            "per_class": {
                label: {m: round(v[m], 4) for m in ("precision", "recall")}
                for label, v in reports[t]["per_class"].items()
            },
        }
        for t in TASKS
        if t in reports
    }


def cmd_compare(args: argparse.Namespace) -> int:
    """Models (and kept teacher logits) on the recipe's validation split, paired, with intervals."""
    from dataclasses import replace

    from training.compare import compare, format_rows, groups_of, logits_probabilities, model_probabilities, predictions
    from training.train import LABELS, TrainConfig, load_dataset

    config = TrainConfig.from_toml(args.config, output=".", data_root=args.data_root)
    config = replace(config, unlabelled=())  # the split is the labelled sources'
    valid = load_dataset(config).valid
    texts = [e.text for e in valid]
    probabilities = {}
    for model in args.model:
        version, probs = model_probabilities(model, texts, LABELS)
        probabilities[version] = probs
    for spec in args.logits or []:
        name, _, path = spec.partition("=")
        if not path:
            raise SystemExit(f"--logits {spec!r}: give NAME=FILE")
        probabilities[name] = logits_probabilities(path, texts)
    rows = compare(groups_of(valid, LABELS), predictions(probabilities, args.average), LABELS)
    print(format_rows(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"config": args.config, "rows": rows}, indent=2) + "\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from monitor.model_artifact import ModelArtifact
    from monitor.retrieval.vectors import VectorIndex
    from training.export import export_model
    from training.model_card import write_model_card

    model_dir = Path(args.model)
    artifact = ModelArtifact.load(model_dir) if (model_dir / "manifest.json").exists() else None
    if artifact is None:
        raise SystemExit(f"{model_dir} is not a bearwatch model directory")
    if args.texts:
        texts = [line.strip() for line in Path(args.texts).read_text(encoding="utf-8").splitlines() if line.strip()]
    elif artifact.history_file:
        texts = VectorIndex.load(model_dir / artifact.history_file).texts[:256].tolist()
    else:
        raise SystemExit("give --texts FILE (one text per line) for the parity check")
    section = export_model(model_dir, texts, int8=not args.no_int8, tolerance=args.tolerance)
    write_model_card(model_dir)
    print(json.dumps(section["parity"], indent=2))
    return 0


def cmd_package(args: argparse.Namespace) -> int:
    from training.package import package_model

    notes = Path(args.notes).read_text(encoding="utf-8") if args.notes else None
    out = package_model(args.model, args.out, args.variant, args.reproduce, notes)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out} ({size / 1e6:.1f} MB)")
    return 0


def cmd_trainer(args: argparse.Namespace) -> int:
    """`trainer run-once`: one cycle; `trainer run`: the scheduled daemon (Ctrl-C / SIGTERM stops it)."""
    from monitor.elastic.client import connect
    from monitor.elastic.labels import ElasticsearchLabels
    from monitor.indices import LABELS, NEWS
    from monitor.settings import load_settings
    from monitor.wiring import slack_delivery
    from training.schedule import poll_inbox, run_once, scheduler, slack_notifier

    settings = load_settings(args.config)
    labels = ElasticsearchLabels(
        connect(settings.elasticsearch), settings.elasticsearch.index(LABELS), settings.elasticsearch.index(NEWS)
    )
    trainer = settings.trainer
    notify = slack_notifier(slack_delivery(settings), trainer.notify_slack)
    if args.trainer_command == "run-once":
        result = run_once(trainer, labels, notify=notify)
        print(
            json.dumps(
                {
                    "outcome": result.outcome,
                    "reason": result.reason,
                    "candidate": result.candidate,
                    "metrics": result.metrics,
                },
                indent=2,
            )
        )
        return 1 if result.outcome == "failed" else 0

    import time

    from monitor.observability import TrainerMetrics
    from monitor.registry import ModelRegistry
    from monitor.wiring import serve_health

    metrics = TrainerMetrics()

    def job() -> None:
        started = time.monotonic()
        result = run_once(trainer, labels, notify=notify)
        metrics.cycle(result.outcome, time.monotonic() - started, ModelRegistry(trainer.registry).current_version())
        logging.getLogger("bearwatch.trainer").info("cycle: %s (%s)", result.outcome, result.reason)

    def inbox_job() -> None:
        metrics.inbox_labels.inc(poll_inbox(trainer, labels))

    s = scheduler(trainer, job, inbox_job=inbox_job if trainer.inbox else None)
    health = serve_health(settings, "trainer", metrics.registry)
    if health is not None:  # alive while the scheduler runs its jobs (a long training run does not block this one)
        s.add_job(health.loop_turned, "interval", seconds=30, id="bearwatch-heartbeat", coalesce=True, max_instances=1)
    logging.getLogger("bearwatch.trainer").info(
        "retraining on schedule %s (%s)%s",
        trainer.schedule,
        trainer.timezone,
        f"; labels inbox {trainer.inbox}" if trainer.inbox else "",
    )
    try:
        s.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


def add_commands(commands, add) -> None:
    train = add("train", cmd_train, "fine-tune the topic + sentiment model (retrieval-augmented) and export it")
    train.add_argument("--config", required=True, help="TOML recipe (see training/configs/)")
    train.add_argument("--output", required=True, help="run folder (the model lands in OUTPUT/model)")
    train.add_argument(
        "--data-root", help="folder the recipe's source paths are relative to (default: the recipe's data_root)"
    )
    train.add_argument("--base-model", help="local Hugging Face model directory, or minilm-l6 (default)")
    train.add_argument("--method", choices=["full", "lora"])
    train.add_argument("--context", choices=["none", "fusion"], help="retrieved context in the served model")
    train.add_argument("--epochs", type=int)
    train.add_argument("--lr", type=float)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--max-length", type=int)
    train.add_argument("--seed", type=int)
    train.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    train.add_argument("--limit-per-source", type=int, help="use only the first N rows of each file (smoke runs)")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUTPUT/checkpoint-last.pt (saved at each epoch's end, every --checkpoint-minutes "
        "and on SIGTERM/SIGINT, at the batch it stopped at)",
    )
    train.add_argument("--checkpoint-minutes", type=float, help="save a resumable checkpoint this often (default 10)")
    train.add_argument("--no-export", action="store_true", help="skip ONNX export")
    train.add_argument("--soft-labels", help="distil from this file of a teacher's logits (bearwatch distil-labels)")
    train.add_argument(
        "--average",
        action="append",
        metavar="MODEL_DIR",
        help="instead of training, average the weights of these models (twice or more; fine-tuned from the "
        "recipe's base on its split, each with torch/weights.pt) and package the mean like a trained model",
    )

    distil = add(
        "distil-labels",
        cmd_distil_labels,
        "write a trained teacher's soft labels for a recipe's training and unlabelled texts (resumable)",
    )
    distil.add_argument("--config", required=True, help="the student's TOML recipe (its sources and unlabelled files)")
    distil.add_argument("--teacher", required=True, help="a model directory or run folder with PyTorch weights")
    distil.add_argument("--base-model", help="for a teacher that is an unfinished run's best.pt: its base encoder")
    distil.add_argument("--output", help="the soft-label file (default: the recipe's soft_labels); appended to")
    distil.add_argument("--data-root", help="folder the recipe's source paths are relative to")
    distil.add_argument("--batch-size", type=int, default=64)
    distil.add_argument("--threads", type=int, help="torch CPU threads")
    distil.add_argument("--limit-per-source", type=int, help="the first N rows of each labelled file (smoke runs)")
    distil.add_argument("--no-validation", action="store_true", help="skip the teacher's figures on validation")

    comp = add(
        "compare",
        cmd_compare,
        "models (and a teacher's kept logits) on a recipe's own validation split, paired, with 95%% intervals",
    )
    comp.add_argument("--config", required=True, help="the recipe whose validation split is used")
    comp.add_argument("--model", action="append", default=[], help="a model directory (repeat; the first is the base)")
    comp.add_argument("--logits", action="append", help="NAME=FILE: a teacher's validation logits (distil-labels)")
    comp.add_argument(
        "--average", action="store_true", help="also the mean of all their probabilities (an ensemble's figures)"
    )
    comp.add_argument("--data-root", help="folder the recipe's source paths are relative to")
    comp.add_argument("--json", help="write the figures here")

    export = add("export", cmd_export, "export a trained model directory to ONNX (parity-checked, optional int8)")
    export.add_argument("--model", required=True)
    export.add_argument("--texts", help="texts for the parity check, one per line (default: the model's pool)")
    export.add_argument("--no-int8", action="store_true")
    export.add_argument("--tolerance", type=float, default=1e-3, help="max |Δlogit| allowed between ONNX and PyTorch")

    trainer = commands.add_parser("trainer", help="scheduled retraining on new labels, with a promotion gate")
    trainer_commands = trainer.add_subparsers(dest="trainer_command", metavar="COMMAND")
    trainer_commands.required = True
    for name, help_text in (("run", "the daemon: a cycle on the configured schedule"), ("run-once", "one cycle now")):
        sub = trainer_commands.add_parser(name, help=help_text)
        sub.set_defaults(handler=cmd_trainer)
        sub.add_argument("--config", help="settings TOML ([trainer], [elasticsearch])")

    package = add("package", cmd_package, "copy a model directory for shipping: one ONNX variant, no PyTorch weights")
    package.add_argument("--model", required=True)
    package.add_argument("--output", "--out", dest="out", required=True)
    package.add_argument("--variant", choices=["fp32", "int8"], default="int8")
    package.add_argument("--reproduce", help="the command that reproduces this model, for its card")
    package.add_argument("--notes", help="a Markdown file of notes for the card")
