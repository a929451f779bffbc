"""ONNX export of the encoder and both heads, with a parity check and optional int8 quantisation.

One graph, inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (dynamic batch and length),
outputs ``topic_logits``, ``sentiment_logits``, ``embedding``. Parity is measured against PyTorch on
real inputs; beyond tolerance the export fails loudly and the model directory is left unchanged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monitor.errors import ExportError
from monitor.labels import SENTIMENT_LABELS, TASKS, TOPIC_LABELS
from monitor.model_artifact import MANIFEST, ContextSettings
from monitor.scoring.inputs import build_model_input, encode, load_tokenizer
from monitor.scoring.metrics import classification_report
from monitor.scoring.onnx import OUTPUTS, create_session
from training.model import MultiTaskEncoder

log = logging.getLogger("bearwatch.export")
logging.getLogger("onnx_ir").setLevel(logging.WARNING)  # one INFO line per deduplicated initializer

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
TORCH_DIR = "torch"


def save_torch(model: MultiTaskEncoder, model_dir: Path) -> None:
    """The PyTorch weights an export starts from (LoRA adapters merged into the encoder)."""
    from peft import PeftModel

    encoder: Any = model.encoder  # a transformers model (peft-wrapped with LoRA)
    if isinstance(encoder, PeftModel):
        encoder = encoder.merge_and_unload()
        model.encoder = encoder
    target = model_dir / TORCH_DIR
    target.mkdir(parents=True, exist_ok=True)
    encoder.config.save_pretrained(target)
    torch.save(model.state_dict(), target / "weights.pt")


def load_torch(model_dir: Path) -> MultiTaskEncoder:
    from transformers import AutoConfig, AutoModel

    source = model_dir / TORCH_DIR
    if not (source / "weights.pt").is_file():
        raise SystemExit(f"{model_dir} holds no PyTorch weights ({TORCH_DIR}/weights.pt): it cannot be re-exported")
    config = AutoConfig.from_pretrained(source)
    config._attn_implementation = "eager"
    model = MultiTaskEncoder(
        AutoModel.from_config(config, attn_implementation="eager"), len(TOPIC_LABELS), len(SENTIMENT_LABELS)
    )
    model.load_state_dict(torch.load(source / "weights.pt", weights_only=True))
    return model.eval()


class _Graph(torch.nn.Module):
    def __init__(self, model: MultiTaskEncoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.model(input_ids, attention_mask, token_type_ids)


def export_graph(model: MultiTaskEncoder, example: dict[str, torch.Tensor], path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    length = torch.export.Dim("length", min=2, max=512)
    program = torch.onnx.export(
        _Graph(model).eval(),
        tuple(example[name] for name in INPUTS),
        input_names=list(INPUTS),
        output_names=list(OUTPUTS),
        dynamic_shapes={name: {0: batch, 1: length} for name in INPUTS},
        opset_version=18,
        dynamo=True,
        verbose=False,
    )
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    program.save(str(path))
    strip_build_metadata(path)


def strip_build_metadata(path: Path) -> None:
    """Drop what the exporter records about the machine that built the graph (source stack traces
    with file paths, module names) from every node: a shipped model carries no build paths."""
    import onnx

    model = onnx.load(str(path))
    for node in model.graph.node:
        node.doc_string = ""
        keep = [(p.key, p.value) for p in node.metadata_props if not (p.key.startswith("pkg.") or p.key == "namespace")]
        del node.metadata_props[:]
        for key, value in keep:
            node.metadata_props.add(key=key, value=value)
    model.doc_string = ""
    onnx.save(model, str(path))


@dataclass
class Parity:
    max_abs_logit_diff: float
    argmax_agreement: dict[str, float]
    max_abs_embedding_diff: float
    n: int


def _run_onnx(session, batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    outs = [session.run(list(OUTPUTS), b) for b in batches]
    return {name: np.concatenate([o[i] for o in outs]) for i, name in enumerate(OUTPUTS)}


@torch.no_grad()
def _run_torch(model: MultiTaskEncoder, batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    outs = [[t.numpy() for t in model(*(torch.from_numpy(b[n]) for n in INPUTS))] for b in batches]
    return {name: np.concatenate([o[i] for o in outs]) for i, name in enumerate(OUTPUTS)}


def _batches(texts: Sequence[str], tokenizer, settings: ContextSettings, size: int = 32) -> list[dict[str, np.ndarray]]:
    out = []
    for start in range(0, len(texts), size):
        enc = encode(tokenizer, [build_model_input(t, [], settings) for t in texts[start : start + size]], settings)
        out.append(
            {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.token_type_ids}
        )
    return out


def compare(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> Parity:
    logit_diff = max(float(np.abs(reference[f"{t}_logits"] - candidate[f"{t}_logits"]).max()) for t in TASKS)
    agreement = {
        t: float((reference[f"{t}_logits"].argmax(1) == candidate[f"{t}_logits"].argmax(1)).mean()) for t in TASKS
    }
    emb = float(np.abs(reference["item_embedding"] - candidate["item_embedding"]).max())
    return Parity(logit_diff, agreement, emb, len(reference["item_embedding"]))


def quantize_int8(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel with reduce_range: the setting that kept accuracy on AVX2-only CPUs.
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    strip_build_metadata(target)


def export_model(
    model_dir: Path,
    parity_texts: Sequence[str],
    labelled: Sequence[tuple[str, str, str]] = (),
    int8: bool = True,
    tolerance: float = 1e-3,
    serve: str | None = None,
) -> dict:
    """Export `model_dir/torch` to ONNX, check parity on `parity_texts`, optionally quantise.

    `labelled` holds (text, task, gold) rows on which int8's accuracy change is measured. Updates
    the manifest's ``onnx`` section and returns it.
    """
    model_dir = Path(model_dir)
    manifest = json.loads((model_dir / MANIFEST).read_text())
    settings = ContextSettings(mode="none", max_length=manifest["context"]["max_length"])
    tokenizer = load_tokenizer(model_dir / "tokenizer.json")
    model = load_torch(model_dir)
    batches = _batches(list(parity_texts), tokenizer, settings)
    example = {k: torch.from_numpy(v) for k, v in batches[0].items()}

    started = time.monotonic()
    partial = model_dir / (FP32_FILE + ".partial")
    export_graph(model, example, partial)
    reference = _run_torch(model, batches)
    session, _ = create_session(str(partial), "cpu")
    parity = compare(reference, _run_onnx(session, batches))
    log.info("fp32 parity: %s", parity)
    if parity.max_abs_logit_diff > tolerance or min(parity.argmax_agreement.values()) < 1.0:
        partial.unlink()
        raise ExportError(f"ONNX export disagrees with PyTorch beyond tolerance {tolerance}: {parity}")
    partial.rename(model_dir / FP32_FILE)
    section: dict[str, Any] = {
        "files": {"fp32": FP32_FILE},
        "serve": "fp32",
        "opset": 18,
        "inputs": list(INPUTS),
        "outputs": list(OUTPUTS),
        "parity": {"fp32_vs_torch": parity.__dict__, "tolerance": tolerance, "texts": len(parity_texts)},
    }
    if int8:
        quantize_int8(model_dir / FP32_FILE, model_dir / INT8_FILE)
        session8, _ = create_session(str(model_dir / INT8_FILE), "cpu")
        fp32_out = reference
        int8_out = _run_onnx(session8, batches)
        section["files"]["int8"] = INT8_FILE
        section["parity"]["int8_vs_fp32"] = compare(fp32_out, int8_out).__dict__
        if labelled:
            section["int8_accuracy_change"] = _accuracy_change(labelled, tokenizer, settings, session, session8)
        section["serve"] = "int8"
    if serve:
        section["serve"] = serve
    section["seconds"] = round(time.monotonic() - started, 1)
    manifest["onnx"] = section
    _write_manifest(model_dir, manifest)
    return section


def _accuracy_change(labelled, tokenizer, settings, fp32_session, int8_session) -> dict:
    """Per task: accuracy and macro-F1 of the encoder's own heads, fp32 vs int8, on the same rows."""
    labels = {"topic": TOPIC_LABELS, "sentiment": SENTIMENT_LABELS}
    result = {}
    for task in TASKS:
        rows = [(text, gold) for text, t, gold in labelled if t == task]
        if not rows:
            continue
        batches = _batches([r[0] for r in rows], tokenizer, settings)
        gold = [r[1] for r in rows]
        entry: dict[str, Any] = {}
        for name, session in (("fp32", fp32_session), ("int8", int8_session)):
            logits = _run_onnx(session, batches)[f"{task}_logits"]
            report = classification_report(gold, [labels[task][i] for i in logits.argmax(1)], labels[task])
            entry[name] = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"]}
        entry["n"] = len(rows)
        entry["accuracy_delta"] = entry["int8"]["accuracy"] - entry["fp32"]["accuracy"]
        entry["macro_f1_delta"] = entry["int8"]["macro_f1"] - entry["fp32"]["macro_f1"]
        result[task] = entry
    return result


def _write_manifest(model_dir: Path, manifest: dict) -> None:
    tmp = model_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    tmp.replace(model_dir / MANIFEST)
