"""End to end: train → checkpoint → resume → evaluate → predict, on tiny synthetic data."""

import io
import json
import os
import re
import shutil
import signal
import sys
import warnings

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from absl import flags
from ml_collections import config_flags
from PIL import Image

from configs import voc
from tests import tiny
from yolojax import (
    checkpoints,
    cli,
    cpu_backend,
    errors,
    eval_lib,
    models,
    optim,
    predict,
    preemption,
    pretrained,
    run_log,
    train_lib,
    trainer,
)
from yolojax import workdir as workdir_io
from yolojax.data import pipeline, sources, synthetic_shapes, voc_folder
from yolojax.data.testing import VocImage, VocObject, valid_box_data_source, write_voc_folder
from yolojax.detector import Detector

STEPS_PER_EPOCH = 4  # 32 train images / batch 8


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def tiny_config(data_dir, **train):
    """tests/tiny.py's run for 2 epochs, evaluated after each, with frequent checkpoints."""
    config = tiny.tiny_config(data_dir, head_channels=32)
    config.train.num_epochs = 2
    config.train.log_every_steps = 2
    config.train.checkpoint_every_steps = 4
    config.train.keep_checkpoints = 5
    config.eval.batch_size = 8  # 12 test images: the last batch is padded
    config.eval.every_epochs = 1
    config.eval.train_subset = 8
    config.train.update(train)
    return config


