"""A long training run stopped in the middle of an epoch (a kill, the end of a session) goes on with
`--resume` from the batch it stopped at, and ends with exactly the weights of a run never stopped."""

from __future__ import annotations

import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tests.tiny_model import build_tiny_base, synthetic_rows, write_csv  # noqa: E402
from training import train as train_module  # noqa: E402
from training.train import TrainConfig, TrainingStopped, fit, load_dataset  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from monitor.scoring.inputs import load_tokenizer

    root = tmp_path_factory.mktemp("resume")
    sentiment, topic = synthetic_rows()
    sources = f"""
[[sources]]
path = "{write_csv(root / "sentiment.csv", sentiment)}"
task = "sentiment"
[[sources]]
path = "{write_csv(root / "topic.csv", topic)}"
task = "topic"
"""
    base = build_tiny_base(root / "base", [t for t, _ in sentiment + topic])
    recipe = root / "recipe.toml"
    recipe.write_text(
        f'base_model = "{base}"\nepochs = 2\nbatch_size = 16\nlr = 2e-3\nmax_length = 32\nthreads = 1\n'
        f"evals_per_epoch = 2\nvalid_fraction = 0.3\n{sources}"
    )
    config = TrainConfig.from_toml(recipe, output=str(root / "unused"))
    torch.set_num_threads(1)
    return config, load_dataset(config), load_tokenizer(base / "tokenizer.json"), base


def _weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_run_stopped_mid_epoch_resumes_to_the_same_weights(setup, tmp_path: Path, monkeypatch) -> None:
    config, data, tokenizer, base = setup
    whole = fit(replace(config, output=str(tmp_path / "a")), data, tokenizer, base, _dir(tmp_path / "a"))

    # The same run, asked to stop (SIGTERM) in the middle of its first epoch: handled, the loop
    # saves and stops after that batch.
    loss, calls = _fault_at(monkeypatch, 3, lambda: os.kill(os.getpid(), signal.SIGTERM))
    stopped = replace(config, output=str(tmp_path / "b"), checkpoint_minutes=60.0)
    with pytest.raises(TrainingStopped, match="epoch 1, batch 3"):
        fit(stopped, data, tokenizer, base, _dir(tmp_path / "b"))
    saved = torch.load(tmp_path / "b" / "checkpoint-last.pt", weights_only=False)
    assert (saved["state"]["epoch"], saved["state"]["position"], saved["state"]["step"]) == (0, 3, 3)
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back

    monkeypatch.setattr(train_module, "masked_multitask_loss", loss)
    resumed = fit(replace(stopped, resume=True), data, tokenizer, base, tmp_path / "b")
    assert calls["n"] == 3  # the resumed run did not redo the three batches (the fault is gone)
    assert resumed.history == whole.history
    assert resumed.seconds > saved["state"]["seconds"] > 0  # the run's wall time counts both parts
    a, b = _weights(whole.model), _weights(resumed.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_every_batch_resumes_from_any_of_them(setup, tmp_path: Path, monkeypatch) -> None:
    """With checkpoint_minutes = 0 every batch is saved; a crash (not a polite stop) after batch 5
    loses nothing that was saved."""
    config, data, tokenizer, base = setup
    whole = fit(replace(config, output=str(tmp_path / "a")), data, tokenizer, base, _dir(tmp_path / "a"))
    loss, _ = _fault_at(monkeypatch, 6, _crash)
    every = replace(config, output=str(tmp_path / "b"), checkpoint_minutes=0.0)
    with pytest.raises(RuntimeError, match="injected crash"):
        fit(every, data, tokenizer, base, _dir(tmp_path / "b"))
    assert torch.load(tmp_path / "b" / "checkpoint-last.pt", weights_only=False)["state"]["position"] == 5
    monkeypatch.setattr(train_module, "masked_multitask_loss", loss)
    resumed = fit(replace(every, resume=True), data, tokenizer, base, tmp_path / "b")
    a, b = _weights(whole.model), _weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_stop_request_stops_at_once_without_saving(setup, tmp_path: Path, monkeypatch) -> None:
    """Two SIGTERMs in a row (an impatient operator during a long validation pass): the second one
    does not wait for the batch to end, and writes no checkpoint of a half-done batch."""
    config, data, tokenizer, base = setup

    def twice() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)

    _fault_at(monkeypatch, 2, twice)
    with pytest.raises(TrainingStopped, match="at once"):
        fit(replace(config, output=str(tmp_path), checkpoint_minutes=60.0), data, tokenizer, base, tmp_path)
    assert not (tmp_path / "checkpoint-last.pt").exists()
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


def _fault_at(monkeypatch, batch: int, fault) -> tuple:
    """Fault injection: `fault()` runs when the training loss of batch number `batch` is computed.
    Returns the real loss (to put back) and the call counter."""
    loss, calls = train_module.masked_multitask_loss, {"n": 0}

    def faulty(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == batch:
            fault()
        return loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "masked_multitask_loss", faulty)
    return loss, calls


def _crash() -> None:
    raise RuntimeError("injected crash")


def _dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
