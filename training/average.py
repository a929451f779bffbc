"""Weight averaging: the uniform mean of models fine-tuned from one base encoder on one split (a
"model soup", Wortsman et al. 2022), packaged like a trained model by `bearwatch train --average`.

Fine-tuned runs that start from the same pretrained weights usually stay in one basin of the loss,
so their mean is a model of its own at the cost of one: what an ensemble of them gains, without
scoring every item twice. Whether it gains is measured (`bearwatch compare`), never assumed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from monitor.model_artifact import MANIFEST, ContextSettings
from training.train import Batches, Dataset, FitResult, TrainConfig, head_reports, history_entry, predict

log = logging.getLogger("bearwatch.train")


def _check_same_recipe(config: TrainConfig, data: Dataset, model_dir: Path) -> dict:
    """A model averages only with models of the same base trained on this recipe's split: its
    validation figures are only honest when none of it ever saw a validation text."""
    if not (model_dir / MANIFEST).is_file():
        raise SystemExit(f"{model_dir} is not a model directory (no {MANIFEST}): give a run's OUTPUT/model")
    manifest = json.loads((model_dir / MANIFEST).read_text())
    split = manifest["data"]["split"]
    expected = {"seed": config.seed, "valid_fraction": config.valid_fraction, "valid": len(data.valid)}
    found = {key: split.get(key) for key in expected}
    if found != expected:
        raise SystemExit(
            f"{model_dir} was trained on another split ({found}) than this recipe's ({expected}): "
            "its weights may have seen validation texts, so it cannot be averaged here"
        )
    if manifest["base_model"]["name"] != config.base_model:
        raise SystemExit(
            f"{model_dir} was fine-tuned from {manifest['base_model']['name']!r}, not {config.base_model!r}"
        )
    return manifest


def average_models(config: TrainConfig, data: Dataset, tokenizer, model_dirs: Sequence[str]) -> FitResult:
    """The mean of the models' weights (every floating-point tensor; the rest must be equal),
    evaluated once on the validation split as a training run's evaluation would be."""
    from training.export import load_torch

    if len(model_dirs) < 2:
        raise SystemExit("--average needs two or more model directories")
    versions, models = [], []
    for name in model_dirs:
        model_dir = Path(name)
        versions.append(_check_same_recipe(config, data, model_dir)["version"])
        models.append(load_torch(model_dir))
    states = [m.state_dict() for m in models]
    if any(s.keys() != states[0].keys() for s in states[1:]):
        raise SystemExit("the models to average have different architectures")
    mean = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            mean[key] = torch.stack([s[key] for s in states]).mean(dim=0)
        elif all(torch.equal(s[key], first) for s in states[1:]):
            mean[key] = first
        else:
            raise SystemExit(f"the models to average differ in {key}, which is not a weight")
    model = models[0]
    model.load_state_dict(mean)
    model.eval()
    reports = head_reports(
        data.valid,
        predict(model, Batches(data.valid, tokenizer, ContextSettings(mode="none", max_length=config.max_length), 64)),
    )
    entry = {**history_entry(reports, 0.0, 0), "averaged": versions}
    log.info("validation of the average of %s: %s", ", ".join(versions), json.dumps(entry))
    return FitResult(model, [entry], entry, 0.0)