def _params(workdir, config, checkpoint="latest"):
    _, state, step = train_lib.restore_trained_state(config, workdir, checkpoint)
    return state.params, step


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal: progress bars draw on terminals only."""

    def isatty(self) -> bool:
        return True


def test_train_evaluate_predict(tmp_path, data_dir, monkeypatch, capsys):
    workdir = tmp_path / "my run"  # a space: the commands printed must still paste
    config = tiny_config(data_dir)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    append_metrics = workdir_io.append_metrics

    def append_and_warn(*args):  # a warning while the progress bar is drawn
        warnings.warn("the disk is nearly full", stacklevel=1)
        append_metrics(*args)

    monkeypatch.setattr(workdir_io, "append_metrics", append_and_warn)
    results = trainer.train_and_evaluate(config, str(workdir))
    monkeypatch.undo()
    assert results["step"] == 2 * STEPS_PER_EPOCH
    assert results["num_images"] == 12  # every test image once, padding excluded
    # Each evaluation shows its progress, in images; the run ends saying where it saved.
    progress = terminal.getvalue()
    assert "epoch 1/2: " in progress and "epoch 2/2: " in progress
    assert progress.count("Evaluating (test):   0%|          | 0/12") == 2
    assert progress.count("Evaluating (train subset):   0%|          | 0/8") == 2
    out = capsys.readouterr().out
    assert f"Saved in {workdir}: checkpoints/" in out
    assert (
        f"Evaluate with: python evaluate.py --workdir '{workdir}' (the last checkpoint; "
        "--checkpoint best: best/)\n"
    ) in out
    # First, what it trains: the model and its size, the data, the devices, the schedule.
    num_params = sum(np.size(leaf) for leaf in jax.tree.leaves(_params(workdir, config)[0]))
    assert (
        f"Training darknet_tiny with the conv head ({num_params / 1e6:.2f} M parameters, "
        "float32) on synthetic_shapes: 32 train and 12 test images of 5 classes "
        f"({', '.join(synthetic_shapes.CLASS_NAMES)}) at 64×64. Batch 8 over 1 CPU device: "
        "4 steps an epoch, 8 steps in all; evaluation on the test split every 4 steps and at "
        "the end.\n"
    ) in out
    # Warnings get lines of their own above the bar, not the end of the bar's line.
    warned = re.findall(r"(.)\S+:\d+: UserWarning: the disk is nearly full\n", progress)
    assert warned and set(warned) <= {"\r", "\n"}, warned

    # The run's files: metrics per logged step and per evaluation, plots, config, classes.
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [2, 4, 6, 8]
    assert [r["step"] for r in records if "test_mAP" in r] == [4, 8]
    # The learning rate logged is the one each step applied: the window's mean of the
    # schedule at the steps' counts before their update (0 and 1 for the record of step 2).
    _, schedule = optim.create_optimizer(config.train, STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH)
    for r in (r for r in records if "loss" in r):
        expected = np.mean([schedule(r["step"] - 2), schedule(r["step"] - 1)])
        assert r["learning_rate"] == pytest.approx(expected, rel=1e-6), r["step"]
    assert len({round(r["learning_rate"], 9) for r in records if "loss" in r}) == 4  # it moves
    # Each evaluation's line, with the train subset's mAP.
    for r in records:
        if "test_mAP" in r:
            assert (
                f"step {r['step']}: test mAP {r['test_mAP']:.4f} (area {r['test_mAP_area']:.4f}), "
                f"loss {r['test_loss']:.3f}; train subset mAP {r['train_mAP']:.4f}\n"
            ) in out
            terms = [r[f"test_{name}"] for name in ("coord", "object", "noobj", "class")]
            assert sum(terms) == pytest.approx(r["test_loss"], rel=1e-5)
    # A line per epoch, for a log without the bar: the means of its steps' logged terms.
    for epoch, steps in ((1, (2, 4)), (2, (6, 8))):
        mean = {
            name: np.mean([r[name] for r in records if r.get("loss") and r["step"] in steps])
            for name in ("loss", "coord", "object", "noobj", "class")
        }
        assert (
            f"epoch {epoch}/2: loss {mean['loss']:.3f} (coord {mean['coord']:.3f}, object "
            f"{mean['object']:.3f}, noobj {mean['noobj']:.3f}, class {mean['class']:.3f}), "
        ) in out
    assert all("train_mAP" in r for r in records if "test_mAP" in r)
    for name in ("loss.png", "mAP.png", "config.json", "classes.json"):
        assert (workdir / name).stat().st_size > 0, name
    assert _checkpoint_steps(workdir) == ["4", "8"]

    # evaluate.py's library path restores the same checkpoint and gets the same mAP.
    evaluated = eval_lib.evaluate_checkpoint(config, str(workdir))
    assert evaluated["step"] == 8
    assert evaluated["mAP"] == pytest.approx(results["mAP"], nan_ok=True)
    assert (workdir / "eval" / "pr_curves.png").stat().st_size > 0
    saved = json.loads((workdir / "eval" / "metrics.json").read_text())
    assert set(saved["AP"]) == set(json.loads((workdir / "classes.json").read_text()))
    assert saved["step"] == 8
    # The loss of the last evaluation, the same checkpoint on the same images.
    assert saved["loss"] == pytest.approx(evaluated["loss"])
    last_evaluation = [r for r in records if "test_mAP" in r][-1]
    assert saved["loss"]["loss"] == pytest.approx(last_evaluation["test_loss"], rel=1e-5)
    # A workdir it cannot write to (read-only; here eval/ is a file) still gets the results.
    (workdir / "eval").rename(workdir / "eval_saved")
    (workdir / "eval").write_text("")
    assert evaluated["saved"] == [
        workdir / "eval" / "metrics.json",
        workdir / "eval" / "pr_curves.png",
    ]
    with pytest.warns(
        UserWarning, match=r"Could not save .*eval.metrics\.json and .*eval.pr_curves\.png: "
    ):
        again = eval_lib.evaluate_checkpoint(config, str(workdir))
    assert again["mAP"] == evaluated["mAP"] and again["saved"] == []

    # predict: a drawing and a JSON of pixel boxes. Eight steps leave no box scored above 0,
    # so the trained model's output layer is set to give a known box in every cell: the
    # cell itself (centre offset 0.5, size 1 cell), confidence 1, every class score 1.
    model, state, _ = train_lib.restore_trained_state(config, str(workdir))
    variables = train_lib.model_variables(state)
    out = variables["params"]["head"]["out"]
    num_classes, cell_box = config.model.num_classes, [1.0, 0.5, 0.5, 1.0, 1.0]
    bias = np.array([1.0] * num_classes + cell_box * config.model.num_boxes, np.float32)
    variables["params"]["head"]["out"] = {"kernel": np.zeros_like(out["kernel"]), "bias": bias}
    class_names = json.loads((workdir / "classes.json").read_text())
    detector = Detector(model, variables, config, class_names, score_threshold=0.0)
    image = (np.random.default_rng(0).uniform(size=(48, 80, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "street.jpg")
    record, failed = predict.predict_files(detector, [tmp_path / "street.jpg"], tmp_path / "out")
    assert not failed
    assert Image.open(tmp_path / "out" / "street.jpg").size == (80, 48)
    detections = record[str(tmp_path / "street.jpg")]["detections"]
    # 4 × 4 cells of 20 × 12 pixels, each detected once per class (its two boxes are one).
    cells = {(c * 20, r * 12, c * 20 + 20, r * 12 + 12) for r in range(4) for c in range(4)}
    found = sorted((tuple(d["box"]), d["class"]) for d in detections)
    assert found == sorted((cell, name) for cell in cells for name in class_names)
    assert detector(image).boxes.dtype == np.float32  # as its scores


def test_resume_gives_the_same_parameters(tmp_path, data_dir, capsys):
    config = tiny_config(data_dir, num_epochs=2, checkpoint_every_steps=4)
    config.model.head = "fc"  # the fc head has dropout: its keys must follow the step too
    config.model.fc_hidden = 32
    full = tmp_path / "full"
    trainer.train_and_evaluate(config, str(full))

    # A run stopped after step 4: its workdir holds only the step-4 checkpoint.
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "4", resumed / "checkpoints" / "4")
    results = trainer.train_and_evaluate(config, str(resumed))
    assert results["step"] == 8

    full_params, _ = _params(full, config)
    resumed_params, step = _params(resumed, config)
    assert step == 8
    for a, b in zip(jax.tree.leaves(full_params), jax.tree.leaves(resumed_params), strict=True):
        np.testing.assert_array_equal(a, b)
    # and training did change them
    start_params, _ = _params(full, config, checkpoint=4)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(start_params), jax.tree.leaves(full_params), strict=True)
    )

    # Rerunning the finished run reports its final evaluation again and logs nothing new.
    log = (full / "metrics.jsonl").read_text()
    again = trainer.train_and_evaluate(config, str(full))
    assert again["step"] == 8 and again["mAP"] == pytest.approx(results["mAP"])
    assert (full / "metrics.jsonl").read_text() == log
    assert "already trained to step 8" in capsys.readouterr().out
    assert not list(full.glob("config.before_step_*"))  # the same config: nothing kept

    # Rerun with fewer epochs than it trained: nothing is left to train, so config.json stays
    # the config that the checkpoint was trained with; the change is named.
    shorter = config.copy_and_resolve_references()
    shorter.train.num_epochs = 1.0
    saved = (full / "config.json").read_text()
    trainer.train_and_evaluate(shorter, str(full))
    out = capsys.readouterr().out
    assert "train.num_epochs: 2.0 -> 1.0. The run has already trained to step 8, at or past" in out
    assert "config.json is left as it was" in out and "Training goes on" not in out
    assert (full / "config.json").read_text() == saved
    assert not list(full.glob("config.before_step_*"))

    # Its last step's evaluation not logged (a run stopped during it), then rerun with fewer
    # epochs, evaluated at the end only, so that step 8 is no step due for evaluation: it is
    # evaluated and logged, not said to be "logged already" and left out of the log.
    rows = [json.loads(line) for line in log.splitlines()]
    unevaluated = [row for row in rows if not (row["step"] == 8 and "test_mAP" in row)]
    (full / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in unevaluated))
    at_the_end = shorter.copy_and_resolve_references()
    at_the_end.eval.every_epochs = 0
    assert trainer.train_and_evaluate(at_the_end, str(full))["step"] == 8
    out = capsys.readouterr().out
    assert "Evaluating step 8, which was saved but not evaluated." in out
    logged = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    assert [row["test_mAP"] for row in logged if row["step"] == 8 and "test_mAP" in row] == [
        pytest.approx(results["mAP"])
    ]

    # Rerun with more epochs and another setting: the changes are named, training goes on
    # with them, and the run's config they replace is kept.
    changed = config.copy_and_resolve_references()
    changed.train.num_epochs = 3.0
    changed.train.log_every_steps = config.train.log_every_steps + 1
    changed.eval.iou_threshold = 0.3
    assert trainer.train_and_evaluate(changed, str(full))["step"] == 12
    change = (
        "eval.iou_threshold: 0.45 -> 0.3; "
        f"train.log_every_steps: {config.train.log_every_steps} -> {changed.train.log_every_steps}"
        "; train.num_epochs: 2.0 -> 3.0. Training goes on"
    )
    out = capsys.readouterr().out
    assert f"differs from the one saved in this workdir: {change}" in out
    assert "The learning-rate schedule now spans 12 steps: from step 8 the rate follows" in out
    # best/ would be kept against mAPs of other NMS settings without a word.
    assert (
        "The test mAP is measured otherwise from here on (eval.iou_threshold): best/ and "
        f"mAP.png weigh it against the mAPs before, which may be higher or lower for that "
        f"alone. To compare, evaluate best/ as it is measured now: python evaluate.py "
        f"--workdir {full} --checkpoint best"
    ) in out
    spaced = run_log._map_moves(full / "my run", {"eval.iou_threshold"})[0]
    assert spaced.endswith(f"--workdir '{full / 'my run'}' --checkpoint best")  # to paste
    assert (full / "config.before_step_8.json").read_text() == saved
    saved = json.loads((full / "config.json").read_text())
    assert saved["train"]["log_every_steps"] == changed.train.log_every_steps
    assert saved["train"]["num_epochs"] == 3.0


def test_a_resume_on_a_larger_training_set_says_the_epochs_and_schedule_move(
    tmp_path, data_dir, capsys
):
    # Only train.batch_size and a cosine's num_epochs were said to move the schedule; twice
    # the images made every epoch twice as long without a word (the rate jumped, and
    # metrics.jsonl's epoch went back from 1.0 to 0.5).
    config = tiny_config(data_dir, num_epochs=1.0)  # 32 images, batch 8: 4 steps
    trainer.train_and_evaluate(config, str(tmp_path))
    larger = config.copy_and_resolve_references()
    larger.data.synthetic.num_train = 64
    larger.train.num_epochs = 2.0
    capsys.readouterr()
    trainer.train_and_evaluate(larger, str(tmp_path))
    out = capsys.readouterr().out
    assert "data.synthetic.num_train: 32 -> 64" in out
    assert (
        "An epoch is now 8 steps, 4 before: epochs (the schedule's, metrics.jsonl's) count the "
        "new ones. The learning-rate schedule now spans 16 steps: from step 4 the rate follows"
    ) in out
    assert "The test mAP is measured otherwise" not in out  # the test images are the same


def test_the_same_config_on_a_training_set_that_grew_says_the_epochs_and_schedule_move(
    tmp_path, data_dir, capsys, monkeypatch
):
    # A VOC folder that gained images, resumed with the same config: nothing was said.
    config = tiny_config(data_dir, num_epochs=1.0)  # 32 images, batch 8: 4 steps
    trainer.train_and_evaluate(config, str(tmp_path))
    steps_for = train_lib.steps_for  # as if the folder now held twice the images
    monkeypatch.setattr(
        train_lib, "steps_for", lambda config, examples: steps_for(config, 2 * examples)
    )
    capsys.readouterr()
    trainer.train_and_evaluate(config, str(tmp_path))
    out = capsys.readouterr().out
    assert "The config differs" not in out
    assert (
        "The training set has another size than when step 4 was saved. An epoch is now 8 "
        "steps, 4 before: epochs (the schedule's, metrics.jsonl's) count the new ones. The "
        "learning-rate schedule now spans 8 steps: from step 4 the rate follows it"
    ) in out


def test_a_config_changed_twice_at_one_step_keeps_both_earlier_ones(tmp_path):
    first, second, third = (json.dumps({"seed": seed}) for seed in range(3))
    assert workdir_io.save_config(tmp_path, first, 5) == ([], None)
    changes, kept = workdir_io.save_config(tmp_path, second, 5)
    assert changes == ["seed: 0 -> 1"] and kept == tmp_path / "config.before_step_5.json"
    changes, kept = workdir_io.save_config(tmp_path, third, 5)
    assert changes == ["seed: 1 -> 2"] and kept == tmp_path / "config.before_step_5.json.1"
    assert (tmp_path / "config.before_step_5.json").read_text() == first
    assert (tmp_path / "config.before_step_5.json.1").read_text() == second
    assert (tmp_path / "config.json").read_text() == third


def test_a_field_added_to_yolojax_since_a_run_was_saved_is_no_change_at_its_default(
    tmp_path, capsys
):
    # A run saved before config.data.clip_box_overshoot existed had it at 0 in effect: its
    # resume said "data.clip_box_overshoot: (absent) -> 0.0" and set the config.json aside.
    config = tiny.tiny_config(str(tmp_path / "data"))
    saved = json.loads(config.to_json_best_effort())
    del saved["data"]["clip_box_overshoot"]
    info = pipeline.DatasetInfo(("a", "b"), 8, 4, "test")

    def resume(total_steps: int) -> str:  # of the run saved without the field
        (tmp_path / workdir_io.CONFIG_FILE).write_text(json.dumps(saved))
        run_log.prepare_workdir(config, info, tmp_path, 4, (4, total_steps)).close()
        return capsys.readouterr().out

    for total_steps in (4, 8):  # finished, and resumed with steps to go
        assert "differs" not in resume(total_steps)
    assert sorted(path.name for path in tmp_path.glob("config*")) == ["config.json"]
    # At another value, the change is from the value the run had: the default.
    config.data.source, config.data.folder = "voc_folder", str(tmp_path)
    config.data.clip_box_overshoot = 2.0
    for total_steps in (4, 8):
        assert "data.clip_box_overshoot: 0.0 -> 2.0" in resume(total_steps)


def test_a_run_from_imagenet_weights_needs_them_only_to_start(
    tmp_path, data_dir, capsys, monkeypatch
):
    # Ported ImageNet weights (random here) seed the backbone of a fresh run only: resuming,
    # evaluating and predicting restore every value from the checkpoint, so they work on a
    # machine or in a folder without the weights file (configs/voc.py names it relatively).
    weights = tmp_path / "weights" / "resnet18.msgpack"
    classifier = models.get_classifier("resnet18")
    variables = classifier.init(jax.random.key(3), np.zeros((1, 32, 32, 3)), train=False)
    pretrained.save_variables(str(weights), "resnet18", jax.device_get(variables))
    config = tiny.tiny_config(data_dir)  # 4 steps, evaluated after the last
    config.model.backbone, config.model.pretrained = "resnet18", str(weights)
    config.data.image_size = 128  # ResNet's 32x downsampling to the 4x4 grid
    workdir = tmp_path / "run"
    results = trainer.train_and_evaluate(config, str(workdir))
    weights.unlink()

    # Nor does evaluating need a train split of a whole batch (a test-only copy of the data).
    capped = config.copy_and_resolve_references()
    capped.data.max_train_examples = config.train.batch_size // 2
    evaluated = eval_lib.evaluate_checkpoint(capped, str(workdir))
    assert evaluated["step"] == 4
    # The trained model's own loss on the test split (its mAP is 0 after 4 steps): a model
    # restored in part, or seeded afresh, would have another.
    assert evaluated["loss"] == pytest.approx(results["loss"], rel=1e-5)
    # The Detector restores without the weights file too (with the config of the workdir).
    Detector.from_workdir(str(workdir))(np.zeros((40, 60, 3), np.uint8))
    capsys.readouterr()
    again = trainer.train_and_evaluate(config, str(workdir))
    out = capsys.readouterr().out
    assert again["step"] == 4 and "already trained to step 4" in out
    assert f"Nothing left to train; the run is in {workdir}: checkpoints/" in out
    assert "Saved in" not in out  # nothing was
    # A fresh run still needs them, and says so before it prepares any data; so does one
    # stopped before its first checkpoint (an empty checkpoints/ folder).
    (tmp_path / "fresh" / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(pipeline, "get_dataset_info", lambda _: pytest.fail("data prepared"))
    with pytest.raises(FileNotFoundError, match=r"python -m yolojax\.pretrained --arch resnet18"):
        trainer.train_and_evaluate(config, str(tmp_path / "fresh"))


def test_the_callers_config_is_left_as_given_for_the_next_run_of_a_sweep(
    tmp_path, data_dir, monkeypatch
):
    # The run filled in the caller's config: num_classes=0 ("the dataset's") became this
    # dataset's 5, which the next run of a notebook's sweep, on another dataset, refused as
    # set by hand; a relative path became this folder's.
    monkeypatch.chdir(tmp_path)
    config = tiny_config(os.path.relpath(data_dir, tmp_path))
    config.model.num_classes = 0
    config.lock()  # as a --config file's
    given = config.to_dict()
    assert trainer.train_and_evaluate(config, "run", verbose=False)["step"] == 8
    assert config.to_dict() == given
    saved = workdir_io.read_saved_config(tmp_path / "run")
    assert saved["model"]["num_classes"] == 5 and os.path.isabs(saved["data"]["tfds_data_dir"])


def _on_step(number, action):
    """A stand-in for train_lib.make_train_step whose step calls `action()` at call `number`."""
    make_train_step = train_lib.make_train_step

    def make_step(*args):
        step_fn, calls = make_train_step(*args), []

        def step(*step_args):
            calls.append(None)
            if len(calls) == number:
                action()
            return step_fn(*step_args)

        return step

    return make_step


@pytest.fixture(name="ctrl_c")
def fixture_ctrl_c():
    """Ctrl-C as in a terminal (Python's KeyboardInterrupt handler) for the test, also where
    pytest started ignoring SIGINT (run as a script's background job, which trainer warns of)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _stopped_by(signal_number, at_step, config, workdir, monkeypatch) -> preemption.TrainingStopped:
    """Trains with `signal_number` raised during step `at_step`; the stop it causes.

    Undoes the test's monkeypatching afterwards, so that a rerun trains normally."""
    monkeypatch.setattr(
        train_lib, "make_train_step", _on_step(at_step, lambda: signal.raise_signal(signal_number))
    )
    with pytest.raises(preemption.TrainingStopped) as stop:
        trainer.train_and_evaluate(config, str(workdir))
    monkeypatch.undo()
    return stop.value


def _checkpoint_steps(workdir) -> list[str]:
    return sorted(p.name for p in (workdir / "checkpoints").iterdir())


def _logged(workdir, key) -> list[tuple[int, float]]:
    """(step, value) of every metrics.jsonl record with `key`, in log order."""
    return [(r["step"], r[key]) for r in workdir_io.read_metrics(workdir) if key in r]


def _evaluated_steps(workdir) -> list[int]:
    return [step for step, _ in _logged(workdir, "test_mAP")]


@pytest.mark.usefixtures("ctrl_c")
def test_ctrl_c_saves_the_step_reached_and_the_rerun_trains_as_if_uninterrupted(
    tmp_path, data_dir, monkeypatch, capfd
):
    config = tiny_config(data_dir, log_every_steps=1)  # 8 steps, saved at 4 and 8
    config.eval.every_epochs = 0
    config.eval.train_subset = 0
    trainer.train_and_evaluate(config, str(tmp_path / "full"))

    stopped, handler = tmp_path / "stopped", signal.getsignal(signal.SIGINT)
    stop = _stopped_by(signal.SIGINT, 3, config, stopped, monkeypatch)
    assert (stop.step, stop.exit_status) == (3, 130)
    assert _checkpoint_steps(stopped) == ["3"]
    assert (stopped / "loss.png").exists()  # the curves so far
    err = capfd.readouterr().err
    assert "SIGINT received: training stops after the current step" in err
    # Not a terminal (a log file): no progress bar redraws, the lines per epoch instead.
    assert "step/s]" not in err and "s/step]" not in err and "epoch 1/2: " not in err
    assert signal.getsignal(signal.SIGINT) is handler

    assert trainer.train_and_evaluate(config, str(stopped))["step"] == 8
    out = capfd.readouterr().out
    assert "Resuming from the checkpoint of step 3" in out
    # The first epoch's line covers the steps trained since the resume only, and says so.
    assert "\nepoch 1/2 (steps 4-4, resumed): loss " in out and "\nepoch 2/2: loss " in out

    assert _logged(stopped, "loss") == _logged(tmp_path / "full", "loss")
    assert [step for step, _ in _logged(stopped, "loss")] == list(range(1, 9))
    for a, b in zip(
        jax.tree.leaves(_params(stopped, config)[0]),
        jax.tree.leaves(_params(tmp_path / "full", config)[0]),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.usefixtures("ctrl_c")
def test_ctrl_c_stops_a_notebook_sweep_that_skips_failed_runs(tmp_path, data_dir, monkeypatch):
    # The stop was an Exception: a sweep's `except Exception` took a Ctrl-C for a failed run
    # and started the next one.
    config = tiny_config(data_dir)
    monkeypatch.setattr(
        train_lib, "make_train_step", _on_step(2, lambda: signal.raise_signal(signal.SIGINT))
    )
    trained = []
    with pytest.raises(KeyboardInterrupt, match=r"^Stopped on SIGINT after step 2, saved in "):
        for run in ("a", "b"):
            try:
                trainer.train_and_evaluate(config, str(tmp_path / run), verbose=False)
            except Exception:  # the sweep skips a failed run
                continue
            trained.append(run)
    assert trained == [] and not (tmp_path / "b").exists()
    assert _checkpoint_steps(tmp_path / "a") == ["2"]


def _signal_in_the_first_evaluation(patch, signal_number=signal.SIGINT) -> None:
    """Patches eval_lib.evaluate (with `patch`, a MonkeyPatch) so that its first call gets
    one signal (a Ctrl-C's SIGINT by default) as it starts."""
    evaluate, calls = eval_lib.evaluate, []

    def interrupted_evaluation(*args, **kwargs):
        calls.append(None)
        if len(calls) == 1:
            signal.raise_signal(signal_number)
        return evaluate(*args, **kwargs)

    patch.setattr(eval_lib, "evaluate", interrupted_evaluation)


@pytest.mark.usefixtures("ctrl_c")
def test_ctrl_c_during_an_evaluation_cuts_it_short_and_stops_at_that_step(
    tmp_path, data_dir, monkeypatch
):
    config = tiny_config(data_dir)  # 8 steps, evaluated and saved at 4 and 8
    _signal_in_the_first_evaluation(monkeypatch)
    with pytest.raises(preemption.TrainingStopped) as stop:
        trainer.train_and_evaluate(config, str(tmp_path))
    assert stop.value.step == 4  # not one step more
    assert _checkpoint_steps(tmp_path) == ["4"]
    assert _evaluated_steps(tmp_path) == []  # left to the rerun, which evaluates it first


@pytest.mark.parametrize("during", ["the last step", "its evaluation"])
def test_a_sigterm_before_the_last_evaluation_is_through_stops_with_143_and_the_rerun_evaluates(
    tmp_path, data_dir, monkeypatch, capfd, during
):
    config = tiny_config(data_dir, num_epochs=1)  # 4 steps, evaluated and saved at 4
    config.eval.train_subset = 0
    # A preempted job: SIGTERM while the last step trains, or while it is evaluated. The run
    # went on evaluating, though it had said it stopped, and ended with status 0.
    if during == "the last step":
        monkeypatch.setattr(
            train_lib, "make_train_step", _on_step(4, lambda: signal.raise_signal(signal.SIGTERM))
        )
    else:
        _signal_in_the_first_evaluation(monkeypatch, signal.SIGTERM)
    with pytest.raises(preemption.TrainingStopped) as stop:
        trainer.train_and_evaluate(config, str(tmp_path))
    monkeypatch.undo()
    assert (stop.value.step, stop.value.exit_status) == (4, 143)  # train.py's exit status
    assert str(stop.value).startswith("Stopped on SIGTERM after step 4, the last, saved in ")
    assert "SIGTERM received: training stops after the current step" in capfd.readouterr().err
    assert _checkpoint_steps(tmp_path) == ["4"] and _evaluated_steps(tmp_path) == []

    assert trainer.train_and_evaluate(config, str(tmp_path))["step"] == 4
    out = capfd.readouterr().out
    assert "Evaluating step 4, which was saved but not evaluated." in out
    assert "Nothing left to train" in out and _evaluated_steps(tmp_path) == [4]


def test_a_sigterm_after_the_last_step_lets_the_run_finish(tmp_path, data_dir, monkeypatch, capfd):
    config = tiny_config(data_dir)  # 8 steps
    config.eval.train_subset = 0
    # A scheduler's SIGTERM while the run closes its checkpoints, after the last step: the
    # run finishes (exit status 0 in train.py) instead of dying with the final save pending.
    close, received = checkpoints.Checkpoints.close, []

    def close_under_sigterm(self):
        signal.raise_signal(signal.SIGTERM)
        close(self)

    monkeypatch.setattr(checkpoints.Checkpoints, "close", close_under_sigterm)
    previous = signal.signal(signal.SIGTERM, lambda number, frame: received.append(number))
    try:
        results = trainer.train_and_evaluate(config, str(tmp_path))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert received == []  # caught by the trainer, not left to the process's handler
    assert results["step"] == 8 and _checkpoint_steps(tmp_path) == ["4", "8"]
    err = capfd.readouterr().err
    assert "SIGTERM received: the run has finished, and exits once its files are written." in err
    assert "training stops" not in err  # it said so, then finished with status 0


def test_on_finished_is_called_while_the_signals_are_held_and_its_handlers_stay(tmp_path, data_dir):
    # train.py passes cli.ignore_stop_signals: between the trainer letting go of SIGTERM and
    # a call after it returned, a scheduler's SIGTERM would end the finished run with 143.
    config = tiny_config(data_dir)
    config.eval.train_subset = 0
    handlers_seen = []

    def on_finished():
        handlers_seen.append(signal.getsignal(signal.SIGTERM))
        cli.ignore_stop_signals()

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        trainer.train_and_evaluate(config, str(tmp_path), on_finished=on_finished)
        [held] = handlers_seen
        assert isinstance(getattr(held, "__self__", None), preemption.StopSignals)
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        # A finished run rerun (no StopSignals: nothing to save) calls it too.
        for signal_number, handler in previous.items():
            signal.signal(signal_number, handler)
        trainer.train_and_evaluate(config, str(tmp_path), on_finished=on_finished)
        assert len(handlers_seen) == 2 and signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        for signal_number, handler in previous.items():
            signal.signal(signal_number, handler)


def test_a_stop_skips_the_evaluation_of_its_step_and_the_rerun_does_it_first(
    tmp_path, data_dir, monkeypatch, capsys
):
    config = tiny_config(data_dir)  # 8 steps, evaluated and saved at 4 and 8
    # SIGTERM during step 4: a preempted job should not spend its grace period evaluating.
    stop = _stopped_by(signal.SIGTERM, 4, config, tmp_path, monkeypatch)
    assert (stop.step, stop.exit_status) == (4, 143)
    assert _checkpoint_steps(tmp_path) == ["4"]
    assert _evaluated_steps(tmp_path) == []

    # One Ctrl-C during that evaluation, before any step: it stops at once, nothing to save.
    with monkeypatch.context() as patch:
        _signal_in_the_first_evaluation(patch)
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with pytest.raises(KeyboardInterrupt, match="The last checkpoint, step 4"):
                trainer.train_and_evaluate(config, str(tmp_path))
        finally:
            signal.signal(signal.SIGINT, previous)
    assert _checkpoint_steps(tmp_path) == ["4"] and _evaluated_steps(tmp_path) == []

    capsys.readouterr()
    assert trainer.train_and_evaluate(config, str(tmp_path))["step"] == 8
    assert "Evaluating step 4, which was saved but not evaluated." in capsys.readouterr().out
    assert _evaluated_steps(tmp_path) == [4, 8]


def test_curves_are_drawn_at_each_evaluation_and_a_failure_to_draw_only_warns(
    tmp_path, data_dir, monkeypatch
):
    config = tiny_config(data_dir)  # 8 steps, evaluated at 4 and 8, logged every 2
    drawn = []  # the last logged step at each drawing

    def full_disk(workdir, **kwargs):
        drawn.append(max(record["step"] for record in workdir_io.read_metrics(workdir)))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("yolojax.plots.plot_training_curves", full_disk)
    with pytest.warns(UserWarning, match="Could not draw the training curves: .*No space left"):
        stop = _stopped_by(signal.SIGTERM, 6, config, tmp_path, monkeypatch)
    assert (stop.step, stop.exit_status) == (6, 143)  # the stop reaches the caller, not OSError
    assert drawn == [4, 6]  # after the evaluation of step 4, and at the stop


def test_a_crash_during_an_evaluation_loses_no_evaluation(tmp_path, data_dir, monkeypatch):
    config = tiny_config(data_dir)

    def crash(*args, **kwargs):
        raise RuntimeError("the machine went away")

    monkeypatch.setattr(eval_lib, "evaluate", crash)
    with pytest.raises(RuntimeError, match="went away"):
        trainer.train_and_evaluate(config, str(tmp_path))
    assert _checkpoint_steps(tmp_path) == ["4"]  # saved first
    monkeypatch.undo()
    trainer.train_and_evaluate(config, str(tmp_path))
    assert _evaluated_steps(tmp_path) == [4, 8]
    assert (tmp_path / "best").is_dir()


@pytest.mark.usefixtures("ctrl_c")
def test_a_second_ctrl_c_interrupts_at_once_and_says_where_to_resume_from(
    tmp_path, data_dir, monkeypatch
):
    config = tiny_config(data_dir, num_epochs=1, checkpoint_every_steps=2)

    def twice():
        signal.raise_signal(signal.SIGINT)  # asks to stop after this step...
        signal.raise_signal(signal.SIGINT)  # ...but the user insists

    monkeypatch.setattr(train_lib, "make_train_step", _on_step(3, twice))
    with pytest.raises(KeyboardInterrupt) as interrupt:
        trainer.train_and_evaluate(config, str(tmp_path))
    assert str(interrupt.value) == (
        f"Interrupted. The last checkpoint, step 2, is in {tmp_path / 'checkpoints'}: "
        "rerun the same command to resume from it."
    )


def test_a_second_ctrl_c_while_the_stops_checkpoint_is_written_says_where_it_is(
    tmp_path, data_dir, monkeypatch
):
    # It came out as a bare "Interrupted." (and orbax's log of a failed finalize), though
    # the save had finished: the wait for it was outside the handler of the steps' Ctrl-C.
    config = tiny_config(data_dir, num_epochs=1, checkpoint_every_steps=2)
    monkeypatch.setattr(
        train_lib, "make_train_step", _on_step(3, lambda: signal.raise_signal(signal.SIGINT))
    )
    stopping, wait = [], checkpoints.Checkpoints.wait
    stopped = preemption.TrainingStopped.__init__

    def note_the_stop(self, *args, **kwargs):
        stopping.append(True)
        stopped(self, *args, **kwargs)

    def wait_then_ctrl_c(self):
        wait(self)
        if stopping and len(stopping) == 1:  # the wait for the stop's save, once
            stopping.append(True)
            raise KeyboardInterrupt

    monkeypatch.setattr(preemption.TrainingStopped, "__init__", note_the_stop)
    monkeypatch.setattr(checkpoints.Checkpoints, "wait", wait_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt) as interrupt:
        trainer.train_and_evaluate(config, str(tmp_path))
    assert str(interrupt.value) == (
        f"Interrupted. The last checkpoint, step 3, is in {tmp_path / 'checkpoints'}: "
        "rerun the same command to resume from it."
    )


def test_a_ctrl_c_or_sigterm_while_the_data_opens_also_says_where_to_resume_from(
    tmp_path, data_dir, monkeypatch
):
    config = tiny_config(data_dir, checkpoint_every_steps=2)
    config.eval.every_epochs = 0  # at the end only: the first run is not evaluated

    def crash():
        raise RuntimeError("the machine went away")

    monkeypatch.setattr(train_lib, "make_train_step", _on_step(4, crash))
    with pytest.raises(RuntimeError, match="went away"):
        trainer.train_and_evaluate(config, str(tmp_path))
    monkeypatch.undo()

    def ctrl_c(*args, **kwargs):  # the resumed run's data pipeline is being opened
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "make_train_iterator", ctrl_c)
    with pytest.raises(KeyboardInterrupt, match=r"^Interrupted\. The last checkpoint, step 2, is"):
        trainer.train_and_evaluate(config, str(tmp_path))

    def sigterm(*args, **kwargs):  # what train.py's handler raises before the steps
        raise errors.Terminated

    monkeypatch.setattr(pipeline, "make_train_iterator", sigterm)
    with pytest.raises(errors.Terminated, match=r"^Stopped on SIGTERM\. The last checkpoint, step"):
        trainer.train_and_evaluate(config, str(tmp_path))


def test_a_short_run_learns(tmp_path, data_dir):
    config = tiny_config(data_dir, num_epochs=10, checkpoint_every_steps=1000)
    config.eval.every_epochs = 0
    config.eval.train_subset = 0
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
    records = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < 0.5 * losses[0]


def test_mistyped_config_key_is_named():
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", "configs/shapes.py", flag_values=flag_values)
    with pytest.raises(flags.UnrecognizedFlagError, match="bach_size"):
        flag_values(["train.py", "--config.train.bach_size=3"])


def test_a_train_split_smaller_than_a_batch_is_named_and_leaves_no_folders(tmp_path, data_dir):
    config = tiny_config(data_dir, batch_size=64)  # 32 train images
    fewer = r"32 examples, fewer than config\.train\.batch_size=64: lower the batch size to 32 "
    with pytest.raises(ValueError, match=fewer):
        trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert not (tmp_path / "run" / "best").exists()


def test_dataset_class_count_mismatch_is_named(tmp_path, data_dir):
    config = tiny_config(data_dir)
    config.model.num_classes = 20
    with pytest.raises(ValueError, match="num_classes=5"):
        trainer.train_and_evaluate(config, str(tmp_path / "run"))


def test_an_eval_split_without_ground_truth_says_why_there_is_no_map(tmp_path, capsys, monkeypatch):
    # As VOC2012 test: images without objects. Every AP is NaN; "mAP nan" said nothing.
    names = ["cat"] * 7 + ["dog"]
    train = [VocImage(f"a{i}", 64, 64, [VocObject(n, (8, 8, 40, 40))]) for i, n in enumerate(names)]
    test = [VocImage(f"b{i}", 64, 64, []) for i in range(4)]
    monkeypatch.chdir(tmp_path)  # the data's paths given relative to it
    config = tiny.tiny_config("tfds")
    config.data.source, config.model.num_classes = "voc_folder", 0  # the classes found
    write_voc_folder(
        str(tmp_path / "voc"),
        train + test,
        image_sets={"train": [i.image_id for i in train], "test": [i.image_id for i in test]},
    )
    config.data.folder = "voc"
    scans = []
    scan = voc_folder.scan_class_names
    monkeypatch.setattr(voc_folder, "scan_class_names", lambda *a: scans.append(a) or scan(*a))
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
    out = capsys.readouterr().out
    assert "step 1: The test images have no ground truth" in out
    # A folder's advice: VOC 2012's TFDS split names are no help there.
    assert "annotate their objects in their .xml files, or set config.data.eval_split" in out
    assert "voc/2012" not in out
    assert "mAP nan" not in out
    # The classes are read from the .xml files once and kept for the run: the splits and
    # each evaluation opened later do not read them again, and a resume reads them saved.
    assert len(scans) == 1
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["data"]
    assert saved["class_names"] == ["cat", "dog"]
    # Absolute: evaluate.py and a resume from another folder read the same data.
    assert (saved["folder"], saved["tfds_data_dir"]) == (
        str(tmp_path / "voc"),
        str(tmp_path / "tfds"),
    )


def test_one_training_step_on_mocked_voc(tmp_path, monkeypatch):
    """configs/voc.py's data path (TFDS voc/2007 + voc/2012) end to end on TFDS mock data."""
    # mock_data replaces reading, not the "is it prepared?" check that guards real VOC.
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    config = voc.get_config("darknet")
    config.model.backbone = "darknet_tiny"  # the 24-layer Darknet is too slow for CI
    config.model.head = "conv"
    config.model.head_channels = 16
    config.model.head_conv_layers = 1
    config.model.grid_size = 4
    config.data.image_size = 64
    config.train.batch_size = 8
    config.train.num_epochs = 1 / 2  # 16 mocked train examples (8 per VOC year): one step
    config.eval.train_subset = 0
    with tfds.testing.mock_data(num_examples=8, as_data_source_fn=valid_box_data_source(8)):
        results = trainer.train_and_evaluate(config, str(tmp_path))
    assert results["step"] == 1
    assert results["num_images"] == 8  # voc/2007 test, each image once
    assert len(results["AP"]) == 20
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 1 and np.isfinite(records[0]["loss"])


def test_best_is_on_disk_before_the_log_says_its_step_was_evaluated(
    tmp_path, data_dir, monkeypatch
):
    # A resumed run evaluates again only the steps the log lacks: were the log written
    # first, a kill before best/ was saved would lose that checkpoint for good.
    config = tiny_config(data_dir)  # evaluated at steps 4 and 8
    append, best_on_disk = workdir_io.append_metrics, {}

    def append_metrics(workdir, record):
        if "test_mAP" in record:
            folder = tmp_path / "best"
            best_on_disk[record["step"]] = sorted(p.name for p in folder.iterdir())
        append(workdir, record)

    monkeypatch.setattr(workdir_io, "append_metrics", append_metrics)
    trainer.train_and_evaluate(config, str(tmp_path))
    assert best_on_disk[4] == ["4"]  # the first evaluation is always the best so far

    # A run whose best/ was lost (a kill before this order) gets it back on the rerun.
    shutil.rmtree(tmp_path / "best")
    trainer.train_and_evaluate(config, str(tmp_path))
    assert [p.name for p in (tmp_path / "best").iterdir()] == ["8"]


def test_a_bfloat16_run_on_the_cpu_and_a_coarse_map_are_told_of_at_start(tmp_path, data_dir):
    # The run trains all the same, in bfloat16's rounding. Where this jaxlib's XLA:CPU
    # multiplies bfloat16 in float32 (0.10; tests/cpu_backend_test.py), float32 is faster
    # and the run is told so; on 0.12, where bfloat16 trained faster, it is told nothing.
    # An 8×8 grid on darknet_tiny's 4×4 map at 64 px: its cells were stretched silently.
    config = tiny_config(data_dir, num_epochs=1)
    config.model.dtype, config.model.grid_size = "bfloat16", 8
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = trainer.train_and_evaluate(config, str(tmp_path), verbose=False)
    told = [str(w.message) for w in caught if issubclass(w.category, errors.Notice)]
    expected = cpu_backend.bfloat16_notice("bfloat16")
    coarse = (
        "At config.data.image_size=64, darknet_tiny's feature map is 4×4, coarser than the 8×8 "
        "grid: the 'conv' head stretches it, so neighbouring cells read nearly the same "
        "features. An image size of 128 (8 × its stride 16) makes it 8×8."
    )
    assert told == ([expected] if expected else []) + [coarse]
    assert expected is None or expected.startswith("config.model.dtype='bfloat16' on the CPU")
    assert results["step"] == STEPS_PER_EPOCH
    logged = workdir_io.read_metrics(tmp_path)
    assert [r["step"] for r in logged if "loss" in r] == [2, 4]
    assert all(np.isfinite(r["loss"]) for r in logged if "loss" in r)


def test_a_quiet_run_prints_nothing_and_logs_everything(tmp_path, data_dir, capsys, monkeypatch):
    # verbose=False (a sweep in a notebook): no summary, progress bar (on a terminal too),
    # evaluation or outcome; what one is to know either way comes as a warning.
    config = tiny_config(data_dir)  # 8 steps, evaluated at 4 and 8
    pipeline.get_dataset_info(config.data)  # prepared once, which the first run would say
    capsys.readouterr()
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    results = trainer.train_and_evaluate(config, str(tmp_path), verbose=False)
    assert capsys.readouterr().out == "" and terminal.getvalue() == ""
    assert results["step"] == 8
    logged = workdir_io.read_metrics(tmp_path)
    assert [r["step"] for r in logged if "test_mAP" in r] == [4, 8]
    assert [r["step"] for r in logged if "loss" in r] == [2, 4, 6, 8]
    # Resumed with nothing left to train: still silent. Verbose, it says so.
    trainer.train_and_evaluate(config, str(tmp_path), verbose=False)
    assert capsys.readouterr().out == "" and terminal.getvalue() == ""
    trainer.train_and_evaluate(config, str(tmp_path))
    assert "already trained to step 8" in capsys.readouterr().out
    terminal.seek(0)
    terminal.truncate()
    # Started over with another config: the earlier logs set aside and the config's change
    # are warned of.
    shutil.rmtree(tmp_path / "checkpoints")
    config.train.num_epochs = 1
    with pytest.warns(errors.Notice) as notices:
        trainer.train_and_evaluate(config, str(tmp_path), verbose=False)
    told = " ".join(str(notice.message) for notice in notices)
    assert "training starts over. What an earlier run logged there is kept in" in told
    assert (
        "The config differs from the one saved in this workdir: train.num_epochs: 2.0 -> 1.0"
        in told
    )
    # Shown as coming from the caller's line, not the library's (which read as a fault there).
    assert {notice.filename for notice in notices} == {__file__}
    assert capsys.readouterr().out == "" and terminal.getvalue() == ""


def test_best_is_the_checkpoint_of_the_best_eval_split_map(tmp_path, data_dir, monkeypatch):
    # The tiny runs score mAP 0 at every evaluation: scripted mAPs show which one best/ keeps,
    # the eval split's (not the train subset's, which rises instead).
    evaluate, scripted = eval_lib.evaluate, {"test": [0.6, 0.3], "train subset": [0.1, 0.9]}

    def scripted_evaluate(*args, **kwargs):
        results = evaluate(*args, **kwargs)
        # The train subset's 8 images, or the test split's 12.
        results["mAP"] = scripted["train subset" if kwargs["total"] == 8 else "test"].pop(0)
        return results

    monkeypatch.setattr(eval_lib, "evaluate", scripted_evaluate)
    config = tiny_config(data_dir)  # evaluated at steps 4 and 8
    trainer.train_and_evaluate(config, str(tmp_path))
    assert scripted == {"test": [], "train subset": []}
    assert [p.name for p in (tmp_path / "best").iterdir()] == ["4"]
    logged = [r for r in workdir_io.read_metrics(tmp_path) if "test_mAP" in r]
    assert [(r["step"], r["test_mAP"], r["train_mAP"]) for r in logged] == [
        (4, 0.6, 0.1),
        (8, 0.3, 0.9),
    ]
    (best, best_step), (at_4, _) = _params(tmp_path, config, "best"), _params(tmp_path, config, 4)
    assert best_step == 4
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, best, at_4)))
    assert not all(
        jax.tree.leaves(jax.tree.map(np.array_equal, best, _params(tmp_path, config)[0]))
    )


