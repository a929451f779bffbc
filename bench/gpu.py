"""GPU check (run only where a CUDA device is present): the model ceiling with ONNX Runtime's CUDA
provider at batch 64-512, fp32 vs fp16, on an fp32 ONNX file bearwatch exported (the shipped
directory keeps only int8, which the CUDA provider does not accelerate), converted to fp16 in
memory with onnxruntime's own converter.

    python bench/gpu.py --onnx runs/x/model/model.onnx --tokenizer monitor/models/default/tokenizer.json [--json FILE]

Everything it needs is in the repository and the installed packages (onnxruntime-gpu, onnx); it
prints a table and writes JSON, and fits in a couple of minutes on one GPU.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from monitor.resources import shipped_model

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ROOT.parent / "shared" / "data" / "twitter-financial-news-sentiment" / "train.csv"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onnx", required=True, help="an fp32 ONNX model exported by bearwatch")
    p.add_argument("--tokenizer", default=str(shipped_model() / "tokenizer.json"))
    p.add_argument("--texts", type=int, default=8192)
    p.add_argument("--batch-sizes", default="64,128,256,512")
    p.add_argument("--json")
    args = p.parse_args(argv)

    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from tokenizers import Tokenizer

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise SystemExit(
            f"no CUDA provider in this onnxruntime ({ort.get_available_providers()}): install onnxruntime-gpu on a "
            "GPU machine"
        )
    tok = Tokenizer.from_file(args.tokenizer)
    tok.enable_truncation(64)
    tok.enable_padding()
    with TEXTS.open(encoding="utf-8", newline="") as fh:
        texts = [r["text"] for _, r in zip(range(args.texts), csv.DictReader(fh))]
    fp32 = onnx.load(args.onnx)
    fp16 = convert_float_to_float16(fp32, keep_io_types=True)
    rows = []
    for name, model in (("fp32", fp32), ("fp16", fp16)):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            feeds = []
            for s in range(0, len(texts), batch):
                enc = tok.encode_batch(texts[s : s + batch])
                ids = np.array([e.ids for e in enc], dtype=np.int64)
                feed = {
                    "input_ids": ids,
                    "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                    "token_type_ids": np.zeros_like(ids),
                }
                feeds.append({k: v for k, v in feed.items() if k in wanted})
            session.run(None, feeds[0])
            t0 = time.perf_counter()
            for feed in feeds:
                session.run(None, feed)
            rows.append(
                {"precision": name, "batch": batch, "items_per_s": round(len(texts) / (time.perf_counter() - t0), 1)}
            )
            print(f"{name:<6}{batch:>6}{rows[-1]['items_per_s']:>12}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": ort.get_device(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
