"""Knowledge distillation: a trained teacher's soft labels for the student's training texts.

`bearwatch distil-labels` runs a teacher (a finished run's model with PyTorch weights, or an
unfinished run's `best.pt` with the encoder it was fine-tuned from) over the recipe's training split
and its unlabelled sources (real tweets the daemon sees, with no label), and appends the teacher's
logits for both heads, one JSON line per distinct text, to a file. The file is resumable: a run
that stops (a session's end, a kill mid-line) goes on from the texts it has not labelled yet.

`bearwatch train` with ``soft_labels = FILE`` then adds, for every training text, labelled for that
head or not, a term pulling the student's tempered distribution towards the teacher's (Hinton et al.,
2015): each head's loss is ``(1 - w) * CE(gold) + w * T² * KL(teacher_T || student_T)``, the
cross-entropy over the rows that carry the head's gold label, the KL over all rows. The validation
split is never labelled into the file (the teacher's figures on it are measured and reported
beside it), so the student is judged on the same gold labels as every other model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monitor.labels import TASKS
from monitor.model_artifact import ContextSettings
from monitor.scoring.inputs import build_model_input, encode, load_tokenizer
from training.model import MultiTaskEncoder

log = logging.getLogger("bearwatch.distil")

FORMAT = "bearwatch-soft-labels"
FORMAT_VERSION = 1


def text_key(text: str) -> str:
    """The key of a text in a soft-label file (its exact characters: near-duplicates may differ)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


class SoftLabelError(ValueError):
    """A soft-label file that cannot be used as asked (another teacher, other labels, missing texts)."""


@dataclass
class SoftLabels:
    """A teacher's logits per text key, per head, and what the file says about its teacher."""

    header: dict[str, Any]
    logits: dict[str, dict[str, np.ndarray]]  # key -> task -> logits

    def __len__(self) -> int:
        return len(self.logits)

    def targets(self, texts: Sequence[str], labels: Mapping[str, Sequence[str]]) -> dict[str, torch.Tensor]:
        """Per task, an (n, classes) tensor of the teacher's logits for `texts`, in the student's label
        order. Every text must be in the file (SoftLabelError names how many are not)."""
        for task in TASKS:
            if list(self.header["labels"][task]) != list(labels[task]):
                raise SoftLabelError(f"soft labels for {task} are in another label set: {self.header['labels'][task]}")
        keys = [text_key(t) for t in texts]
        missing = sum(k not in self.logits for k in keys)
        if missing:
            raise SoftLabelError(
                f"the soft-label file holds no teacher logits for {missing} of {len(keys)} training texts: "
                "run `bearwatch distil-labels` with this recipe (it labels only the texts still missing)"
            )
        return {task: torch.from_numpy(np.stack([self.logits[k][task] for k in keys])) for task in TASKS}


def logit_line(text: str, logits: Mapping[str, np.ndarray]) -> str:
    """One text's line of a logits file: its key and each head's logits (4 decimals)."""
    row = {"key": text_key(text), **{task: [round(float(x), 4) for x in logits[task]] for task in TASKS}}
    return json.dumps(row) + "\n"


def open_text(path: str | Path):
    """A text file for reading, or its gzip (FILE.gz)."""
    path = Path(path)
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def read_soft_labels(path: str | Path) -> SoftLabels:
    """Read a soft-label file (or its gzip: FILE.gz, as kept in git); a torn last line (a kill while
    appending) is left out."""
    path = Path(path)
    with open_text(path) as fh:
        first = fh.readline()
        try:
            header = json.loads(first)
        except json.JSONDecodeError:
            raise SoftLabelError(f"{path}: not a soft-label file (no header line)") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise SoftLabelError(f"{path}: not a soft-label file (format {FORMAT!r} expected)")
        if header.get("version") != FORMAT_VERSION:
            raise SoftLabelError(
                f"{path}: soft-label format version {header.get('version')}, expected {FORMAT_VERSION}"
            )
        logits: dict[str, dict[str, np.ndarray]] = {}
        for line in fh:
            if not line.endswith("\n"):
                break  # torn: written again on the next run
            row = json.loads(line)
            logits[row["key"]] = {task: np.asarray(row[task], dtype=np.float32) for task in TASKS}
    return SoftLabels(header, logits)