def test_a_runs_evaluations_read_the_same_batches_from_splits_opened_once(
    tmp_path, data_dir, monkeypatch
):
    # Each evaluation opened its splits anew: each time TFDS and TensorFlow kept a little
    # more memory, with no end over a long run.
    opened, read = [], {"test": [], "train subset": []}
    open_split, evaluate = sources.open_split, eval_lib.evaluate

    def counted_open_split(*args, **kwargs):
        opened.append(args[1])
        return open_split(*args, **kwargs)

    def recorded_evaluate(evaluate_batch, state, batches, *args, **kwargs):
        batches = list(batches)
        # The train subset's 8 images, or the test split's 12.
        read["train subset" if kwargs["total"] == 8 else "test"].append((len(opened), batches))
        return evaluate(evaluate_batch, state, batches, *args, **kwargs)

    monkeypatch.setattr(sources, "open_split", counted_open_split)
    monkeypatch.setattr(eval_lib, "evaluate", recorded_evaluate)
    trainer.train_and_evaluate(tiny_config(data_dir), str(tmp_path))  # evaluated at 4 and 8
    for (opened_before, first), (opened_after, second) in read.values():
        assert opened_after == opened_before  # no split opened again
        assert len(first) == len(second) > 0
        for batch, same in zip(first, second, strict=True):
            assert all(np.array_equal(batch[key], same[key]) for key in batch)


