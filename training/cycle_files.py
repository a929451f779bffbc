"""Files for one retraining cycle on the shared data (`python -m training.cycle_files OUT`).

Writes, under OUT:
- ``eval/validation-<source>.csv``: the grouped validation split of every source of the recipe,
  computed exactly as the recipe computes it (seeded hash of the normalised text), so the candidate
  trained by that recipe never sees them — the trainer's fixed evaluation set;
- ``labels.csv`` and ``eval/new-domain.csv``: a labelled file the analysts "add" (``--labels FILE``,
  ``text,label``), split by the same grouped rule into the part imported as labels and a held-out
  part that joins the evaluation set, so the gate can see whether the new labels taught anything;
- ``trainer.toml``: the settings of the cycle (``[trainer]`` pointing at the above).
It prints the commands of the cycle.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from training.data import DataSource, grouped_split, load_source
from training.recipe import write_validation_files
from training.train import TrainConfig, load_dataset


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", help="folder to write into")
    p.add_argument("--recipe", default=str(Path(__file__).parent / "configs" / "default.toml"))
    p.add_argument(
        "--labels", required=True, help="a labelled file (text,label) standing in for the analysts' new labels"
    )
    p.add_argument("--task", default="sentiment", choices=["sentiment", "topic"])
    p.add_argument("--held-out", type=float, default=0.2, help="fraction of the labels kept out for evaluation")
    p.add_argument("--registry", default="runs/cycle/registry")
    args = p.parse_args(argv)

    out = Path(args.out)
    (out / "eval").mkdir(parents=True, exist_ok=True)
    config = TrainConfig.from_toml(args.recipe, output=str(out / "unused"))
    written = write_validation_files(load_dataset(config), config, out / "eval")
    tasks = {s.label: s.task for s in config.sources}
    eval_specs = [f"{path.resolve()}:{tasks[path.stem.removeprefix('validation-')]}" for path in written]

    examples, report = load_source(DataSource(args.labels, args.task, "new-labels"))
    # a different seed from the recipe's: which new labels are held out must not follow its split
    keep, held = grouped_split(examples, args.held_out, seed=config.seed + 1)
    for path, rows, column in ((out / "labels.csv", keep, args.task), (out / "eval" / "new-domain.csv", held, "label")):
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", column])
            writer.writerows((e.text, getattr(e, args.task)) for e in rows)
    eval_specs.append(f"{(out / 'eval' / 'new-domain.csv').resolve()}:{args.task}")

    (out / "trainer.toml").write_text(
        "[trainer]\n"
        f'registry = "{Path(args.registry).resolve()}"\n'
        f'workdir = "{(out / "work").resolve()}"\n'
        f'recipe = "{Path(args.recipe).resolve()}"\n'
        f'eval_files = "{",".join(eval_specs)}"\n'
        "min_new_labels = 50\n",
        encoding="utf-8",
    )
    print(
        f"{len(keep)} labels to import ({out / 'labels.csv'}), {len(held)} held out; {len(report.rejected)} rows "
        "rejected"
    )
    print("evaluation set:\n  " + "\n  ".join(eval_specs))
    registry = Path(args.registry).resolve()
    print(
        f"next:\n  bearwatch model register MODEL_DIR --registry {registry}\n"
        f"  bearwatch model promote VERSION --registry {registry}\n"
        f"  bearwatch label import {out}/labels.csv --by analyst\n"
        f"  bearwatch trainer run-once --config {out}/trainer.toml"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
