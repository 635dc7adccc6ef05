"""A non-finite loss (a poisoned batch) stops training by name, or is skipped on request.

The batch of one step is poisoned with NaN pixels by wrapping the real training iterator, so
the trainer, its checkpoints and its metrics log run exactly as in a real run.
"""

import math

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from tests import tiny
from yolojax import train_lib, trainer, workdir
from yolojax.data import pipeline

pytestmark = pytest.mark.slow

POISONED_STEP = 3


@pytest.fixture(scope="module", name="data_dir")
def fixture_data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(autouse=True)
def poison_one_batch(monkeypatch):
    """Training step POISONED_STEP (counted from 1, as the trainer does) sees NaN images."""
    make_train_iterator = pipeline.make_train_iterator

    def poisoned(*args, start_step=0, **kwargs):
        batches = make_train_iterator(*args, start_step=start_step, **kwargs)
        for step, batch in enumerate(batches, start=start_step + 1):
            if step == POISONED_STEP:
                batch = {**batch, "image": np.full_like(batch["image"], np.nan)}
            yield batch

    monkeypatch.setattr(pipeline, "make_train_iterator", poisoned)


def _config(data_dir, **train):
    """tests/tiny.py's run: one epoch of 4 steps, evaluated only at the end."""
    config = tiny.tiny_config(data_dir)
    config.train.keep_checkpoints = 5
    config.train.update(train)
    return config


def _saved_state(run_dir, step: int) -> dict:
    """Every array of a checkpoint's train state (params, optimizer state, statistics)."""
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(run_dir / "checkpoints" / str(step) / "state")


def _pop_schedule_counts(state: dict) -> list[int]:
    """Takes the learning-rate schedule's step counts out of a saved state: optax's
    ScaleByScheduleState, saved as a dict of ``count`` alone (Adam's has its moments)."""
    counts = []

    def pop_from(tree):  # dicts and lists (optax's chains), as orbax restores them
        for key in list(tree) if isinstance(tree, dict) else range(len(tree)):
            if isinstance(tree[key], dict) and set(tree[key]) == {"count"}:
                counts.append(int(tree[key].pop("count")))
            elif isinstance(tree[key], dict | list):
                pop_from(tree[key])

    pop_from(state["opt_state"])
    return counts


def _all_finite(tree) -> bool:
    return all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(tree))


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, data_dir
):
    # Steps 3 and 4 share a log window: the poisoned step is found (and named) only when the
    # window is checked at step 4, before that step's checkpoint would be written.
    config = _config(data_dir, log_every_steps=2, checkpoint_every_steps=2)
    run_dir = tmp_path / "run"
    with pytest.raises(train_lib.NonFiniteLossError) as error:
        trainer.train_and_evaluate(config, str(run_dir))
    message = str(error.value)
    assert f"the loss of step {POISONED_STEP} is nan" in message
    assert f"The last good checkpoint (step 2) in {run_dir / 'checkpoints'} is intact" in message
    assert "skip_nonfinite=True" in message

    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["2"]
    _, state, step = train_lib.restore_trained_state(config, run_dir)
    assert step == 2 and _all_finite(state.params) and _all_finite(state.batch_stats)
    # The log stops at the last good checkpoint: nothing of the poisoned window is recorded.
    records = workdir.read_metrics(run_dir)
    assert [r["step"] for r in records] == [2]
    assert math.isfinite(records[0]["loss"])


def test_a_nonfinite_loss_before_the_first_checkpoint_says_the_rerun_starts_over(
    tmp_path, data_dir
):
    config = _config(data_dir, log_every_steps=1, checkpoint_every_steps=4)
    with pytest.raises(train_lib.NonFiniteLossError) as error:
        trainer.train_and_evaluate(config, str(tmp_path / "run"))
    message = str(error.value)
    assert f"the loss of step {POISONED_STEP} is nan" in message
    assert "before the first checkpoint: rerunning starts over" in message
    assert "step None" not in message


def test_skip_nonfinite_keeps_the_previous_state_and_counts_the_skipped_step(tmp_path, data_dir):
    config = _config(data_dir, skip_nonfinite=True, log_every_steps=1, checkpoint_every_steps=1)
    run_dir = tmp_path / "run"
    results = trainer.train_and_evaluate(config, str(run_dir))
    assert results["step"] == 4

    skipped = {r["step"]: r["skipped_steps"] for r in workdir.read_metrics(run_dir) if "loss" in r}
    assert skipped == {1: 0, 2: 0, POISONED_STEP: 1, 4: 0}
    before, at, after = (_saved_state(run_dir, s) for s in (2, POISONED_STEP, 4))
    # The skipped step changed nothing but the step counters: the run's (which keeps the
    # data order) and the learning-rate schedule's (which keeps the schedule on it).
    assert int(at.pop("step")) == POISONED_STEP and int(before.pop("step")) == 2
    assert _pop_schedule_counts(at) == [POISONED_STEP]
    assert _pop_schedule_counts(before) == [2]
    jax.tree.map(np.testing.assert_array_equal, at, before)  # Adam's own count too
    # Training went on from there, finitely.
    assert _all_finite(after)
    assert not np.array_equal(
        after["params"]["head"]["out"]["kernel"], at["params"]["head"]["out"]["kernel"]
    )