def test_starting_over_keeps_the_earlier_runs_best_and_log_aside(tmp_path, data_dir, capsys):
    config = tiny_config(data_dir)
    trainer.train_and_evaluate(config, str(tmp_path))
    earlier_best = [p.name for p in (tmp_path / "best").iterdir()]
    earlier_log = (tmp_path / "metrics.jsonl").read_text()
    earlier_events = sorted(p.name for p in (tmp_path / "tensorboard").iterdir())
    # "Move the folder aside to start over" (every checkpoint damaged): a new, shorter run.
    shutil.rmtree(tmp_path / "checkpoints")
    (tmp_path / "eval").mkdir()  # what evaluate.py wrote of the earlier run
    (tmp_path / "eval" / "metrics.json").write_text('{"step": 8}')
    config.train.num_epochs = 1
    trainer.train_and_evaluate(config, str(tmp_path))
    assert not (tmp_path / "eval").exists()
    assert (tmp_path / "superseded" / "eval" / "metrics.json").read_text() == '{"step": 8}'

    assert [p.name for p in (tmp_path / "best").iterdir()] == ["4"]  # the new run's own
    superseded = tmp_path / "superseded"
    assert (superseded / f"best-{earlier_best[0]}").is_dir()
    assert (superseded / "metrics.jsonl").read_text() == earlier_log
    # TensorBoard would draw both runs' events as one run.
    assert sorted(p.name for p in (superseded / "tensorboard").iterdir()) == earlier_events
    assert _evaluated_steps(tmp_path) == [4]
    out = capsys.readouterr().out
    assert (
        f"training starts over. What an earlier run logged there is kept in {superseded}: " in out
    )
    assert "config.before_step_0.json" in out  # num_epochs changed: the earlier config kept


