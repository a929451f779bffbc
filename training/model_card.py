"""A human-readable card generated from a model's manifest (MODEL_CARD.md in the model directory)."""

from __future__ import annotations

import json
from pathlib import Path

from monitor.model_artifact import MANIFEST


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _validation_table(validation: dict) -> list[str]:
    lines = [
        "| head | variant | accuracy | macro-F1 | n |",
        "|---|---|---|---|---|",
    ]
    names = {
        "encoder_only": "encoder on the text alone (no context)",
        "no_context_crossfit": "fusion layer, logits only (control, cross-fitted)",
        "with_context_crossfit": "fusion layer + retrieved neighbours (cross-fitted)",
        "neighbour_label_vote": "neighbours' labels alone (similarity-weighted vote)",
    }
    for task, rows in validation.items():
        for key, label in names.items():
            r = rows[key]
            lines.append(f"| {task} | {label} | {_pct(r['accuracy'])} | {_pct(r['macro_f1'])} | {r['n']} |")
    return lines


def _training_paragraph(training: dict, config: dict) -> str:
    averaged = training["best"].get("averaged")
    if averaged:
        return (
            f"Not trained in this run: the mean of the weights of {len(averaged)} models fine-tuned from the same "
            f"base on the same split ({', '.join(averaged)}; training/average.py). The whole run took "
            f"{training['total_seconds'] / 60:.1f} min (torch {training['torch']})."
        )
    return (
        f"{config['epochs']} epoch(s) planned, batch {config['batch_size']}, learning rate {config['lr']}, warm-up "
        f"{config['warmup']}, max length {config['max_length']} tokens, seed {config['seed']}; early stopping on the "
        f"mean macro-F1 of the heads (patience {config['patience']}). Best evaluation: step {training['best']['step']} "
        f"(epoch {training['best']['epoch']:.2f}). Fine-tuning took {training['fine_tune_seconds'] / 60:.1f} min, "
        f"the whole run {training['total_seconds'] / 60:.1f} min, on {training['threads']} CPU threads (torch "
        f"{training['torch']})."
    )


def render(manifest: dict) -> str:
    training = manifest["training"]
    config = training["config"]
    data = manifest["data"]
    context = manifest["context"]
    validation = manifest["metrics"]["validation"]
    out = [
        f"# bearwatch model {manifest['version']}",
        "",
        f"Created {manifest['created_at']} by bearwatch {manifest['bearwatch_version']}. Base encoder: "
        f"`{manifest['base_model']['name']}` ({manifest['base_model']['config']}), fine-tuned with "
        f"{'LoRA' if config['method'] == 'lora' else 'full fine-tuning'} and two heads: topic "
        f"({len(manifest['labels']['topic'])} classes) and sentiment ({', '.join(manifest['labels']['sentiment'])}).",
        "",
        "## Data",
        "",
        "| file | head | rows | kept | rejected | sha256 |",
        "|---|---|---|---|---|---|",
    ]
    for src, loaded in zip(data["sources"], data["loaded"]):
        out.append(
            f"| {src['path']} | {src['task']} | {loaded['rows']} | {loaded['kept']} | {loaded['rejected']} | "
            f"`{src['sha256'][:16]}…` |"
        )
    split = data["split"]
    out += [
        "",
        f"Split {split['method']}, {int(100 * split['valid_fraction'])}% validation (seed {split['seed']}): "
        f"{split['train']} training and {split['valid']} validation examples; near-duplicates never straddle the "
        "split.",
        "",
        "## Training",
        "",
        _training_paragraph(training, config),
        "",
        "## Validation (own grouped split)",
        "",
        *_validation_table(validation),
        "",
        "Retrieved context: the k nearest labelled training examples by the model's own representation, "
        "excluding the item's near-duplicate group and anything at or above the near-duplicate similarity. "
        "The fusion layer is fitted on validation folds the encoder never saw and evaluated on the other "
        "fold (cross-fitting); the control fits the same layer on the logits alone, so the difference is what "
        "context adds.",
        "",
    ]
    for task, rows in validation.items():
        out.append(
            f"- {task}: context adds {100 * rows['context_gain_macro_f1']:+.1f} macro-F1 points → "
            f"{'kept in this model' if rows['context_kept'] else 'not used by this model'}."
        )
    out += [
        "",
        f"Serving context mode: **{context['mode']}**"
        + (f" (k = {context['k']})" if context["mode"] != "none" else "")
        + ".",
        "",
    ]
    out += _memory_section(manifest)
    onnx = manifest.get("onnx")
    if onnx:
        parity = onnx["parity"]["fp32_vs_torch"]
        out += [
            "## ONNX",
            "",
            f"Files: {', '.join(f'{k} `{v}`' for k, v in onnx['files'].items())}; served: **{onnx['serve']}**. "
            f"fp32 vs PyTorch on {parity['n']} validation texts: max |Δlogit| {parity['max_abs_logit_diff']:.2e}, "
            f"argmax agreement {', '.join(f'{t} {_pct(a)}%' for t, a in parity['argmax_agreement'].items())}.",
        ]
        if "int8_vs_fp32" in onnx["parity"]:
            p8 = onnx["parity"]["int8_vs_fp32"]
            out.append(
                f"int8 vs fp32: max |Δlogit| {p8['max_abs_logit_diff']:.3f}, argmax agreement "
                f"{', '.join(f'{t} {_pct(a)}%' for t, a in p8['argmax_agreement'].items())}."
            )
        for task, change in onnx.get("int8_accuracy_change", {}).items():
            out.append(
                f"- {task} (encoder heads, n={change['n']}): accuracy {_pct(change['fp32']['accuracy'])} → "
                f"{_pct(change['int8']['accuracy'])}, macro-F1 {_pct(change['fp32']['macro_f1'])} → "
                f"{_pct(change['int8']['macro_f1'])} (fp32 → int8)."
            )
        out.append("")
    speed = manifest.get("speed")
    if speed:
        out += [
            "## Speed",
            "",
            "Items/s from text to probabilities (tokenising, ONNX Runtime, retrieval and fusion), batch "
            f"{speed['batch_size']}, "
            f"{speed['threads']} CPU threads, {speed['items']} validation texts, median of 3 runs:",
            "",
            "| variant | items/s |",
            "|---|---|",
            *[f"| {v} | {speed[v]['items_per_s']:.0f} |" for v in ("fp32", "int8") if v in speed],
            "",
        ]
    if manifest.get("reproduce"):
        out += ["## Reproduce", "", "```bash", manifest["reproduce"], "```", ""]
    if manifest.get("notes"):
        out += ["## Notes", "", manifest["notes"], ""]
    return "\n".join(out)


