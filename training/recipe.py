"""`bearwatch train`: run the whole recipe and write a self-describing model directory."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monitor.labels import TASKS
from monitor.model_artifact import (
    FORMAT_VERSION,
    MANIFEST,
    ContextSettings,
    ModelArtifact,
)
from monitor.retrieval.vectors import Query, VectorIndex
from monitor.scoring.fusion import MemoryFusion
from monitor.scoring.onnx import OnnxScorer
from training.export import export_model, save_torch
from training.fusion import measure_fusion, measure_memory
from training.model_card import write_model_card
from training.train import (
    LABELS,
    Batches,
    Dataset,
    TrainConfig,
    config_record,
    fit,
    load_dataset,
    predict,
    resolve_base_model,
)

log = logging.getLogger("bearwatch.train")

HISTORY_FILE = "history.npz"


def train_model(config: TrainConfig, export: bool = True) -> Path:
    run_dir = Path(config.output)
    run_dir.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.monotonic()
    base_dir = resolve_base_model(config.base_model)
    from monitor.scoring.inputs import load_tokenizer

    tokenizer = load_tokenizer(base_dir / "tokenizer.json")
    data = load_dataset(config)
    log.info("split: %d train, %d validation (grouped by normalised text)", len(data.train), len(data.valid))
    write_validation_files(data, config, run_dir)
    if config.average:
        from training.average import average_models

        result = average_models(config, data, tokenizer, config.average)
    else:
        result = fit(config, data, tokenizer, base_dir, run_dir)

    settings = ContextSettings(mode="none", max_length=config.max_length)
    pool_out = predict(result.model, Batches(data.train, tokenizer, settings, 64))
    valid_out = predict(result.model, Batches(data.valid, tokenizer, settings, 64))
    pool = VectorIndex.build(
        [e.id for e in data.train],
        pool_out["embedding"],
        [e.group for e in data.train],
        [e.text for e in data.train],
        [e.sentiment for e in data.train],
        [e.topic for e in data.train],
    )
    neighbours = pool.search(
        [Query(v, group=e.group) for v, e in zip(valid_out["embedding"], data.valid)], config.k, config.near_duplicate
    )
    fusion = _measure_context(config, data, valid_out, neighbours)

    model_dir = run_dir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir()
    shutil.copy(base_dir / "tokenizer.json", model_dir / "tokenizer.json")
    save_torch(result.model, model_dir)
    context = {"mode": "none", "k": 0, "max_length": config.max_length, "near_duplicate": config.near_duplicate}
    kept = {task: m for task, m in fusion.items() if m["kept"]}
    if config.context_mode == "fusion" and kept:
        pool.save(model_dir / HISTORY_FILE)
        for task, m in kept.items():
            m["head"].save(model_dir / f"fusion-{task}.npz")
        context.update(
            mode="fusion",
            k=config.k,
            history=HISTORY_FILE,
            fusion={t: f"fusion-{t}.npz" for t in kept},
            temperature=config.temperature,
        )

    memory = None
    if config.memory and context["mode"] != "concat":
        # Analysts' labels move this model's scores at serving (monitor/retrieval/memory.py); what
        # the memory does on the validation split with the training labels in it is measured here.
        fusion_rule = MemoryFusion()
        context["memory"] = fusion_rule.to_json()
        memory = measure_memory(fusion_rule, LABELS, data.train, pool_out, data.valid, valid_out)
        for task, m in memory.items():
            log.info(
                "%s: retrieval memory (training labels) %.4f -> %.4f accuracy on validation",
                task,
                m["without"]["accuracy"],
                m["with_memory"]["accuracy"],
            )
    manifest = _manifest(config, data, result, fusion, context, base_dir, model_dir, time.monotonic() - started)
    if memory is not None:
        manifest["metrics"]["memory"] = memory
    (model_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if export:
        labelled = [(e.text, t, getattr(e, t)) for e in data.valid for t in TASKS if getattr(e, t)]
        export_model(model_dir, [e.text for e in data.valid[:256]], labelled)
        _record_speed(model_dir, [e.text for e in data.valid[:2048]], config.threads or 2)
    write_model_card(model_dir)
    log.info("model written to %s in %.0fs", model_dir, time.monotonic() - started)
    return model_dir


def write_validation_files(data: Dataset, config: TrainConfig, run_dir: Path) -> list[Path]:
    """The validation split, one labelled CSV per source, for `bearwatch evaluate` on the same items."""
    import csv

    written = []
    for source in config.sources:
        path = run_dir / f"validation-{source.label}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows((e.text, getattr(e, source.task)) for e in data.valid if e.source == source.label)
        written.append(path)
    return written


def _measure_context(config: TrainConfig, data: Dataset, valid_out: dict, neighbours: list) -> dict:
    measured = {}
    for task in TASKS:
        rows = [i for i, e in enumerate(data.valid) if getattr(data.valid[i], task)]
        if len(rows) < 20:
            continue
        m = measure_fusion(
            task,
            LABELS[task],
            valid_out[task][rows],
            [neighbours[i] for i in rows],
            [getattr(data.valid[i], task) for i in rows],
            [data.valid[i].group for i in rows],
            config.temperature,
            seed=config.seed,
        )
        gain = m.with_context["macro_f1"] - m.no_context["macro_f1"]
        # Kept only if it adds macro-F1 and costs no accuracy (a negative setting relaxes both).
        accuracy_change = m.with_context["accuracy"] - m.no_context["accuracy"]
        kept = gain >= config.min_context_gain and accuracy_change >= min(0.0, config.min_context_gain)
        log.info("%s: context adds %+.4f macro-F1 (cross-fitted) -> %s", task, gain, "kept" if kept else "not kept")
        measured[task] = {"measurement": m, "gain": gain, "kept": kept, "head": m.head}
    return measured


def _summary(report: dict) -> dict:
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "n": report["n"]}


def _manifest(config, data, result, fusion, context, base_dir: Path, model_dir: Path, seconds: float) -> dict:
    weights = hashlib.sha256((model_dir / "torch" / "weights.pt").read_bytes()).hexdigest()
    created = datetime.now(timezone.utc)
    validation = {}
    for task, m in fusion.items():
        meas = m["measurement"]
        validation[task] = {
            "encoder_only": meas.encoder_only,
            "no_context_crossfit": _summary(meas.no_context),
            "with_context_crossfit": _summary(meas.with_context),
            "neighbour_label_vote": _summary(meas.neighbour_vote),
            "context_gain_macro_f1": m["gain"],
            "context_kept": m["kept"],
        }
    return {
        "format_version": FORMAT_VERSION,
        "version": f"{created:%Y%m%d-%H%M%S}-{weights[:8]}",
        "created_at": created.isoformat(timespec="seconds"),
        "bearwatch_version": version("bearwatch"),
        "base_model": {
            "name": config.base_model,
            "config": json.loads((base_dir / "config.json").read_text()).get("_name_or_path", base_dir.name),
        },
        "labels": {task: list(LABELS[task]) for task in TASKS},
        "context": context,
        "data": {
            "sources": config_record(config)["sources"],
            "loaded": [
                {"path": Path(r.path).name, "rows": r.rows, "kept": r.kept, "rejected": len(r.rejected)}
                for r in data.reports
            ],
            "split": {
                "method": "grouped by normalised text",
                "valid_fraction": config.valid_fraction,
                "seed": config.seed,
                "train": len(data.train),
                "valid": len(data.valid),
            },
        },
        "training": {
            "config": {k: v for k, v in config_record(config).items() if k not in ("sources", "output", "resume")},
            "history": result.history,
            "best": result.best,
            "fine_tune_seconds": round(result.seconds, 1),
            "total_seconds": round(seconds, 1),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "metrics": {"validation": validation},
    }


def _record_speed(model_dir: Path, texts: list[str], threads: int) -> None:
    """Items/s from text to probabilities (tokenising, encoder, retrieval, fusion), batch 32."""
    manifest_path = model_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    speed: dict[str, Any] = {"threads": threads, "batch_size": 32, "items": len(texts)}
    artifact = ModelArtifact.load(model_dir)
    for variant in manifest["onnx"]["files"]:
        scorer = OnnxScorer.load(artifact, device="cpu", threads=threads, variant=variant, batch_size=32)
        scorer.score_texts(texts[:64])  # warm-up
        runs = []
        for _ in range(3):
            t0 = time.perf_counter()
            scorer.score_texts(texts)
            runs.append(len(texts) / (time.perf_counter() - t0))
        speed[variant] = {"items_per_s": float(np.median(runs)), "runs": [round(r, 1) for r in runs]}
    manifest["speed"] = speed
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