def test_a_workdir_that_cannot_be_written_at_start_is_named_with_what_to_do(
    tmp_path, data_dir, monkeypatch
):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(workdir_io, "save_config", full_disk)
    with pytest.raises(errors.MachineError) as error:
        trainer.train_and_evaluate(tiny.tiny_config(data_dir), str(tmp_path / "run"))
    assert str(error.value) == (
        f"Cannot write the run's files in {tmp_path / 'run'} (OSError: No space left on "
        "device): free space, or choose another --workdir. The same command then starts "
        "the run."
    )
    # A folder one may not write: freeing space would not help. The file is named.
    denied = PermissionError(13, "Permission denied", "x/metrics.jsonl")
    assert str(errors.machine_error("write x", denied, "--out")) == (
        "Cannot write x (PermissionError: Permission denied: x/metrics.jsonl): choose another "
        "--out, one you can write."
    )
    # A run that has trained some steps: another --workdir would start over, so the advice
    # is this folder made writable, or a copy of it (it said "choose another --workdir",
    # then that the same command resumes).
    with (
        pytest.raises(errors.MachineError) as error,
        run_log.workdir_write_errors(tmp_path / "run", start_step=36),
    ):
        raise denied
    assert str(error.value) == (
        f"Cannot write the run's files in {tmp_path / 'run'} (PermissionError: Permission "
        f"denied: x/metrics.jsonl): make {tmp_path / 'run'} writable, or copy it to a folder "
        "you can write and pass that as --workdir. Then rerun: it resumes from step 36."
    )


