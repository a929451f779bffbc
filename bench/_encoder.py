"""Timing ONNX Runtime alone on pre-tokenised inputs, as the scorer runs them: shared by the
model-ceiling and scoring-stage benchmarks.

Batch 1 means what the daemon does on CPU by default: each item its own run (no padding), on one
single-threaded session shared by `threads` workers. Batch n > 1: runs of n items sorted by length
(dynamic padding) on a session with `threads` intra-op threads.
"""

from __future__ import annotations

import time

import numpy as np


class EncoderTimer:
    def __init__(self, model: str, threads: int = 2) -> None:
        from monitor.model_artifact import ModelArtifact
        from monitor.scoring.onnx import OnnxScorer

        self.artifact = ModelArtifact.load(model)
        self.per_item = OnnxScorer.load(self.artifact, device="cpu", threads=threads)
        self.batched = OnnxScorer.load(self.artifact, device="cpu", threads=threads, batch_size=32)
        self.tokenizer = self.per_item.tokenizer

    def measure(self, inputs: list, settings, batch: int, repeats: int = 3) -> tuple[float, float]:
        """(items/s, median of `repeats` passes after a warm-up; mean tokens per item)."""
        from monitor.scoring.inputs import encode

        order = np.argsort([len(i.text) + sum(map(len, i.context)) for i in inputs], kind="stable")
        ordered = [inputs[j] for j in order]
        encoded = [encode(self.tokenizer, ordered[s : s + batch], settings) for s in range(0, len(ordered), batch)]
        feeds = [
            {"input_ids": e.input_ids, "attention_mask": e.attention_mask, "token_type_ids": e.token_type_ids}
            for e in encoded
        ]
        tokens = float(np.mean([e.attention_mask.sum(1).mean() for e in encoded]))
        if batch == 1:

            def once() -> None:
                list(self.per_item.workers.map(self.per_item._run, feeds))
        else:

            def once() -> None:
                for feed in feeds:
                    self.batched.session.run(None, feed)

        once()  # warm-up
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            once()
            runs.append(len(inputs) / (time.perf_counter() - t0))
        return float(np.median(runs)), tokens
