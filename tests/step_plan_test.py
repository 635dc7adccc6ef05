"""When the loop logs, saves, evaluates and stops, worked out by hand for a small plan."""

import ml_collections
import pytest

from yolojax.step_plan import Due, StepPlan


def _plan(every_epochs=2.0, checkpoint_every=15, log_every=4, steps_per_epoch=10, total=45):
    config = ml_collections.ConfigDict(
        {
            "eval": {"every_epochs": every_epochs},
            "train": {"checkpoint_every_steps": checkpoint_every, "log_every_steps": log_every},
        }
    )
    return StepPlan(config, steps_per_epoch, total)


@pytest.mark.parametrize(
    ("step", "due"),
    [
        (1, Due(log=False, epoch_line=False, save=False, evaluate=False, stop=False, last=False)),
        (4, Due(log=True, epoch_line=False, save=False, evaluate=False, stop=False, last=False)),
        (10, Due(log=True, epoch_line=True, save=False, evaluate=False, stop=False, last=False)),
        # A checkpoint every 15 steps: logged first, so that its losses are checked.
        (15, Due(log=True, epoch_line=False, save=True, evaluate=False, stop=False, last=False)),
        # Every 2 epochs of 10 steps: evaluated, and saved with it.
        (20, Due(log=True, epoch_line=True, save=True, evaluate=True, stop=False, last=False)),
        (30, Due(log=True, epoch_line=True, save=True, evaluate=False, stop=False, last=False)),
        (40, Due(log=True, epoch_line=True, save=True, evaluate=True, stop=False, last=False)),
        # The last step ends a partial fifth epoch: evaluated and saved.
        (45, Due(log=True, epoch_line=True, save=True, evaluate=True, stop=False, last=True)),
    ],
)
def test_the_plan_of_each_step(step, due):
    assert _plan().after(step, stop_requested=False) == due


def test_a_stop_saves_at_once_and_leaves_the_evaluation_to_the_resumed_run():
    plan = _plan()
    assert plan.after(7, stop_requested=True) == Due(
        log=True, epoch_line=False, save=True, evaluate=False, stop=True, last=False
    )
    assert plan.after(20, stop_requested=True).evaluate is False
    # The last step too: its evaluation would spend a preempted job's grace period as well.
    assert plan.after(45, stop_requested=True) == Due(
        log=True, epoch_line=True, save=True, evaluate=False, stop=True, last=True
    )


def test_epochs_are_labelled_from_one_and_a_partial_last_epoch_counts_and_says_so():
    plan = _plan()  # num_epochs 4.5
    assert [plan.epoch_label(step) for step in (1, 10, 11, 41, 45)] == [
        "epoch 1/5",
        "epoch 1/5",
        "epoch 2/5",
        "epoch 5/5, 5 of its 10 steps",
        "epoch 5/5, 5 of its 10 steps",
    ]
    # num_epochs 0.4: the bar and the epoch's line said "epoch 1/1", as of a whole epoch.
    assert _plan(total=4).epoch_label(1) == "epoch 1/1, 4 of its 10 steps"
    assert _plan(total=10).epoch_label(10) == "epoch 1/1"


def test_a_fractional_evaluation_interval_and_none():
    half = _plan(every_epochs=0.5)  # every 5 steps
    assert [step for step in range(1, 46) if half.due_for_evaluation(step)] == list(range(5, 46, 5))
    never = _plan(every_epochs=0)  # only the last step
    assert [step for step in range(1, 46) if never.due_for_evaluation(step)] == [45]
    # A step past the last (a run resumed with fewer epochs than it trained) is the last.
    assert never.due_for_evaluation(48) and half.due_for_evaluation(47)