def test_a_disk_that_fills_during_training_is_one_message_and_the_rerun_resumes(
    tmp_path, data_dir, monkeypatch
):
    # TensorFlow's ResourceExhaustedError from the TensorBoard log came out as 30 lines of
    # traceback, not the one paragraph of every other full disk.
    import tensorflow as tf

    config = tiny_config(data_dir)  # 8 steps, logged every 2, saved at 4 and 8
    scalar = tf.summary.scalar

    def full_disk_from_step_6(name, value, step):
        if step >= 6:
            raise tf.errors.ResourceExhaustedError(None, None, "events: No space left on device")
        return scalar(name, value, step=step)

    monkeypatch.setattr(tf.summary, "scalar", full_disk_from_step_6)
    with pytest.raises(errors.MachineError) as error:
        trainer.train_and_evaluate(config, str(tmp_path))
    # Free space: another --workdir would not resume (the checkpoints are in this one).
    assert str(error.value) == (
        f"Cannot log step 6 in {tmp_path} (OSError: events: No space left on device): free "
        "space. Then rerun: it resumes from the last checkpoint."
    )
    monkeypatch.undo()
    trainer.train_and_evaluate(config, str(tmp_path))
    assert [step for step, _ in _logged(tmp_path, "loss")] == [2, 4, 6, 8]  # each once


def test_training_into_a_folder_of_someone_elses_files_writes_over_none_of_them(tmp_path, data_dir):
    folder = tmp_path / "my_project"
    folder.mkdir()
    (folder / "loss.png").write_bytes(b"my own plot")
    (folder / "config.json").write_text('{"lr": 0.1}')  # another tool's config
    with pytest.raises(workdir_io.NotAFolderError) as error:
        trainer.train_and_evaluate(tiny_config(data_dir), str(folder))
    assert str(error.value) == (
        f"The workdir {folder} holds config.json, loss.png, which a training run writes "
        "over, but it is not a yolojax run's folder (it has neither a run's checkpoints/ nor a "
        "run's config.json). Pass a new or empty folder as --workdir, or move those files "
        "elsewhere first."
    )
    assert sorted(path.name for path in folder.iterdir()) == ["config.json", "loss.png"]
    assert (folder / "loss.png").read_bytes() == b"my own plot"
    # Another project's checkpoints/ does not make it a run's folder.
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "model_epoch3.pt").write_bytes(b"weights")
    with pytest.raises(workdir_io.NotAFolderError, match=r"holds config\.json, loss\.png"):
        workdir_io.check_workdir(folder, writable=True)
    # A run's folder is one (its checkpoints/ holds steps, or nothing yet): its config.json,
    # even edited into something else, and its curves are its own.
    shutil.rmtree(folder / "checkpoints")
    (folder / "checkpoints" / "8").mkdir(parents=True)
    workdir_io.check_workdir(folder, writable=True)
    # Other files are no obstacle: a run writes none of them over.
    shutil.rmtree(folder / "checkpoints")
    (folder / "config.json").unlink()
    (folder / "loss.png").unlink()
    (folder / "notes.txt").write_text("mine")
    workdir_io.check_workdir(folder, writable=True)


def test_a_model_of_another_class_count_than_the_dataset_is_named_before_training(
    tmp_path, data_dir
):
    config = tiny_config(data_dir)
    config.model.num_classes = 7
    with pytest.raises(ValueError) as error:
        trainer.train_and_evaluate(config, str(tmp_path / "run"))
    names = tuple(synthetic_shapes.CLASS_NAMES)  # the shapes dataset's five
    assert str(error.value) == (
        f"config.model.num_classes=7 but the dataset has 5 classes {names}: set "
        "config.model.num_classes=5 (--config.model.num_classes=5 on the command line), or 0 "
        "to follow the dataset."
    )
    assert not (tmp_path / "run").exists()


def test_a_damaged_latest_checkpoint_resumes_from_the_one_before_and_says_which(
    tmp_path, data_dir, capsys
):
    config = tiny_config(data_dir)  # 8 steps, checkpoints at 4 and 8
    trainer.train_and_evaluate(config, str(tmp_path))
    for path in (tmp_path / "checkpoints" / "8" / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":  # the arrays' data, cut short
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    config.train.num_epochs = 3  # 12 steps: there is training left to resume
    capsys.readouterr()
    with pytest.warns(UserWarning, match=rf"Skipping damaged checkpoint {tmp_path}/checkpoints/8"):
        results = trainer.train_and_evaluate(config, str(tmp_path))
    assert "Resuming from the checkpoint of step 4 in" in capsys.readouterr().out
    assert results["step"] == 12
    # What the first run logged after step 4 is replaced by the steps trained again: each once.
    assert [step for step, _ in _logged(tmp_path, "loss")] == [2, 4, 6, 8, 10, 12]


def _flat_arrays(variables) -> dict:
    from flax import traverse_util

    return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(variables).items()}


def _first_train_loss(workdir) -> float:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return next(record["loss"] for record in map(json.loads, lines) if "loss" in record)


