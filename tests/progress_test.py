"""What a training run prints: the epoch lines' means (the trainer's output is tested
whole in tests/train_test.py)."""

import math
import types

import numpy as np

from yolojax import progress
from yolojax.config import default_config
from yolojax.step_plan import StepPlan


def test_an_epochs_line_averages_over_its_finite_steps_and_its_time():
    # Two windows of 2 steps of 10 images: 1 s at 20 images/s (one step skipped: its loss
    # is the other step's), then 0.1 s at 200 images/s. The epoch: 40 images in 1.1 s, and
    # loss (1 × 4.0 + 2 × 1.0) / 3 finite steps.
    epoch = progress.EpochMeans()
    terms = dict.fromkeys(("coord", "object", "noobj", "class"), 0.5)
    epoch.add({"loss": 4.0, **terms, "images_per_second": 20.0, "skipped_steps": 1.0}, 2, 10)
    epoch.add({"loss": 1.0, **terms, "images_per_second": 200.0, "skipped_steps": 0.0}, 2, 10)
    assert epoch.line("epoch 1/3") == (
        "epoch 1/3: loss 2.000 (coord 0.500, object 0.500, noobj 0.500, class 0.500), 36 images/s"
    )
    epoch.add({"loss": math.nan, **terms, "images_per_second": 10.0, "skipped_steps": 1.0}, 1, 10)
    assert epoch.line("epoch 2/3") == (
        "epoch 2/3: every step skipped (a loss that was not finite), 10 images/s"
    )


def test_the_run_summary_of_a_short_run_counts_in_words():
    # A run of one step that its evaluation interval (in epochs) does not reach was said
    # to be evaluated "every 1250 steps and at the end", in "1 steps an epoch, 1 steps".
    config = default_config()
    config.model.update(backbone="darknet_tiny", head="conv", num_classes=1)
    info = types.SimpleNamespace(
        num_train_examples=16, num_eval_examples=4, eval_split_name="test", class_names=["box"]
    )
    params = {"w": np.zeros((10, 100))}
    summary = progress.run_summary(
        config, info, params, steps_per_epoch=1, total_steps=1, eval_every=5
    )
    assert "images of 1 class (box)" in summary
    assert ": 1 step an epoch, 1 step in all; evaluation on the test split at the end." in summary
    many = progress.run_summary(
        config, info, params, steps_per_epoch=4, total_steps=40, eval_every=8
    )
    assert "4 steps an epoch, 40 steps in all; evaluation on the test split every 8 steps" in many


def test_each_epoch_line_gives_its_training_time_and_the_time_to_go(monkeypatch, capsys):
    # 3 epochs of 10 steps. The first step is dispatched at 100 s (after the compilation),
    # each epoch's line comes 27 s after its first step, and an evaluation of 3 s follows
    # each line. The epoch's time leaves out the compilation and the evaluation; the time to
    # go is paced by the first epoch alone (27 s over its 9 steps after the first: 3 s a
    # step, × 20 left), then from the first line on, evaluations included (30 s a 10 steps).
    config = default_config()
    config.train.num_epochs = 3
    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    shown = progress.TrainingProgress(config, StepPlan(config, 10, 30), 0, shows=True)
    terms = dict.fromkeys(("loss", "coord", "object", "noobj", "class"), 1.0)
    for first, now[0] in ((1, 100.0), (11, 130.0), (21, 160.0)):
        shown.add(first, {})
        now[0] += 27.0
        shown.epoch_means.add({**terms, "images_per_second": 16.0, "skipped_steps": 0}, 10, 16)
        shown.end_epoch(first + 9)
    shown.close()
    lines = [line.split("16 images/s")[1] for line in capsys.readouterr().out.splitlines()]
    assert lines == [", 27 s; about 1 min 00 s to go", ", 27 s; about 30 s to go", ", 27 s"]
    assert progress.duration(7322) == "2 h 02 min" and progress.duration(59.6) == "1 min 00 s"


def test_a_windows_images_per_second_leaves_out_what_came_before_its_first_step(monkeypatch):
    # An evaluation of 30 s between two log steps (or the first step's compilation) made the
    # next window's images/s read as if training had slowed: 4 steps of 8 images from the
    # first step's dispatch at 40 s to 42 s are 16 images/s, whatever ran since 10 s.
    now = [10.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    window = progress.MetricWindow(stop_on_nonfinite=True)
    now[0] = 40.0
    for step in range(1, 5):
        window.add(step, {"loss": np.float32(1.0), "finite": np.bool_(True)})
    now[0] = 42.0
    assert window.flush(8)["images_per_second"] == 16.0