def _memory_section(manifest: dict) -> list[str]:
    memory = manifest["context"].get("memory")
    if not memory:
        return []
    metrics = manifest.get("metrics", {})
    out = [
        "## Retrieval memory",
        "",
        "Analysts' labels move this model's scores at serving, with no retraining: each item's "
        f"{memory['k']} nearest labelled items by the model's embedding correct its logits by "
        f"{memory['strength']:g} × the log ratio of their labels to the model's own predictions for them "
        f"(ε {memory['epsilon']:g}, gated on the nearest similarity at {memory['threshold']:g}); with no "
        'neighbour the score is the encoder\'s. See docs/training.md, "Retrieval memory".',
        "",
    ]
    base = metrics.get("memory")
    if base:
        out += [
            "On the validation split, with the training split's labels in memory:",
            "",
            "| head | memory | accuracy | macro-F1 | n |",
            "|---|---|---|---|---|",
        ]
        for task, m in base.items():
            for name, key in (("empty", "without"), (f"{m['memory_items']} training labels", "with_memory")):
                r = m[key]
                out.append(f"| {task} | {name} | {_pct(r['accuracy'])} | {_pct(r['macro_f1'])} | {r['n']} |")
        out.append("")
    adaptation = metrics.get("memory_adaptation")
    if adaptation:
        sizes = list(next(iter(adaptation["domains"].values())))
        out += [
            f"New domains ({adaptation['how']}): sentiment accuracy / macro-F1 by labels of the domain in memory:",
            "",
            "| domain | " + " | ".join(sizes) + " |",
            "|---|" + "---|" * len(sizes),
        ]
        for domain, curve in adaptation["domains"].items():
            cells = " | ".join(f"{_pct(c['accuracy'])} / {_pct(c['macro_f1'])}" for c in curve.values())
            out.append(f"| {domain} | {cells} |")
        out.append("")
    return out


def write_model_card(model_dir: str | Path) -> Path:
    model_dir = Path(model_dir)
    manifest = json.loads((model_dir / MANIFEST).read_text())
    path = model_dir / "MODEL_CARD.md"
    path.write_text(render(manifest))
    return path
