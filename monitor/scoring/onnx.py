"""Scoring with ONNX Runtime, optional fusion of context.

On CPU each item is its own ONNX run (no padding), runs spread over ``threads`` single-threaded
workers: an item's scores are then a function of its text alone. Batched runs are not: the int8
model quantizes activations with one scale per run, so a headline's probabilities moved by up to
0.27 with its batch-mates, flipping about 1 label in 1,100 (found by the crash drill: a replay after
a restart batches items differently). Per-item runs were also faster here (model alone: 1,234 vs
874 items/s at batch 32 on 2 cores, Twitter headlines; docs/benchmarks.md). On a GPU, batches (by
length, dynamic padding) are what it needs.

The device policy is explicit: ``auto`` uses CUDA when ONNX Runtime offers it and says which one
it got; ``cuda`` makes a missing GPU fatal instead of a silent CPU fallback; ``cpu`` never asks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from monitor.errors import DeviceUnavailable, ScoringError
from monitor.labels import TASKS
from monitor.model_artifact import ModelArtifact
from monitor.retrieval.vectors import Neighbour, Query, VectorIndex
from monitor.scoring.fusion import FusionHead, MemoryFusion
from monitor.scoring.inputs import ModelInput, build_model_input, encode, load_tokenizer
from monitor.text import dedup_key

log = logging.getLogger("bearwatch.scoring")

DEVICES = ("auto", "cpu", "cuda")
OUTPUTS = ("topic_logits", "sentiment_logits", "item_embedding")


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def cpu_threads() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def create_session(model_file: str, device: str = "auto", threads: int = 0):
    """An ONNX Runtime session on the device the policy allows, and the provider it really uses."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ScoringError("ONNX Runtime is not installed: pip install 'bearwatch[cpu]' (or [gpu])") from None
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    available = ort.get_available_providers()
    wants_gpu = device in ("auto", "cuda") and "CUDAExecutionProvider" in available
    if device == "cuda" and not wants_gpu:
        raise DeviceUnavailable(
            f"device=cuda but ONNX Runtime offers no CUDA provider (available: {', '.join(available)}); install "
            "bearwatch[gpu] on a machine with a GPU"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if wants_gpu else ["CPUExecutionProvider"]
    session = ort.InferenceSession(model_file, sess_options=options, providers=providers)
    used = session.get_providers()[0]
    if wants_gpu and used != "CUDAExecutionProvider":
        # The CUDA provider was offered but could not start (driver, libraries): never silently CPU.
        message = f"CUDA provider available but the session fell back to {used}"
        if device == "cuda":
            raise DeviceUnavailable(message)
        log.warning("%s", message)
    log.info("ONNX Runtime %s: %s on %s", ort.__version__, model_file, used)
    return session, used


@dataclass(frozen=True)
class Scores:
    """Per item, in input order: probabilities per head, the stored representation, neighbours used."""

    probabilities: dict[str, np.ndarray]
    embedding: np.ndarray
    neighbours: list[list[Neighbour]]
    labels: dict[str, tuple[str, ...]]

    def predicted(self, task: str) -> list[str]:
        return [self.labels[task][i] for i in self.probabilities[task].argmax(axis=1)]


class OnnxScorer:
    """Scores news texts with a bearwatch model directory.

    The constructor only keeps what to load; `start` reads the tokenizer, the heads and the
    retrieval pool and creates the ONNX Runtime session (`OnnxScorer.load` does both).

    >>> scorer = OnnxScorer.load(ModelArtifact.load(shipped_model()))  # doctest: +SKIP
    >>> scorer.score_texts(["Acme shares plunge after profit warning"]).predicted("sentiment")  # doctest: +SKIP
    ['bearish']
    """

    tokenizer: Any  # tokenizers.Tokenizer
    session: Any  # onnxruntime.InferenceSession
    provider: str
    workers: ThreadPoolExecutor | None
    labels: dict[str, tuple[str, ...]]
    pool: VectorIndex | None
    fusion: dict[str, FusionHead]
    memory_fusion: MemoryFusion | None

    def __init__(
        self,
        artifact: ModelArtifact,
        device: str = "auto",
        threads: int = 0,
        variant: str | None = None,
        batch_size: int = 0,
    ) -> None:
        """``batch_size`` 0: per-item runs on CPU, batches of 64 on a GPU; n: batches of n (on CPU,
        faster on some machines, but an item's scores then depend on its batch-mates)."""
        self.artifact = artifact
        self.settings = artifact.context
        self.device, self.threads, self.variant = device, threads, variant
        self.batch_size = batch_size
        self.started = False
        # The next batch's texts, started in the background (`prefetch`): (texts, future outputs).
        self._ahead: tuple[list[str], Future] | None = None
        self._ahead_pool: ThreadPoolExecutor | None = None

    @classmethod
    def load(cls, artifact: ModelArtifact, **options: Any) -> OnnxScorer:
        """A started scorer (`options`: the constructor's device, threads, variant, batch_size)."""
        return cls(artifact, **options).start()

    def start(self) -> OnnxScorer:
        """Load the model's files and create the session (DeviceUnavailable when `device` cannot
        be had); returns the scorer. Once only."""
        if self.started:
            return self
        artifact, threads = self.artifact, self.threads
        self.tokenizer = load_tokenizer(artifact.path / "tokenizer.json")
        per_item = self.batch_size <= 1
        self.session, self.provider = create_session(
            str(artifact.onnx_file(self.variant)), self.device, 1 if per_item else threads
        )
        self.batch_size = self.batch_size or (64 if self.provider == "CUDAExecutionProvider" else 1)
        self.workers = None
        if per_item and self.provider == "CPUExecutionProvider":
            # One single-threaded session run concurrently (ONNX Runtime's run is thread-safe and
            # releases the GIL): items in parallel rather than each item's matrices.
            self.workers = ThreadPoolExecutor(max_workers=threads or cpu_threads(), thread_name_prefix="bearwatch-onnx")
        self.labels = {task: artifact.labels(task) for task in TASKS}
        self.pool = VectorIndex.load(artifact.path / artifact.history_file) if artifact.history_file else None
        self.fusion = {task: FusionHead.load(artifact.path / name) for task, name in artifact.fusion_files.items()}
        memory = artifact.manifest.memory
        self.memory_fusion = MemoryFusion.from_json(memory) if memory and self.settings.mode != "concat" else None
        self.started = True
        return self

    @property
    def version(self) -> str:
        return self.artifact.version

    @property
    def embedding_dims(self) -> int:
        dims = self.session.get_outputs()[OUTPUTS.index("item_embedding")].shape[-1]
        if isinstance(dims, int):
            return dims
        return int(self.run_encoder([ModelInput("dimension probe")])["item_embedding"].shape[1])

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(list(OUTPUTS), feed)
        except Exception as exc:  # ONNX Runtime raises its own exception types; say what failed
            raise ScoringError(f"ONNX Runtime failed on a batch of {len(feed['input_ids'])}: {exc}") from exc

    def run_encoder(self, inputs: Sequence[ModelInput]) -> dict[str, np.ndarray]:
        """Raw outputs for model inputs, in input order: per item on CPU workers, or batched by length."""
        if self.workers is not None and inputs:
            enc = encode(
                self.tokenizer, inputs, self.settings
            )  # tokens do not depend on the batch; cut each row's padding
            lengths = enc.attention_mask.sum(axis=1)
            feeds = [
                {
                    "input_ids": enc.input_ids[r : r + 1, :n],
                    "attention_mask": enc.attention_mask[r : r + 1, :n],
                    "token_type_ids": enc.token_type_ids[r : r + 1, :n],
                }
                for r, n in enumerate(lengths)
            ]
            results = list(self.workers.map(self._run, feeds))
            return {name: np.concatenate([r[k] for r in results]) for k, name in enumerate(OUTPUTS)}
        lengths = [len(i.text) + sum(len(c) for c in i.context) for i in inputs]
        order = np.argsort(lengths, kind="stable")
        out: dict[str, list] = {name: [None] * len(inputs) for name in OUTPUTS}
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            enc = encode(self.tokenizer, [inputs[r] for r in rows], self.settings)
            outputs = self._run(
                {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "token_type_ids": enc.token_type_ids}
            )
            for name, value in zip(OUTPUTS, outputs):
                for j, r in enumerate(rows):
                    out[name][r] = value[j]
        return {name: np.stack(values) if values else np.zeros((0, 0), np.float32) for name, values in out.items()}

    def retrieve_pool(self, embeddings: np.ndarray, groups: Sequence[str | None]) -> list[list[Neighbour]]:
        if self.pool is None or self.settings.k == 0:
            return [[] for _ in range(len(embeddings))]
        queries = [Query(vector=v, group=g) for v, g in zip(embeddings, groups)]
        return self.pool.search(queries, self.settings.k, self.artifact.near_duplicate)

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """The encoder's raw outputs for texts alone (logits per head, embedding), in input order;
        the texts a `prefetch` already ran are taken from it, the others run now."""
        ahead, self._ahead = self._ahead, None
        if ahead is None or not texts:
            return self._encode_now(texts)
        known, future = ahead
        try:
            done = future.result()
        except Exception:  # noqa: BLE001 — the same texts run again below, where the failure is raised and handled
            log.debug("the prefetched batch failed; its texts run again", exc_info=True)
            return self._encode_now(texts)
        row = {t: i for i, t in enumerate(known)}
        missing = [t for t in dict.fromkeys(texts) if t not in row]
        if missing:
            extra = self._encode_now(missing)
            row.update((t, len(known) + i) for i, t in enumerate(missing))
            done = {name: np.concatenate([done[name], extra[name]]) for name in OUTPUTS}
        take = np.fromiter((row[t] for t in texts), dtype=np.int64, count=len(texts))
        return {name: done[name][take] for name in OUTPUTS}

    def prefetch(self, texts: Sequence[str]) -> bool:
        """Start the encoder on the texts the next `encode` will probably ask for (the next batch)
        in the background, so it runs while this batch is written. Only per-item CPU runs, whose
        outputs do not depend on their batch-mates: what `encode` takes from it is exactly what it
        would have computed. Replaces an earlier prefetch not taken; False when it does nothing."""
        if self.workers is None or self.settings.mode == "concat" or not texts:
            return False
        if self._ahead_pool is None:
            self._ahead_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bearwatch-prefetch")
        distinct = list(dict.fromkeys(texts))
        self._ahead = (distinct, self._ahead_pool.submit(self._encode_now, distinct))
        return True

    def _encode_now(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        if self.settings.mode == "concat":
            raise ScoringError("concat models need retrieved texts: use score_inputs")
        return self.run_encoder([build_model_input(t, [], self.settings) for t in texts])

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """For the retrieval memory: each text's embedding and the encoder's own probabilities
        (never from a prefetch: that is the news batch's)."""
        raw = self._encode_now(texts)
        return raw["item_embedding"], {task: _softmax(raw[f"{task}_logits"]) for task in TASKS}

    def score_texts(
        self,
        texts: Sequence[str],
        groups: Sequence[str | None] | None = None,
        memory: list[list[Neighbour]] | None = None,
    ) -> Scores:
        """Score texts: encoder on the text alone, then (fusion models) neighbours and fusion, then
        (models with memory fusion) the retrieval memory's neighbours, `memory[i]` for text i."""
        return self.finish(texts, self.encode(texts), groups, memory)

    def finish(
        self,
        texts: Sequence[str],
        raw: dict[str, np.ndarray],
        groups: Sequence[str | None] | None = None,
        memory: list[list[Neighbour]] | None = None,
    ) -> Scores:
        """Scores from the encoder's outputs for `texts` (see score_texts).

        Neighbours never include the text's own near-duplicate group (`groups`, by default the
        texts' dedup keys): the same leakage rule as in training.
        """
        neighbours: list[list[Neighbour]] = [[] for _ in texts]
        if self.pool is not None and self.settings.k:
            neighbours = self.retrieve_pool(raw["item_embedding"], groups or [dedup_key(t) for t in texts])
        if self.settings.mode == "fusion":
            inputs = [build_model_input(t, n, self.settings) for t, n in zip(texts, neighbours)]
            neighbours = [list(i.neighbours) for i in inputs]
        return self._scores(raw, neighbours, memory)

    def search_memory(
        self,
        memory,
        texts: Sequence[str],
        embeddings: np.ndarray,
        ids: Sequence[str | None] | None = None,
        published: Sequence | None = None,
    ) -> list[list[Neighbour]]:
        """The retrieval memory's neighbours of each text (its embedding by this model, its item id
        and publication time when known; its near-duplicate group from the text), as this model
        uses them."""
        from monitor.retrieval.memory import MemoryQuery

        f = self.memory_fusion
        if f is None:
            return [[] for _ in texts]
        queries = [
            MemoryQuery(v, ids[i] if ids else None, dedup_key(t), published[i] if published else None)
            for i, (v, t) in enumerate(zip(embeddings, texts))
        ]
        found = memory.search(queries, f.k, self.version, f.near_duplicate)
        return [[n for n in items if n.score >= f.min_similarity] for items in found]

    @property
    def memory_k(self) -> int:
        """How many memory neighbours an item needs (0: the model does not use the memory)."""
        return self.memory_fusion.k if self.memory_fusion is not None else 0

    def _scores(
        self, raw: dict[str, np.ndarray], neighbours: list[list[Neighbour]], memory: list[list[Neighbour]] | None = None
    ) -> Scores:
        probabilities = {}
        for task in TASKS:
            logits = raw[f"{task}_logits"]
            if task in self.fusion and len(logits):
                logits = self.fusion[task].logits(logits, neighbours)
            if self.memory_fusion is not None and memory is not None:
                logits = self.memory_fusion.logits(task, self.labels[task], logits, memory)
            probabilities[task] = _softmax(logits) if len(logits) else logits
        if memory is not None and self.memory_fusion is not None:
            neighbours = [list(p) + list(m) for p, m in zip(neighbours, memory)]
        return Scores(probabilities, raw["item_embedding"], neighbours, self.labels)