def test_a_run_starts_from_another_runs_weights_with_fresh_outputs_for_other_classes(
    tmp_path, data_dir
):
    first = tmp_path / "first"
    trainer.train_and_evaluate(tiny.tiny_config(data_dir), str(first), verbose=False)
    trained = _flat_arrays(
        train_lib.model_variables(
            train_lib.restore_trained_state(tiny.tiny_config(data_dir), first, "best")[1]
        )
    )

    # Fine-tuning for 3 classes instead of the dataset's 5: the class outputs start fresh.
    config = tiny.tiny_config(data_dir)
    config.model.update(num_classes=3, pretrained=str(first))
    model = train_lib.build_model(config, axis_name=None)
    from_scratch = config.copy_and_resolve_references()
    from_scratch.model.pretrained = ""
    fresh = _flat_arrays(train_lib.initial_variables(model, from_scratch, jax.random.key(0)))
    with pytest.warns(errors.Notice) as notices:
        started = _flat_arrays(train_lib.initial_variables(model, config, jax.random.key(0)))
    assert str(notices[0].message) == (
        f"Starting from the weights of the run in {first} (its best checkpoint, step 4); 2 of "
        f"{len(started)} arrays start fresh, the run's having another shape or layout, or "
        "none: head/out/bias, head/out/kernel."
    )
    assert set(started) == set(fresh)
    for name, value in started.items():
        if "head/out" in name:
            assert value.shape != trained[name].shape
            np.testing.assert_array_equal(value, fresh[name])
        else:
            np.testing.assert_array_equal(value, trained[name], err_msg=name)
            assert not np.array_equal(value, fresh[name]) or not value.any(), name

    # The same classes, trained through train.py's job: it starts where the first run ended.
    config = tiny.tiny_config(data_dir)
    config.model.pretrained = str(first)
    second = tmp_path / "second"
    with pytest.warns(errors.Notice, match=r"^Starting from the weights of the run in .*\)\.$"):
        trainer.train_and_evaluate(config, str(second), verbose=False)
    assert _first_train_loss(second) < 0.8 * _first_train_loss(first)

    # Resumed with other weights named: they are not read, and the run says it keeps its own.
    config.model.pretrained = ""
    config.train.num_epochs = 2
    with pytest.warns(errors.Notice) as notices:
        trainer.train_and_evaluate(config, str(second), verbose=False)
    said = [str(notice.message) for notice in notices]
    assert said[0] == (
        f"config.model.pretrained='' is left as it was, '{first}': the weights a run starts "
        "from are read when it starts, and this one resumes from its checkpoint. To start "
        "from other weights, use another --workdir."
    )
    assert said[1].startswith(
        "The config differs from the one saved in this workdir: "
        "train.num_epochs: 1.0 -> 2.0. Training goes on"
    )  # alone
    assert json.loads((second / "config.json").read_text())["model"]["pretrained"] == str(first)

    # A run saved before config.json's paths were absolute: its relative path, relative to a
    # folder unknown, is reported as any changed field is, not taken back.
    saved = json.loads((second / "config.json").read_text())
    saved["model"]["pretrained"] = "first"
    (second / "config.json").write_text(json.dumps(saved))
    config.model.pretrained = str(first)
    config.train.num_epochs = 3
    with pytest.warns(errors.Notice) as notices:
        trainer.train_and_evaluate(config, str(second), verbose=False)
    assert not [n for n in notices if "is left as it was" in str(n.message)]
    assert f"model.pretrained: first -> {first}; " in str(notices[0].message)


def test_a_folder_that_is_no_fitting_run_is_refused_before_the_data_is_prepared(tmp_path, data_dir):
    unprepared = tmp_path / "tfds"  # stays absent: each error comes first
    config = tiny.tiny_config(str(unprepared))
    run = tmp_path / "run"
    config.model.pretrained = str(run)  # not there yet: mistyped, or not trained yet
    expected = rf"^pretrained weights '{run}' not found \(nor a trained run's folder, to fine-"
    with pytest.raises(FileNotFoundError, match=expected):
        trainer.train_and_evaluate(config, str(tmp_path / "new"), verbose=False)

    run.mkdir()
    expected = rf"^config\.model\.pretrained='{run}' is a folder, but not a training run's"
    with pytest.raises(FileNotFoundError, match=expected):
        trainer.train_and_evaluate(config, str(tmp_path / "new"), verbose=False)

    saved = tiny.tiny_config(str(unprepared))
    saved.model.backbone = "resnet18"
    (run / "config.json").write_text(saved.to_json())
    expected = rf"^config\.model\.pretrained='{run}': that run has saved no checkpoint yet"
    with pytest.raises(FileNotFoundError, match=expected):
        trainer.train_and_evaluate(config, str(tmp_path / "new"), verbose=False)

    (run / "checkpoints" / "4").mkdir(parents=True)
    expected = (
        rf"^config\.model\.pretrained='{run}' is a run of config\.model\.backbone="
        r"'resnet18', this one's is 'darknet_tiny': .* Set --config\.model\.backbone='resnet18'"
    )
    with pytest.raises(ValueError, match=expected):
        trainer.train_and_evaluate(config, str(tmp_path / "new"), verbose=False)
    assert not unprepared.exists()


def _saved_run(run, config, *, best: bool, latest: bool, state=None):
    """A run's folder holding ``config`` and a checkpoint of ``state`` (default: its fresh
    state) at step 4: under best/, checkpoints/ or both, as a run that kept those."""
    run.mkdir()
    (run / "config.json").write_text(config.to_json())
    if state is None:
        _, state, _ = train_lib.initial_state(config, config.train.batch_size, axis_name=None)
    manager = checkpoints.Checkpoints(run, checkpoints.model_signature(config))
    if latest:
        manager.save(4, state)
    if best:
        manager.save_if_best(4, state, {"mAP": 0.5})
    manager.wait()
    manager.close()
    return train_lib.model_variables(state)


def _started_from(config):
    model = train_lib.build_model(config, axis_name=None)
    with pytest.warns(errors.Notice) as notices:
        variables = train_lib.initial_variables(model, config, jax.random.key(1))
    return variables, [str(notice.message) for notice in notices]


def test_a_run_that_kept_only_its_best_checkpoint_is_one_to_start_from(tmp_path):
    config = tiny.tiny_config(str(tmp_path / "tfds"))  # no data: none is read
    run = tmp_path / "run"
    saved = _saved_run(run, config, best=True, latest=False)  # checkpoints/ deleted
    config.model.pretrained = str(run)
    pretrained.check_start(config)
    variables, notices = _started_from(config)
    assert notices == [
        f"Starting from the weights of the run in {run} (its best checkpoint, step 4)."
    ]
    assert _flat_arrays(variables).keys() == _flat_arrays(saved).keys()
    for name, value in _flat_arrays(variables).items():
        np.testing.assert_array_equal(value, _flat_arrays(saved)[name], err_msg=name)


def test_the_runs_arrays_a_smaller_model_has_no_place_for_are_named(tmp_path):
    source = tiny.tiny_config(str(tmp_path / "tfds"))
    source.model.head_conv_layers = 2
    run = tmp_path / "run"
    _saved_run(run, source, best=True, latest=True)
    config = tiny.tiny_config(str(tmp_path / "tfds"))  # one head layer fewer
    config.model.pretrained = str(run)
    _, notices = _started_from(config)
    assert notices == [
        f"Starting from the weights of the run in {run} (its best checkpoint, step 4); 5 of "
        "the run's 42 arrays are left out, this model having none of their name: "
        "head/conv_1/norm/mean, head/conv_1/norm/var, head/conv_1/conv/kernel, "
        "head/conv_1/norm/bias, head/conv_1/norm/scale."
    ]


def _run_of_classes(run, config, class_names) -> dict:
    """A run's folder for ``class_names`` whose output layer holds 0, 1, 2, ... (no channel
    equal to another, or to a fresh one); returns its arrays."""
    from flax import traverse_util

    _, state, _ = train_lib.initial_state(config, config.train.batch_size, axis_name=None)
    params = traverse_util.flatten_dict(state.params)
    for key, value in params.items():
        if key[:-1] == models.yolo.output_layer(config.model.head):
            params[key] = np.arange(value.size, dtype=value.dtype).reshape(value.shape)
    state = state.replace(params=traverse_util.unflatten_dict(params))
    saved = _saved_run(run, config, best=False, latest=True, state=state)
    (run / "classes.json").write_text(json.dumps(list(class_names)))
    return _flat_arrays(saved)


