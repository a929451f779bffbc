"""The whole recipe on a tiny model: train → fusion measurement → ONNX export → evaluate → registry."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from monitor.resources import shipped_model

pytest.importorskip("torch")

from monitor.model_artifact import ModelArtifact  # noqa: E402
from monitor.retrieval.vectors import VectorIndex  # noqa: E402
from monitor.scoring.inputs import ModelInput  # noqa: E402
from monitor.scoring.onnx import OnnxScorer  # noqa: E402
from training.data import grouped_split, load_source  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tiny_model_run):
    return tiny_model_run


def test_model_directory_is_self_describing(tiny_run) -> None:
    _, model_dir, _ = tiny_run
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["labels"]["sentiment"] == ["bearish", "neutral", "bullish"]
    assert len(manifest["labels"]["topic"]) == 20
    assert manifest["data"]["split"]["method"] == "grouped by normalised text"
    assert {"encoder_only", "no_context_crossfit", "with_context_crossfit"} <= set(
        manifest["metrics"]["validation"]["sentiment"]
    )
    assert manifest["training"]["history"], "no validation entry was recorded"
    # every run serves with the retrieval memory and reports what it does on the validation split
    assert manifest["context"]["memory"]["k"] > 0
    memory = manifest["metrics"]["memory"]["sentiment"]
    assert memory["memory_items"] > 0 and memory["with_memory"]["n"] == memory["without"]["n"] > 0
    card = (model_dir / "MODEL_CARD.md").read_text()
    assert manifest["version"] in card and "| head | variant | accuracy | macro-F1 | n |" in card
    assert "## Retrieval memory" in card and f"{memory['memory_items']} training labels" in card


def test_export_parity_is_recorded_within_tolerance(tiny_run) -> None:
    _, model_dir, _ = tiny_run
    onnx = json.loads((model_dir / "manifest.json").read_text())["onnx"]
    parity = onnx["parity"]["fp32_vs_torch"]
    assert parity["max_abs_logit_diff"] < onnx["parity"]["tolerance"]
    assert parity["argmax_agreement"] == {"topic": 1.0, "sentiment": 1.0}
    assert set(onnx["int8_accuracy_change"]) <= {"topic", "sentiment"} and onnx["int8_accuracy_change"]
    assert (model_dir / "model.onnx").is_file() and (model_dir / "model.int8.onnx").is_file()


def test_export_fails_loudly_beyond_tolerance(tiny_run, monkeypatch) -> None:
    from training import export

    _, model_dir, _ = tiny_run
    before = (model_dir / "manifest.json").read_text()
    real_run = export._run_onnx

    def drifting(session, batches):  # fault injection: the ONNX graph disagrees with PyTorch
        out = real_run(session, batches)
        out["sentiment_logits"] = out["sentiment_logits"] + 0.5
        return out

    monkeypatch.setattr(export, "_run_onnx", drifting)
    with pytest.raises(export.ExportError, match="beyond tolerance"):
        export.export_model(model_dir, ["Acme shares plunge"], int8=False)
    assert (model_dir / "manifest.json").read_text() == before
    assert not (model_dir / "model.onnx.partial").exists()


def test_pool_holds_training_items_only(tiny_run) -> None:
    config, model_dir, _ = tiny_run
    artifact = ModelArtifact.load(model_dir)
    assert artifact.context.mode == "fusion" and artifact.history_file
    examples = []
    for source in config.sources:
        examples += load_source(source)[0]
    train, valid = grouped_split(examples, config.valid_fraction, config.seed)
    pool_ids = set(VectorIndex.load(model_dir / artifact.history_file).ids.tolist())
    assert pool_ids == {e.id for e in train}
    assert pool_ids.isdisjoint({e.id for e in valid})


def test_scorer_returns_probabilities_and_unit_embeddings(tiny_run) -> None:
    _, model_dir, _ = tiny_run
    loaded = ModelArtifact.load(model_dir)
    # A tiny random encoder maps many texts to nearly the same vector, which the near-duplicate
    # rule (rightly) excludes; lift the threshold so this test sees neighbours whatever the weights.
    artifact = replace(loaded, manifest=replace(loaded.manifest, near_duplicate=1.01))
    scorer = OnnxScorer.load(artifact, device="cpu", threads=1)
    scores = scorer.score_texts(["$ACME Acme shares plunge after profit warning", "Hooli raises dividend"])
    for task in ("topic", "sentiment"):
        assert np.allclose(scores.probabilities[task].sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.linalg.norm(scores.embedding, axis=1), 1.0, atol=1e-3)
    assert scorer.provider == "CPUExecutionProvider"
    assert all(len(n) > 0 for n in scores.neighbours)  # fusion model: labelled neighbours retrieved
    raw = scorer.run_encoder([ModelInput("Hooli raises dividend")])
    assert not np.allclose(
        scores.probabilities["sentiment"][1],
        np.exp(raw["sentiment_logits"][0]) / np.exp(raw["sentiment_logits"][0]).sum(),
    )


def test_device_cuda_without_gpu_is_fatal(tiny_run) -> None:
    import onnxruntime

    from monitor.errors import DeviceUnavailable

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has a CUDA provider")
    _, model_dir, _ = tiny_run
    with pytest.raises(DeviceUnavailable):
        OnnxScorer.load(ModelArtifact.load(model_dir), device="cuda")


def test_evaluate_cli_json_reports_metrics_and_unknown_labels(tiny_run, tmp_path: Path) -> None:
    _, model_dir, sent_csv = tiny_run
    data = tmp_path / "eval.csv"
    rows = sent_csv.read_text().splitlines()
    data.write_text("\n".join(rows[:40] + ["Some headline about nothing,angry", "Another one,positive"]) + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bearwatch",
            "evaluate",
            "--model",
            str(model_dir),
            "--data",
            str(data),
            "--task",
            "sentiment",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(result.stdout)
    assert {"accuracy", "macro_f1", "n", "per_class", "confusion_matrix"} <= set(report)
    assert report["n"] == 40  # 39 data rows + the "positive" synonym; "angry" reported, not scored
    assert report["unknown_labels"] == {"angry": 1}
    assert sum(sum(r) for r in report["confusion_matrix"]) == report["n"]
    assert 0.0 <= report["accuracy"] <= 1.0


def test_package_keeps_one_variant_and_no_torch_weights(tiny_run, tmp_path: Path) -> None:
    from training.package import package_model

    _, model_dir, _ = tiny_run
    out = package_model(model_dir, tmp_path / "shipped", "int8", reproduce="bearwatch train --config X --output Y")
    names = {p.name for p in out.iterdir()}
    assert "torch" not in names and "model.onnx" not in names and "model.int8.onnx" in names
    artifact = ModelArtifact.load(out)
    assert artifact.manifest.onnx_files == {"int8": "model.int8.onnx"}
    assert "bearwatch train --config X --output Y" in (out / "MODEL_CARD.md").read_text()
    assert OnnxScorer.load(artifact, device="cpu").score_texts(["Acme raises dividend"]).predicted("sentiment")[0] in (
        "bearish",
        "neutral",
        "bullish",
    )


def test_exported_models_carry_no_build_paths(tiny_run) -> None:
    _, model_dir, _ = tiny_run
    root = str(Path(__file__).resolve().parents[1])
    for name in ("model.onnx", "model.int8.onnx"):
        data = (model_dir / name).read_bytes()
        assert root.encode() not in data and b"pkg.torch.onnx.stack_trace" not in data, name
    assert b"pkg.torch.onnx.stack_trace" not in (shipped_model() / "model.int8.onnx").read_bytes()


def test_average_packages_the_mean_of_two_runs_and_refuses_another_split(tiny_run, tmp_path: Path) -> None:
    import torch

    from training.recipe import train_model

    config, model_dir, _ = tiny_run
    other = train_model(replace(config, output=str(tmp_path / "other"), init_seed=config.seed + 1), export=False)
    weights = [torch.load(d / "torch" / "weights.pt", weights_only=True) for d in (model_dir, other)]
    mean_dir = train_model(
        replace(config, output=str(tmp_path / "mean"), average=(str(model_dir), str(other))), export=False
    )
    mean = torch.load(mean_dir / "torch" / "weights.pt", weights_only=True)
    key = "sentiment_head.weight"
    assert not torch.allclose(weights[0][key], weights[1][key])
    assert torch.allclose(mean[key], (weights[0][key] + weights[1][key]) / 2)
    manifest = json.loads((mean_dir / "manifest.json").read_text())
    versions = [json.loads((d / "manifest.json").read_text())["version"] for d in (model_dir, other)]
    (entry,) = manifest["training"]["history"]
    assert entry["averaged"] == versions and 0 < entry["sentiment_macro_f1"] <= 1
    assert manifest["training"]["config"]["average"] == [f"{model_dir.parent.name}/model", "other/model"]
    assert str(tmp_path) not in (mean_dir / "manifest.json").read_text()  # no path of this machine
    assert "Not trained in this run: the mean of the weights of 2 models" in (mean_dir / "MODEL_CARD.md").read_text()
    with pytest.raises(SystemExit, match="another split"):
        train_model(
            replace(config, output=str(tmp_path / "bad"), seed=config.seed + 1, average=(str(model_dir), str(other)))
        )
    with pytest.raises(SystemExit, match="not a model directory"):
        train_model(replace(config, output=str(tmp_path / "run"), average=(str(model_dir), str(tmp_path))))
    with pytest.raises(SystemExit, match="two or more"):
        train_model(replace(config, output=str(tmp_path / "one"), average=(str(model_dir),)))