def _open_for_append(path: Path, header: dict[str, Any]) -> tuple[set[str], Any]:
    """The keys already in `path` and a handle appending to it; a new file gets `header`. A file
    written by another teacher, or with other labels, is refused rather than mixed."""
    if path.exists() and path.stat().st_size:
        existing = read_soft_labels(path)
        for field in ("teacher", "labels", "max_length"):
            if existing.header.get(field) != header[field]:
                raise SoftLabelError(
                    f"{path} was written with another {field} ({existing.header.get(field)!r}, not "
                    f"{header[field]!r}): give another --output"
                )
        with path.open("rb+") as raw:  # cut a torn last line so appends start on a line of their own
            raw.truncate(raw.read().rfind(b"\n") + 1)
        return set(existing.logits), path.open("a", encoding="utf-8")
    out = path.open("w", encoding="utf-8")
    out.write(json.dumps(header) + "\n")
    return set(), out


@dataclass(frozen=True)
class Teacher:
    model: MultiTaskEncoder
    tokenizer: Any
    description: dict[str, Any]  # what the soft-label file records about it


def load_teacher(path: str | Path, base_model: str | None = None) -> Teacher:
    """A teacher from a model directory (or the run folder holding `model/`) with PyTorch weights,
    or from an unfinished run's `best.pt` with `base_model`, the encoder it was fine-tuned from."""
    from monitor.labels import SENTIMENT_LABELS, TOPIC_LABELS
    from training.export import TORCH_DIR, load_torch
    from training.train import resolve_base_model

    path = Path(path)
    for model_dir in (path, path / "model"):
        if (model_dir / TORCH_DIR / "weights.pt").is_file():
            manifest = json.loads((model_dir / "manifest.json").read_text())
            return Teacher(
                load_torch(model_dir),
                load_tokenizer(model_dir / "tokenizer.json"),
                {"model": manifest["version"], "base": manifest["base_model"]["config"]},
            )
    best = path / "best.pt"
    if not best.is_file():
        raise SystemExit(f"{path} holds no teacher: neither model/{TORCH_DIR}/weights.pt nor best.pt")
    if not base_model:
        raise SystemExit(
            f"{best} is an unfinished run's best weights: give --base-model, the encoder it was trained from"
        )
    base_dir = resolve_base_model(base_model)
    model = MultiTaskEncoder.from_base(str(base_dir), len(TOPIC_LABELS), len(SENTIMENT_LABELS))
    model.load_state_dict(torch.load(best, weights_only=True))
    digest = hashlib.sha256(best.read_bytes()).hexdigest()[:12]
    base = json.loads((base_dir / "config.json").read_text()).get("_name_or_path") or base_dir.name
    return Teacher(
        model.eval(), load_tokenizer(base_dir / "tokenizer.json"), {"model": f"best.pt:{digest}", "base": base}
    )


@torch.no_grad()
def teacher_logits(
    teacher: Teacher, texts: Sequence[str], max_length: int, batch_size: int = 64, on_batch=None
) -> dict[str, np.ndarray]:
    """The teacher's logits for `texts` (in their order), run in batches of similar length."""
    settings = ContextSettings(mode="none", max_length=max_length)
    inputs = [build_model_input(t, [], settings) for t in texts]
    lengths = [len(e.ids) for e in teacher.tokenizer.encode_batch([i.text for i in inputs], add_special_tokens=False)]
    order = np.argsort(lengths, kind="stable")
    out = {task: np.zeros((len(texts), 0), dtype=np.float32) for task in TASKS}
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        enc = encode(teacher.tokenizer, [inputs[r] for r in rows], settings)
        topic, sentiment, _ = teacher.model(
            torch.from_numpy(enc.input_ids), torch.from_numpy(enc.attention_mask), torch.from_numpy(enc.token_type_ids)
        )
        for task, value in (("topic", topic), ("sentiment", sentiment)):
            if out[task].shape[1] == 0:
                out[task] = np.zeros((len(texts), value.shape[1]), dtype=np.float32)
            out[task][rows] = value.numpy()
        if on_batch is not None:
            on_batch(rows, {"topic": topic.numpy(), "sentiment": sentiment.numpy()})
    return out