@pytest.mark.parametrize("head", ["conv", "seed"])  # one cell's channels; S·S cells' in a row
def test_a_run_of_other_classes_passes_on_its_outputs_by_class_name(tmp_path, head):
    source = tiny.tiny_config(str(tmp_path / "tfds"))
    source.model.head = head
    run_classes = synthetic_shapes.CLASS_NAMES  # ellipse, rectangle, triangle, star, cross
    saved = _run_of_classes(tmp_path / "run", source, run_classes)
    config = source.copy_and_resolve_references()
    config.model.update(num_classes=3, pretrained=str(tmp_path / "run"))
    model = train_lib.build_model(config, axis_name=None)
    with pytest.warns(errors.Notice) as notices:
        variables = train_lib.initial_variables(
            model, config, jax.random.key(1), class_names=("star", "helmet", "ellipse")
        )
    started = _flat_arrays(variables)
    config.model.pretrained = ""
    fresh = _flat_arrays(train_lib.initial_variables(model, config, jax.random.key(1)))
    assert [str(notice.message) for notice in notices] == [
        f"Starting from the weights of the run in {tmp_path / 'run'} (its latest checkpoint, "
        "step 4); the output layer is taken by class name: the run's box outputs and its class "
        "outputs for star, ellipse (2 of 3 classes); fresh class outputs for helmet; the run's "
        "classes not taken: rectangle, triangle, cross."
    ]
    out = "params/" + "/".join(models.yolo.output_layer(head))
    cells = 16 if head == "seed" else 1  # the 4×4 grid, flattened row-major per cell
    for name in (f"{out}/kernel", f"{out}/bias"):
        ours = started[name].reshape(*started[name].shape[:-1], cells, 3 + 10)
        theirs = saved[name].reshape(*saved[name].shape[:-1], cells, 5 + 10)
        np.testing.assert_array_equal(ours[..., 0], theirs[..., 3])  # star
        np.testing.assert_array_equal(ours[..., 2], theirs[..., 0])  # ellipse
        np.testing.assert_array_equal(ours[..., 3:], theirs[..., 5:])  # the two boxes' outputs
        np.testing.assert_array_equal(ours[..., 1], fresh[name].reshape(ours.shape)[..., 1])
    for name, value in started.items():  # the rest of the model is the run's
        if not name.startswith(out + "/"):
            np.testing.assert_array_equal(value, saved[name], err_msg=name)

    # The same classes in another order: all are the run's, none fresh.
    config.model.update(num_classes=5, pretrained=str(tmp_path / "run"))
    model = train_lib.build_model(config, axis_name=None)
    reordered = run_classes[::-1]
    with pytest.warns(errors.Notice, match=r"for cross, .*, ellipse \(5 of 5 classes\)\.$"):
        variables = train_lib.initial_variables(
            model, config, jax.random.key(1), class_names=reordered
        )
    ours = _flat_arrays(variables)[f"{out}/bias"].reshape(cells, 15)
    theirs = saved[f"{out}/bias"].reshape(cells, 15)
    np.testing.assert_array_equal(ours[:, :5], theirs[:, 4::-1])


def test_class_names_match_a_runs_whatever_their_case_spaces_underscores_and_hyphens(tmp_path):
    # A folder of "Person" and "potted_plant" fine-tuned from a VOC run ("person",
    # "pottedplant") started both fresh. A run class is taken once: the same name first.
    source = tiny.tiny_config(str(tmp_path / "tfds"))
    run_classes = ("ellipse", "rectangle", "triangle", "star", "cross")
    saved = _run_of_classes(tmp_path / "run", source, run_classes)
    config = source.copy_and_resolve_references()
    config.model.update(num_classes=5, pretrained=str(tmp_path / "run"))
    model = train_lib.build_model(config, axis_name=None)
    ours = ("Cross", "STAR", "rect_angle", "cross", "Tri-angle")
    with pytest.warns(errors.Notice) as notices:
        variables = train_lib.initial_variables(model, config, jax.random.key(1), class_names=ours)
    assert str(notices[0].message).endswith(
        "; the output layer is taken by class name: the run's box outputs and its class "
        "outputs for STAR (the run's star), rect_angle (the run's rectangle), cross, Tri-angle "
        "(the run's triangle) (4 of 5 classes); fresh class outputs for Cross; the run's "
        "classes not taken: ellipse."
    )
    ours_bias = _flat_arrays(variables)["params/head/out/bias"]
    theirs_bias = saved["params/head/out/bias"]
    np.testing.assert_array_equal(ours_bias[1:5], theirs_bias[[3, 1, 4, 2]])
    np.testing.assert_array_equal(ours_bias[5:], theirs_bias[5:])  # the boxes' outputs
    assert ours_bias[0] == 0  # fresh (a zero bias), not one of the run's 0, 1, 2, ...

    # Two of ours that differ only in case, neither the run's own name: neither is taken.
    with pytest.warns(errors.Notice, match="fresh class outputs for Star, STAR; "):
        train_lib.initial_variables(
            model,
            config,
            jax.random.key(1),
            class_names=("Star", "STAR", "ellipse", "rectangle", "triangle"),
        )
    # No name in common: said so, not as class outputs "for none (0 of 5 classes)".
    with pytest.warns(errors.Notice) as notices:
        train_lib.initial_variables(
            model, config, jax.random.key(1), class_names=("a", "b", "c", "d", "e")
        )
    assert (
        "; the output layer is taken by class name: the run's box outputs but none of its "
        "class outputs: no class name in common; fresh class outputs for a, b, c, d, e; the "
        "run's classes not taken: ellipse, rectangle, triangle, star, cross."
    ) in str(notices[0].message)


def test_a_run_whose_outputs_mean_other_things_is_never_taken_by_position(tmp_path):
    # 5 classes and 3 boxes a cell, 20 channels; 10 classes and 2 boxes: 20 channels too.
    # The same shape, but the run's first box would have become this model's classes 5-9.
    source = tiny.tiny_config(str(tmp_path / "tfds"))
    source.model.num_boxes = 3
    run = tmp_path / "run"
    saved = _run_of_classes(run, source, synthetic_shapes.CLASS_NAMES)
    config = tiny.tiny_config(str(tmp_path / "tfds"))
    config.model.update(num_classes=10, pretrained=str(run))
    model = train_lib.build_model(config, axis_name=None)
    tens = (*synthetic_shapes.CLASS_NAMES, "a", "b", "c", "d", "e")
    for class_names in (None, tens[::-1]):  # without the names; by name, other boxes
        with pytest.warns(errors.Notice) as notices:
            variables = train_lib.initial_variables(
                model, config, jax.random.key(1), class_names=class_names
            )
        assert str(notices[0].message).endswith(
            "; 2 of 37 arrays start fresh, the run's having another shape or layout, or none: "
            "head/out/bias, head/out/kernel."
        )
        bias = _flat_arrays(variables)["params/head/out/bias"]
        assert bias.shape == saved["params/head/out/bias"].shape and not bias.any()  # fresh

    # Without its classes.json, a run of as many classes and boxes passes them on by
    # position, and says so; a classes.json of another count is refused before any data.
    run = tmp_path / "run_of_two_boxes"
    _run_of_classes(run, tiny.tiny_config(str(tmp_path / "tfds")), synthetic_shapes.CLASS_NAMES)
    (run / "classes.json").unlink()
    config.model.update(num_classes=5, pretrained=str(run))
    model = train_lib.build_model(config, axis_name=None)
    with pytest.warns(errors.Notice, match="; the run has no classes.json: its class outputs "):
        train_lib.initial_variables(model, config, jax.random.key(1), class_names=tens[:5])
    (run / "classes.json").write_text(json.dumps(["cat", "dog"]))
    with pytest.raises(ValueError) as error:
        pretrained.check_start(config)
    assert str(error.value) == (
        f"config.model.pretrained='{run}': its classes.json is not the list of the run's 5 "
        "class names, which match its class outputs to this run's by name: restore it, or "
        "delete it to take them by position."
    )


def test_fine_tuning_on_a_folder_of_other_classes_keeps_the_ones_the_run_knew(tmp_path):
    run = tmp_path / "run"
    _run_of_classes(run, tiny.tiny_config(str(tmp_path / "tfds")), synthetic_shapes.CLASS_NAMES)
    images = [
        VocImage(f"a{i}", 64, 64, [VocObject(name, (8, 8, 40, 40))])
        for i, name in enumerate(["star", "helmet"] * 4)
    ]
    write_voc_folder(
        str(tmp_path / "voc"),
        images,
        image_sets={"train": [image.image_id for image in images], "test": ["a0", "a1"]},
    )
    config = tiny.tiny_config(str(tmp_path / "tfds"))
    config.data.source, config.data.folder = "voc_folder", str(tmp_path / "voc")
    config.model.update(num_classes=0, pretrained=str(run))  # the folder's: helmet, star
    with pytest.warns(errors.Notice) as notices:
        trainer.train_and_evaluate(config, str(tmp_path / "tuned"), verbose=False)
    assert [
        str(notice.message) for notice in notices if "Starting from" in str(notice.message)
    ] == [
        f"Starting from the weights of the run in {run} (its latest checkpoint, step 4); the "
        "output layer is taken by class name: the run's box outputs and its class outputs for "
        "star (1 of 2 classes); fresh class outputs for helmet; the run's classes not taken: "
        "ellipse, rectangle, triangle, cross."
    ]


@pytest.mark.parametrize("inside", ["checkpoints", "best", "best/4"])
def test_a_folder_inside_a_run_is_refused_naming_the_run(tmp_path, inside):
    config = tiny.tiny_config(str(tmp_path / "tfds"))
    run = tmp_path / "run"
    _saved_run(run, config, best=True, latest=True)
    config.model.pretrained = str(run / inside)
    with pytest.raises(FileNotFoundError) as error:
        pretrained.check_start(config)
    assert str(error.value) == (
        f"config.model.pretrained='{run / inside}' is a folder inside the training run {run}: "
        f"give the run's own folder, --config.model.pretrained={run} (a run starts from its "
        "best checkpoint, else its latest)."
    )


def test_a_run_whose_every_checkpoint_is_damaged_is_named_as_the_pretrained_one(tmp_path):
    config = tiny.tiny_config(str(tmp_path / "tfds"))
    run = tmp_path / "run"
    _saved_run(run, config, best=True, latest=True)
    for path in run.rglob("*"):
        if path.is_file() and path.parent.name == "d":  # the arrays' data, cut short
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    config.model.pretrained = str(run)
    model = train_lib.build_model(config, axis_name=None)
    with (
        pytest.warns(errors.Notice, match="Skipping damaged checkpoint"),
        pytest.raises(checkpoints.NoCheckpointError) as error,
    ):
        train_lib.initial_variables(model, config, jax.random.key(1))
    assert str(error.value) == (
        f"config.model.pretrained='{run}': no checkpoint of that run can be read, neither in "
        "best/ nor in checkpoints/ (the warnings above name the damaged ones): restore them "
        "from a backup, or start from another run."
    )
