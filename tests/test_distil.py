"""Distillation: a teacher's soft labels written resumably, read back, and taught to a student,
on a tiny model built on the spot (real training code, seconds)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from monitor.labels import SENTIMENT_LABELS, TASKS  # noqa: E402
from tests.tiny_model import build_tiny_base, synthetic_rows, write_csv  # noqa: E402
from training import distil  # noqa: E402
from training.model import IGNORE  # noqa: E402
from training.train import LABELS, Dataset, TrainConfig, fit, load_dataset  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distil")
    sentiment, topic = synthetic_rows()
    base = build_tiny_base(root / "base", [t for t, _ in sentiment + topic])
    # Real-looking unlabelled tweets: new texts, a repeat of one of them, and one near-duplicate of a labelled row.
    tweets = root / "tweets.csv"
    with tweets.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["created_at", "text"])
        for i in range(40):
            writer.writerow([f"2015-01-{i % 28 + 1:02d}", f"$ACME shares plunge {i} as selloff deepens"])
        writer.writerow(["2015-02-01", "$ACME shares plunge 0 as selloff deepens"])
        writer.writerow(["2015-02-02", sentiment[0][0].upper() + " https://t.co/zz"])
    recipe = root / "recipe.toml"
    recipe.write_text(
        f'base_model = "{base}"\nepochs = 2\nbatch_size = 16\nlr = 2e-3\nmax_length = 32\nthreads = 1\n'
        f'valid_fraction = 0.3\nsoft_labels = "{root / "soft.jsonl"}"\n'
        f'[[sources]]\npath = "{write_csv(root / "sentiment.csv", sentiment)}"\ntask = "sentiment"\n'
        f'[[sources]]\npath = "{write_csv(root / "topic.csv", topic)}"\ntask = "topic"\n'
        f'[[unlabelled]]\npath = "{tweets}"\nname = "tweets"\n'
    )
    torch.set_num_threads(1)
    return root, recipe, base


def _teacher(base: Path, bullish_bias: float = 0.0) -> distil.Teacher:
    """A tiny untrained teacher; `bullish_bias` makes it call everything bullish, loudly."""
    from monitor.labels import TOPIC_LABELS
    from monitor.scoring.inputs import load_tokenizer
    from training.model import MultiTaskEncoder

    torch.manual_seed(0)
    model = MultiTaskEncoder.from_base(str(base), len(TOPIC_LABELS), len(SENTIMENT_LABELS)).eval()
    with torch.no_grad():
        model.sentiment_head.bias[SENTIMENT_LABELS.index("bullish")] += bullish_bias
    return distil.Teacher(
        model, load_tokenizer(base / "tokenizer.json"), {"model": f"tiny-{bullish_bias}", "base": "tiny"}
    )


def test_unlabelled_texts_are_distinct_and_never_near_a_labelled_one(setup) -> None:
    _, recipe, _ = setup
    data = load_dataset(TrainConfig.from_toml(recipe, output="."))
    texts = [e.text for e in data.unlabelled]
    assert len(texts) == 40  # the repeat and the near-duplicate of a labelled row are left out
    labelled = {e.group for e in data.train + data.valid}
    assert all(e.group not in labelled and e.sentiment is None and e.topic is None for e in data.unlabelled)


def test_unlabelled_sources_need_soft_labels(setup) -> None:
    _, recipe, _ = setup
    with pytest.raises(ValueError, match="soft labels"):
        replace(TrainConfig.from_toml(recipe, output="."), soft_labels="")
    with pytest.raises(ValueError, match="distill_heads"):
        replace(TrainConfig.from_toml(recipe, output="."), distill_heads=["sentiment", "mood"])


def test_head_weights_are_checked_and_filled(setup) -> None:
    _, recipe, _ = setup
    config = TrainConfig.from_toml(recipe, output=".")
    assert config.head_weights == {"topic": 1.0, "sentiment": 1.0}
    assert replace(config, head_weights={"topic": 2}).head_weights == {"topic": 2.0, "sentiment": 1.0}
    for wrong in ({"mood": 1.0}, {"topic": 0.0}, {"sentiment": -1.0}, {"topic": "2"}, {"topic": True}):
        with pytest.raises(ValueError, match="head_weights"):
            replace(config, head_weights=wrong)


@pytest.mark.parametrize("distilled", [True, False])
def test_a_head_weight_reaches_the_loss_the_encoder_learns_from(setup, tmp_path: Path, distilled: bool) -> None:
    """Weights of 1 written out train exactly the default; a topic weight of 3 trains another
    encoder (with or without a teacher), so the balance is in the sum that is back-propagated."""
    _, recipe, base = setup
    config = replace(
        TrainConfig.from_toml(recipe, output=str(tmp_path)), epochs=1, soft_labels=str(tmp_path / "s.jsonl")
    )
    if not distilled:
        config = replace(config, unlabelled=(), soft_labels="")
    data = load_dataset(config)
    if distilled:
        distil.write_soft_labels(
            _teacher(base), [e.text for e in data.train + data.unlabelled], config.soft_labels, LABELS, 32
        )
    from monitor.scoring.inputs import load_tokenizer

    tokenizer = load_tokenizer(base / "tokenizer.json")

    def encoder(weights: dict) -> dict:
        run = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
        run.mkdir()
        model = fit(replace(config, head_weights=weights), data, tokenizer, base, run).model
        return {k: v for k, v in model.state_dict().items() if "head" not in k}

    plain, ones, topic3 = encoder({}), encoder({"topic": 1.0, "sentiment": 1.0}), encoder({"topic": 3.0})
    assert all(torch.equal(plain[k], ones[k]) for k in plain)
    assert not all(torch.allclose(plain[k], topic3[k]) for k in plain)


def test_soft_labels_resume_after_a_torn_line_and_refuse_another_teacher(setup, tmp_path: Path) -> None:
    _, _, base = setup
    teacher = _teacher(base)
    texts = [f"Acme shares {w} today" for w in ("plunge", "surge", "hold", "slump", "rally")]
    path = tmp_path / "soft.jsonl"
    first = distil.write_soft_labels(teacher, texts[:3] + texts[:1], path, LABELS, 32, batch_size=2)
    assert first == {"distinct": 3, "already": 0, "labelled": 3}
    with path.open("a", encoding="utf-8") as fh:
        fh.write(
            '{"key": "torn',
        )  # a kill in the middle of an append
    second = distil.write_soft_labels(teacher, texts, path, LABELS, 32, batch_size=2)
    assert second == {"distinct": 5, "already": 3, "labelled": 2}
    soft = distil.read_soft_labels(path)
    assert len(soft) == 5 and path.read_text().count("\n") == 6  # header + one line per text, no torn line left
    whole = distil.teacher_logits(teacher, texts, 32)
    targets = soft.targets(texts, LABELS)
    for task in TASKS:  # what was written is the teacher's output for that text, whatever its batch
        assert torch.allclose(targets[task], torch.from_numpy(whole[task]), atol=2e-4)
    with pytest.raises(distil.SoftLabelError, match="another teacher"):
        distil.write_soft_labels(_teacher(base, 1.0), texts, path, LABELS, 32)
    with pytest.raises(distil.SoftLabelError, match="no teacher logits for 1 of 6"):
        soft.targets(texts + ["never labelled"], LABELS)
    import gzip  # the form kept in git reads back the same, and is never appended to

    packed = tmp_path / "soft.jsonl.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    again = distil.read_soft_labels(packed).targets(texts, LABELS)
    assert all(torch.equal(again[task], targets[task]) for task in TASKS)
    with pytest.raises(distil.SoftLabelError, match="gzip"):
        distil.write_soft_labels(teacher, texts, packed, LABELS, 32)


def test_distillation_loss_is_cross_entropy_at_weight_zero_and_teaches_rows_without_gold() -> None:
    from torch.nn import functional as F

    logits = torch.randn(4, 3, requires_grad=True)
    gold = torch.tensor([0, IGNORE, 2, IGNORE])
    teacher = torch.randn(4, 3)
    plain = F.cross_entropy(logits, gold, ignore_index=IGNORE)
    assert torch.allclose(distil.distillation_loss(logits, gold, teacher, 0.0, 2.0), plain)
    assert distil.distillation_loss(teacher.clone().requires_grad_(), gold, teacher, 1.0, 2.0).item() == pytest.approx(
        0, abs=1e-6
    )
    distil.distillation_loss(logits, torch.full((4,), IGNORE), teacher, 0.5, 2.0).backward()
    assert logits.grad is not None and bool((logits.grad.abs().sum(dim=1) > 0).all())  # no gold, still taught


def test_the_prior_bias_gives_the_soft_targets_the_gold_shares_on_labelled_rows_only() -> None:
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(300, 3, generator=g) + torch.tensor([1.5, 0.0, -0.5])  # leans to class 0
    gold = torch.tensor([0] * 30 + [1] * 150 + [2] * 60 + [IGNORE] * 60)  # 12.5 / 62.5 / 25 % of 240
    for t in (1.0, 2.0):
        bias = distil.prior_bias(teacher, gold, t)
        shares = torch.softmax((teacher[:240] + bias) / t, dim=-1).mean(0)
        assert torch.allclose(shares, torch.tensor([0.125, 0.625, 0.25]), atol=1e-5)
        assert bias[0] < 0 < bias[1]  # the lean is taken out, the under-called class lifted
    with pytest.raises(ValueError, match="every class"):
        distil.prior_bias(teacher, torch.tensor([0, 1] * 150), 2.0)


def _student_of_the_loud_teacher(setup, tmp_path: Path, **recipe) -> tuple[np.ndarray, list, Dataset]:
    """A student of the all-bullish teacher at full weight, 8 epochs (enough for the tiny model to
    learn its texts): its sentiment logits on the validation rows with a gold sentiment, those
    rows, and the data it was trained on."""
    _, toml, base = setup
    config = replace(
        TrainConfig.from_toml(toml, output=str(tmp_path)),
        distill_weight=1.0,
        epochs=8,
        soft_labels=str(tmp_path / "s.jsonl"),
        **recipe,
    )
    data = load_dataset(config)
    distil.write_soft_labels(
        _teacher(base, 8.0), [e.text for e in data.train + data.unlabelled], config.soft_labels, LABELS, 32
    )
    from monitor.model_artifact import ContextSettings
    from monitor.scoring.inputs import load_tokenizer
    from training.train import Batches, predict

    tokenizer = load_tokenizer(base / "tokenizer.json")
    student = fit(config, data, tokenizer, base, tmp_path).model
    rated = [e for e in data.valid if e.sentiment is not None]
    batches = Batches(rated, tokenizer, ContextSettings(mode="none", max_length=32), 16)
    return predict(student, batches)["sentiment"], rated, data


def test_matching_the_prior_keeps_a_student_from_a_teacher_s_lean(setup, tmp_path: Path) -> None:
    """The all-bullish teacher of the test below (its student calls nearly everything bullish):
    with its soft targets matched to the gold shares, where bullish is a third, the student's mean
    p(bullish) on validation texts comes down to about that."""
    logits, _, data = _student_of_the_loud_teacher(
        setup, tmp_path, distill_heads=("sentiment",), distill_match_prior=True
    )
    shares = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    gold = np.mean([e.sentiment == "bullish" for e in data.train if e.sentiment is not None])
    assert abs(shares[:, SENTIMENT_LABELS.index("bullish")].mean() - gold) < 0.15


@pytest.mark.parametrize("heads", [("topic", "sentiment"), ("topic",)])
def test_a_student_learns_what_its_teacher_says_on_the_heads_it_teaches(setup, tmp_path: Path, heads) -> None:
    """A teacher that calls everything bullish, full weight on its soft labels: the student follows
    it on validation texts it never saw, against gold labels that are two-thirds something else;
    unless the sentiment head is left out of `distill_heads`, where the gold labels alone teach it.
    Judged on the validation rows with a gold sentiment (its guess on the other rows is noise)."""
    logits, rated, _ = _student_of_the_loud_teacher(setup, tmp_path, distill_heads=heads)
    gold = [SENTIMENT_LABELS.index(e.sentiment) for e in rated]
    assert len(rated) >= 20 and sum(g != SENTIMENT_LABELS.index("bullish") for g in gold) > len(gold) / 2
    called = logits.argmax(axis=1)
    bullish = (called == SENTIMENT_LABELS.index("bullish")).mean()
    if "sentiment" in heads:
        assert bullish > 0.95
    else:
        assert (called == gold).mean() > 0.9


def test_distil_labels_command_then_train_records_the_teacher(setup, tmp_path: Path, capsys) -> None:
    """The commands end to end: a teacher run's best.pt labels the recipe's texts, the student trains on them."""
    from bearwatch.cli import main

    root, recipe, base = setup
    teacher_run = tmp_path / "teacher"
    teacher_run.mkdir()
    torch.save(_teacher(base).model.state_dict(), teacher_run / "best.pt")
    soft = tmp_path / "soft.jsonl"
    args = ["distil-labels", "--config", str(recipe), "--teacher", str(teacher_run), "--output", str(soft)]
    with pytest.raises(SystemExit, match="--base-model"):
        main(args)
    assert main([*args, "--base-model", str(base), "--batch-size", "8"]) == 0
    summary = json.loads(capsys.readouterr().out)
    data = load_dataset(TrainConfig.from_toml(recipe, output="."))
    assert summary["labelled"] == len({e.text for e in data.train + data.unlabelled}) and summary["already"] == 0
    assert set(summary["teacher_validation"]) == set(TASKS)
    assert set(summary["teacher_validation"]["sentiment"]["per_class"]) == set(SENTIMENT_LABELS)
    assert set(summary["teacher_validation_by_source"]) == {e.source for e in data.valid}
    kept = [json.loads(line) for line in Path(str(soft) + ".validation.jsonl").read_text().splitlines()]
    assert [r["key"] for r in kept] == [distil.text_key(e.text) for e in data.valid]  # never in the soft labels
    assert not {r["key"] for r in kept} & set(distil.read_soft_labels(soft).logits)
    assert json.loads(Path(str(soft) + ".teacher.json").read_text())["teacher"]["model"].startswith("best.pt:")

    out = tmp_path / "student"
    code = main(
        [
            "train",
            "--config",
            str(recipe),
            "--output",
            str(out),
            "--soft-labels",
            str(soft),
            "--no-export",
            "--epochs",
            "1",
        ]
    )
    assert code == 0
    manifest = json.loads((out / "model" / "manifest.json").read_text())
    recorded = manifest["training"]["config"]
    assert recorded["soft_labels"]["path"] == "soft.jsonl" and recorded["unlabelled"][0]["name"] == "tweets"
    assert manifest["data"]["split"]["train"] == len(data.train)  # the pool and split hold labelled texts only


def test_init_seed_retrains_the_same_split_from_other_weights(setup, tmp_path: Path) -> None:
    """`init_seed` moves the initialisation and batch order only: the validation split stays, so two
    retrains compare item by item; unset, it is `seed` and a retrain repeats itself."""
    from monitor.scoring.inputs import load_tokenizer

    _, recipe, base = setup
    tokenizer = load_tokenizer(base / "tokenizer.json")
    plain = replace(TrainConfig.from_toml(recipe, output=str(tmp_path), epochs=1), unlabelled=(), soft_labels="")
    runs = {
        name: replace(plain, output=str(tmp_path / name), init_seed=seed)
        for name, seed in (("a", None), ("b", plain.seed), ("c", plain.seed + 1))
    }
    weights = {}
    for name, config in runs.items():
        data = load_dataset(config)
        assert [e.text for e in data.valid] == [e.text for e in load_dataset(plain).valid]
        (tmp_path / name).mkdir()
        model = fit(config, data, tokenizer, base, tmp_path / name).model
        weights[name] = model.sentiment_head.weight.detach().clone()
    assert runs["a"].training_seed == runs["b"].training_seed == plain.seed
    assert torch.equal(weights["a"], weights["b"])
    assert not torch.allclose(weights["a"], weights["c"])