def write_soft_labels(
    teacher: Teacher,
    texts: Sequence[str],
    path: str | Path,
    labels: Mapping[str, Sequence[str]],
    max_length: int,
    batch_size: int = 64,
) -> dict[str, int]:
    """Append the teacher's logits for every distinct text of `texts` not yet in `path`; returns
    how many distinct texts there were, were already there, and were labelled now."""
    from monitor.progress import Progress

    path = Path(path)
    if path.suffix == ".gz":
        raise SoftLabelError(f"{path}: a gzip file is read, never appended to: write a plain file, then gzip it")
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "teacher": teacher.description,
        "labels": {task: list(labels[task]) for task in TASKS},
        "max_length": max_length,
    }
    done, fh = _open_for_append(path, header)
    distinct = list(dict.fromkeys(texts))
    todo = [t for t in distinct if text_key(t) not in done]
    bar = Progress("soft labels", total=len(todo), unit="texts")

    def append(rows, logits) -> None:
        for j, r in enumerate(rows):
            fh.write(logit_line(todo[r], {task: logits[task][j] for task in TASKS}))
        fh.flush()
        bar.update(len(rows))

    try:
        teacher_logits(teacher, todo, max_length, batch_size, on_batch=append)
        fh.flush()
        os.fsync(fh.fileno())
    finally:
        fh.close()
        bar.close()
    return {"distinct": len(distinct), "already": len(distinct) - len(todo), "labelled": len(todo)}


def prior_bias(teacher: torch.Tensor, gold: torch.Tensor, temperature: float, iterations: int = 200) -> torch.Tensor:
    """Per-class biases, in logit units, that give the teacher's soft targets at `temperature` the
    class shares of the gold labels, over the rows that have one (IGNORE elsewhere): add them to the
    teacher's logits of every row. A temperature above 1 spreads each target's mass towards the
    rarer classes, and a teacher that leans to one class passes the lean on; this is the prior
    correction of Saerens et al. (2002) by fixed-point iteration, fitted on training labels only."""
    from training.model import IGNORE

    rows = gold != IGNORE
    classes = teacher.shape[1]
    counts = torch.bincount(gold[rows], minlength=classes).double()
    if not rows.any() or (counts == 0).any():
        raise ValueError("matching the gold prior needs a gold label of every class among the training rows")
    want = counts / counts.sum()
    z = teacher[rows].double() / temperature
    b = torch.zeros(classes, dtype=torch.float64)
    for _ in range(iterations):
        b += torch.log(want / torch.softmax(z + b, dim=-1).mean(0))
        b -= b.mean()  # softmax ignores a common shift
    return (b * temperature).to(teacher.dtype)


def distillation_loss(
    logits: torch.Tensor, gold: torch.Tensor, teacher: torch.Tensor, weight: float, temperature: float
) -> torch.Tensor:
    """One head: (1 - weight) x cross-entropy on the rows with a gold label (IGNORE elsewhere) plus
    weight x T² x KL(teacher_T || student_T) over every row (T² keeps its gradients on the scale of
    the cross-entropy's as T changes)."""
    from torch.nn import functional as F

    from training.model import IGNORE

    t = temperature
    soft = F.kl_div(
        F.log_softmax(logits / t, dim=-1), F.log_softmax(teacher / t, dim=-1), log_target=True, reduction="batchmean"
    )
    total = weight * t * t * soft
    if (gold != IGNORE).any():
        total = total + (1.0 - weight) * F.cross_entropy(logits, gold, ignore_index=IGNORE)
    return total
