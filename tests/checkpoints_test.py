"""Checkpoint save/restore, damaged-checkpoint fallback, model mismatch, workdir files."""

import json
import os
import re
import shutil
import warnings

import jax
import numpy as np
import optax
import pytest
from jax.experimental import multihost_utils

from configs import shapes
from tests.tiny import tensorboard_scalars
from yolojax import atomic_files, checkpoints, errors, orbax_managers, workdir

SIGNATURE = {
    "backbone": "darknet_tiny",
    "head": "conv",
    "num_classes": 5,
    "grid_size": 7,
    "num_boxes": 2,
    "image_size": 112,
}


def _state(value: float):
    return {"params": {"w": np.full((3, 2), value, np.float32)}, "step": np.int32(value)}


def _save_steps(path, steps, signature=SIGNATURE):
    manager = checkpoints.Checkpoints(path, signature, keep=5)
    for step in steps:
        manager.save(step, _state(step))
    manager.wait()
    manager.close()


def test_restore_latest_and_a_given_step(tmp_path):
    _save_steps(tmp_path, [1, 2, 3])
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE)
    state, step = manager.restore(_state(0))
    assert step == 3
    np.testing.assert_array_equal(state["params"]["w"], 3.0)
    state, step = manager.restore(_state(0), which=2)
    np.testing.assert_array_equal(state["params"]["w"], 2.0)
    with pytest.raises(checkpoints.NoCheckpointError, match="available steps"):
        manager.restore(_state(0), which=7)
    manager.close()


def test_saving_reports_no_step_to_jax_preemption_service(tmp_path, monkeypatch):
    # Only the training loop may report steps: orbax reported each saved step again from its
    # finalize thread, after training had moved on, and a notice then could agree on a step
    # already passed, so that a multi-process job never stopped.
    reported = []
    monkeypatch.setattr(
        multihost_utils, "reached_preemption_sync_point", lambda step: reported.append(step)
    )
    _save_steps(tmp_path, [1, 2])
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE)
    manager.save_if_best(3, _state(3), {"mAP": 0.5})
    manager.wait()
    manager.close()
    assert reported == []


def test_keeps_only_the_last_k(tmp_path):
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE, keep=2)
    for step in (1, 2, 3):
        manager.save(step, _state(step))
    manager.wait()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "3"]
    manager.close()


def test_best_keeps_the_highest_map_and_of_equal_ones_the_later(tmp_path):
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE)
    # A tie (step 5) keeps the later, more trained of the two; a lower mAP (6) does not.
    for step, value in ((1, 0.3), (2, 0.5), (3, 0.4), (4, float("nan")), (5, 0.5), (6, 0.49)):
        manager.save_if_best(step, _state(step), {"mAP": value})
    manager.wait()
    state, step = manager.restore(_state(0), which="best")
    assert step == 5
    np.testing.assert_array_equal(state["params"]["w"], 5.0)
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["5"]
    # Step 5 evaluated again (a resumed run's catch-up evaluation): nothing is saved anew.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Moved the existing checkpoint ..." were it saved
        manager.save_if_best(5, _state(7), {"mAP": 0.5})
    manager.wait()
    np.testing.assert_array_equal(manager.restore(_state(0), which="best")[0]["params"]["w"], 5.0)
    assert not (tmp_path / "superseded").exists()
    # An equal mAP at an earlier step (a run resumed from an older checkpoint) is no better.
    manager.save_if_best(3, _state(3), {"mAP": 0.5})
    manager.wait()
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["5"]
    manager.close()


def test_without_an_map_best_keeps_the_first_evaluated(tmp_path):
    # No ground truth: every mAP NaN. The first stays, not each evaluation saved anew.
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE)
    for step in (2, 4, 6):
        manager.save_if_best(step, _state(step), {"mAP": float("nan")})
    manager.wait()
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == ["2"]
    manager.close()


def _damage(workdir, step):
    """Truncates every data file of a checkpoint's state to 0 bytes."""
    for path in (workdir / "checkpoints" / str(step) / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(b"")


def test_damaged_latest_falls_back_to_the_previous_with_a_warning(tmp_path):
    _save_steps(tmp_path, [1, 2])
    _damage(tmp_path, 2)
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE)
    with pytest.warns(UserWarning, match=r"Skipping damaged checkpoint .*2"):
        state, step = manager.restore(_state(0))
    assert step == 1
    np.testing.assert_array_equal(state["params"]["w"], 1.0)
    manager.close()


def test_a_checkpoint_whose_bytes_changed_on_disk_is_skipped_not_restored(tmp_path):
    # Zeroed bytes inside compressed array data decode without error into other values (a bad
    # disk, a bad copy): without the checksums they were restored and trained on.
    saved = {
        s: np.random.default_rng(s).standard_normal((256, 256)).astype(np.float32) for s in (1, 2)
    }
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE, keep=5)
    for step in (1, 2):
        manager.save(step, {"params": {"w": saved[step]}, "step": np.int32(step)})
    manager.wait()
    manager.close()
    data = max(
        (tmp_path / "checkpoints" / "2" / "state").rglob("*"), key=lambda p: p.stat().st_size
    )
    damaged = bytearray(data.read_bytes())
    damaged[len(damaged) // 2 : len(damaged) // 2 + 8] = bytes(8)
    data.write_bytes(bytes(damaged))

    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE)
    template = {"params": {"w": np.zeros((256, 256), np.float32)}, "step": np.int32(0)}
    with pytest.warns(
        UserWarning,
        match=r"Skipping damaged checkpoint .*2: .*other than they were saved \(params/w\)",
    ):
        state, step = manager.restore(template)
    manager.close()
    assert step == 1
    np.testing.assert_array_equal(state["params"]["w"], saved[1])


def test_every_checkpoint_damaged_is_a_clear_error(tmp_path):
    _save_steps(tmp_path, [1])
    shutil.rmtree(tmp_path / "checkpoints" / "1" / "state")
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE)
    with (
        pytest.warns(UserWarning),
        pytest.raises(checkpoints.NoCheckpointError, match="damaged") as error,
    ):
        manager.restore(_state(0))
    assert "best" not in str(error.value)  # there is none to point to
    # With a best checkpoint saved, the error points to it.
    manager.save_if_best(1, _state(1), {"mAP": 0.5})
    manager.wait()
    with pytest.warns(UserWarning) as warned, pytest.raises(checkpoints.NoCheckpointError) as error:
        manager.restore(_state(0))
    assert "--checkpoint best (evaluate.py, predict) or checkpoint='best'" in str(error.value)
    assert all(len(str(warning.message)) < 400 for warning in warned)  # a line, not a page
    manager.close()


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path):
    _save_steps(tmp_path, [1])
    other = {**SIGNATURE, "backbone": "resnet18", "num_classes": 20}
    manager = checkpoints.Checkpoints(tmp_path, other)
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"backbone.*resnet18") as error:
        manager.restore(_state(0))
    manager.close()
    # What to do, from the command line and from Python.
    assert f"--config configs/run.py:{tmp_path}" in str(error.value)
    assert "yolojax.config.load_run_config(workdir)" in str(error.value)


@pytest.mark.parametrize(
    "section, field, value",
    [
        # Each would load the weights of a convolutional head without an error: another
        # input size or grid evaluates at a resolution the model never saw.
        ("data", "image_size", 128),
        ("model", "grid_size", 4),
        ("data", "normalization", "imagenet"),
        ("model", "num_boxes", 3),
    ],
)
def test_a_run_config_differing_in_what_the_weights_mean_is_refused(
    tmp_path, section, field, value
):
    config = shapes.get_config()
    _save_steps(tmp_path, [1], signature=checkpoints.model_signature(config))
    config[section][field] = value
    manager = checkpoints.Checkpoints(tmp_path, checkpoints.model_signature(config))
    with pytest.raises(checkpoints.CheckpointMismatchError, match=rf"{field}: checkpoint .* vs"):
        manager.restore(_state(0))
    manager.close()


def test_a_checkpoint_trained_on_other_pixel_values_is_refused_by_name(tmp_path):
    # Weights of a model trained on [0, 1] inputs load into one fed ImageNet-normalized ones
    # without any error, and evaluate to a wrong mAP.
    _save_steps(tmp_path, [1], signature={**SIGNATURE, "normalization": "unit"})
    manager = checkpoints.Checkpoints(tmp_path, {**SIGNATURE, "normalization": "imagenet"})
    with pytest.raises(
        checkpoints.CheckpointMismatchError,
        match=r"normalization: checkpoint 'unit' vs config 'imagenet'",
    ):
        manager.restore(_state(0))
    manager.close()


def test_a_checkpoint_saved_before_normalization_was_recorded_still_restores(tmp_path):
    _save_steps(tmp_path, [1])  # SIGNATURE has no normalization
    manager = checkpoints.Checkpoints(tmp_path, {**SIGNATURE, "normalization": "imagenet"})
    assert manager.restore(_state(0))[1] == 1
    manager.close()


def _sgd_state(value: float, tx):
    params = {"conv": {"kernel": np.full((3, 3, 2, 4), value, np.float32)}, "b": np.zeros(4)}
    opt_state = jax.tree.map(np.array, tx.init(params))  # writable host copies
    return {"params": params, "opt_state": opt_state, "step": np.int32(value)}


def test_optimizer_state_that_changed_only_in_array_free_nodes_restores(tmp_path):
    # A run saved with an unmasked weight decay (its state: EmptyState()) resumes under a
    # masked one (MaskedState(EmptyState())): the same arrays under the same names.
    unmasked = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))
    saved = _sgd_state(2.0, unmasked)
    saved["opt_state"][1][0].trace["conv"]["kernel"][:] = 7.0
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE)
    manager.save(2, saved)
    manager.wait()
    masked = optax.chain(
        optax.add_decayed_weights(1e-4, mask={"conv": {"kernel": True}, "b": False}),
        optax.sgd(0.1, momentum=0.9),
    )
    template = _sgd_state(0.0, masked)
    state, step = manager.restore(template)
    assert step == 2
    assert isinstance(state["opt_state"][0], optax.MaskedState)
    np.testing.assert_array_equal(state["params"]["conv"]["kernel"], 2.0)
    np.testing.assert_array_equal(state["opt_state"][1][0].trace["conv"]["kernel"], 7.0)
    # Different arrays are still another train state, not damage.
    with pytest.raises(checkpoints.CheckpointMismatchError, match="arrays differ"):
        manager.restore(_sgd_state(0.0, optax.sgd(0.1)))
    manager.close()


def test_no_checkpoint_says_to_train_first(tmp_path):
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE)
    with pytest.raises(checkpoints.NoCheckpointError, match="train first"):
        manager.restore(_state(0))
    manager.close()


def test_no_best_checkpoint_before_an_evaluation_points_to_the_latest(tmp_path):
    _save_steps(tmp_path, [1])
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE)
    with pytest.raises(checkpoints.NoCheckpointError, match="Use the latest one meanwhile"):
        manager.restore(_state(0), "best")
    manager.close()


def test_metrics_log_survives_a_torn_line_and_rewinds(tmp_path):
    for step in (10, 20, 30):
        workdir.append_metrics(tmp_path, {"step": step, "loss": step / 10, "mAP": float("nan")})
    with open(tmp_path / workdir.METRICS_FILE, "a") as f:
        f.write('{"step": 40, "lo')  # a crash mid-write
    records = workdir.read_metrics(tmp_path)
    assert [r["step"] for r in records] == [10, 20, 30]
    assert records[0]["mAP"] is None  # NaN is stored as JSON null
    workdir.truncate_metrics(tmp_path, 20)
    assert [r["step"] for r in workdir.read_metrics(tmp_path)] == [10, 20]
    for line in (tmp_path / workdir.METRICS_FILE).read_text().splitlines():
        json.loads(line)  # every line is complete JSON again


def test_tensorboard_log_survives_a_torn_record_and_rewinds(tmp_path):
    writer = workdir.TensorBoardWriter(tmp_path, 0)
    for step in (10, 20, 30):
        writer.write(step, {"loss": step / 10})
    writer.close()
    (events,) = (tmp_path / workdir.TENSORBOARD_FOLDER).iterdir()
    with open(events, "ab") as f:
        f.write(b"\x20\x00\x00\x00\x00\x00\x00\x00torn")  # a crash mid-write
    # Resumed from the checkpoint of step 20: steps 30 and on are trained, and logged, again.
    writer = workdir.TensorBoardWriter(tmp_path, start_step=20)
    writer.write(30, {"loss": 3.5})
    writer.close()
    scalars = tensorboard_scalars(tmp_path / workdir.TENSORBOARD_FOLDER)
    assert scalars == [(10, "loss", 1.0), (20, "loss", 2.0), (30, "loss", 3.5)]
    # No file left behind that TensorBoard would read.
    assert len(list((tmp_path / workdir.TENSORBOARD_FOLDER).iterdir())) == 2


def test_a_tensorboard_log_that_logged_nothing_leaves_no_folder(tmp_path):
    # A run stopped before its first log: the next start would set the folder aside.
    workdir.TensorBoardWriter(tmp_path, 0).close()
    assert not (tmp_path / workdir.TENSORBOARD_FOLDER).exists()
    writer = workdir.TensorBoardWriter(tmp_path, 0)
    writer.write(1, {"loss": 0.5})
    writer.close()
    assert tensorboard_scalars(tmp_path / workdir.TENSORBOARD_FOLDER) == [(1, "loss", 0.5)]


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "config.json"
    atomic_files.atomic_write_text(path, "old")
    atomic_files.atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp files left


def test_atomic_write_gives_the_mode_open_gives(tmp_path):
    # A run's config.json is as readable as the files open() makes (not mkstemp's 0600).
    atomic_files.atomic_write_text(tmp_path / "config.json", "{}")
    (tmp_path / "plain.txt").write_text("")

    def mode(name: str) -> int:
        return (tmp_path / name).stat().st_mode & 0o777

    assert mode("config.json") == mode("plain.txt")


def test_a_resumed_run_saves_over_the_damaged_step_and_keeps_its_files(tmp_path):
    # The newest checkpoint is damaged: the run resumes from step 1, reaches step 2 again
    # and saves it. Orbax refuses to save a step that exists; the damaged one moves aside.
    _save_steps(tmp_path, [1, 2])
    _damage(tmp_path, 2)
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE)
    with pytest.warns(UserWarning, match="Skipping damaged checkpoint"):
        _, step = manager.restore(_state(0))
    assert step == 1
    with pytest.warns(UserWarning, match=r"Moved the existing checkpoint .*2 to .*superseded"):
        manager.save(2, _state(20))
    manager.wait()
    state, step = manager.restore(_state(0))
    assert step == 2
    np.testing.assert_array_equal(state["params"]["w"], 20.0)
    assert (tmp_path / "superseded" / "checkpoints-2" / "state").is_dir()
    manager.close()


def test_reading_a_workdir_creates_nothing_in_it(tmp_path):
    manager = checkpoints.Checkpoints(tmp_path / "typo", SIGNATURE, read_only=True)
    with pytest.raises(checkpoints.NoCheckpointError, match="train first"):
        manager.restore(_state(0))
    manager.close()
    assert not (tmp_path / "typo").exists()


def test_a_workdir_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(workdir.NotAFolderError, match=r"runs is a file, not a folder"):
        checkpoints.Checkpoints(tmp_path / "runs", SIGNATURE)
    assert (tmp_path / "runs").read_text() == "not a folder"
    # One of its parents: that file is named as such, not as "read-only to this user".
    with pytest.raises(workdir.NotAFolderError, match=r"cannot be written: .*runs is a file\."):
        workdir.check_workdir(tmp_path / "runs" / "a", writable=True)


@pytest.mark.parametrize("below", ["", "sub/run"])
def test_a_workdir_through_a_link_to_nothing_names_the_missing_target(tmp_path, below):
    # A link made before its target (runs/x -> /scratch/x) was a FileExistsError traceback
    # from the run folder's lock, after the dataset was prepared.
    (tmp_path / "link").symlink_to(tmp_path / "scratch" / "x")
    with pytest.raises(
        workdir.NotAFolderError,
        match=re.escape(f"link is a link to {tmp_path / 'scratch' / 'x'}, which does not exist:"),
    ):
        workdir.check_workdir(tmp_path / "link" / below, writable=True)


def test_a_workdir_whose_name_is_not_utf8_is_named_before_anything_is_written(tmp_path):
    # A Latin-1 name: TensorFlow's summary writer failed at the first log, after the first
    # steps ("Error converting unicode string"), and orbax's restore with a cast error.
    latin1 = tmp_path / os.fsdecode(b"caf\xe9")
    for writable in (True, False):
        with pytest.raises(ValueError, match=r"caf\\udce9' is not valid UTF-8 .*: rename"):
            workdir.check_workdir(latin1, writable=writable)
    assert not latin1.exists()


def test_a_workdir_that_cannot_be_written_is_named_before_training(tmp_path, monkeypatch):
    # (Root may write anywhere except on a read-only mount, which os.access reports.)
    monkeypatch.setattr(checkpoints.os, "access", lambda path, mode: path != tmp_path)
    with pytest.raises(workdir.NotAFolderError, match=r"cannot be written: .* is read-only to"):
        workdir.check_workdir(tmp_path / "run", writable=True)
    workdir.check_workdir(tmp_path / "run")  # reading (evaluate.py) needs no write access


def test_a_save_that_fails_names_the_last_complete_checkpoint(tmp_path, monkeypatch):
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE, keep=5)
    manager.save(1, _state(1))
    manager.wait()

    def full_disk(*args, **kwargs):  # orbax's error for a full disk, raised at the next save
        raise ValueError(
            'RESOURCE_EXHAUSTED: Error writing "params.w/0" in OCDBT database at local file '
            f'"{tmp_path}/checkpoints/2.orbax-checkpoint-tmp/state": Failed to write 630784 bytes '
            "to file 9: No space left on device [os_error_code='28']"
        )

    monkeypatch.setattr(orbax_managers.Manager, "save", full_disk)
    with pytest.raises(checkpoints.CheckpointSaveError) as error:
        manager.save(2, _state(2))
    message = str(error.value)
    assert f"Saving a checkpoint in {tmp_path} failed" in message
    assert "No space left on device" in message
    assert message.endswith(
        "The last complete checkpoint is step 1: free space (or fix the folder) and rerun the "
        "same command to resume from it."
    )
    monkeypatch.undo()
    manager.close()


def test_a_save_that_failed_in_the_background_is_reported_by_wait(tmp_path, monkeypatch):
    # Orbax writes asynchronously: a full disk surfaces when the save is waited for.
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE, keep=5)
    manager.save(1, _state(1))
    manager.wait()

    def failed(self):
        raise ValueError("RESOURCE_EXHAUSTED: Failed to write: No space left on device")

    monkeypatch.setattr(orbax_managers.Manager, "wait_until_finished", failed)
    with pytest.raises(checkpoints.CheckpointSaveError, match="last complete checkpoint is step 1"):
        manager.wait()
    monkeypatch.undo()
    manager.close()


def test_a_bug_in_a_save_is_not_reported_as_a_full_disk(tmp_path, monkeypatch):
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE)

    def bug(*args, **kwargs):
        raise ValueError("Unsupported leaf type <class 'object'>")

    monkeypatch.setattr(orbax_managers.Manager, "save", bug)
    with pytest.raises(ValueError, match="Unsupported leaf type") as error:
        manager.save(1, _state(1))
    assert not isinstance(error.value, checkpoints.CheckpointSaveError)
    monkeypatch.undo()
    manager.close()


def test_a_checkpoint_saved_without_checksums_still_restores(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "array_checksums", lambda tree: {})  # as before they existed
    _save_steps(tmp_path, [1])
    monkeypatch.undo()
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE)
    state, step = manager.restore(_state(0))
    assert step == 1 and state["params"]["w"][0, 0] == 1.0
    manager.close()


@pytest.mark.parametrize(
    "refusal",
    [
        MemoryError("host out of memory"),
        PermissionError(13, "Permission denied"),
        ValueError('PERMISSION_DENIED: Error reading "params.w/.zarray"'),  # tensorstore's
    ],
)
def test_a_checkpoint_the_machine_refuses_to_read_is_not_skipped_as_damaged(
    tmp_path, monkeypatch, refusal
):
    # Skipped, the good checkpoint 2 gave way to 1, and the resumed run set it aside as it
    # saved step 2 again: its steps were lost to a full memory or a permissions problem.
    _save_steps(tmp_path, [1, 2])
    restore = checkpoints.restore_by_name

    def refuse_step_2(manager, step, *args, **kwargs):
        if step == 2:
            raise refusal
        return restore(manager, step, *args, **kwargs)

    monkeypatch.setattr(checkpoints, "restore_by_name", refuse_step_2)
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE)
    with pytest.raises(errors.MachineError) as error:
        manager.restore(_state(0))
    manager.close()
    assert str(error.value).startswith(
        f"Cannot read the checkpoint {tmp_path}/checkpoints/2 ({type(refusal).__name__}: "
    )
    assert "it is left as it is: fix that and rerun" in str(error.value)
    assert (tmp_path / "checkpoints" / "2").is_dir()


def test_a_step_pruned_from_checkpoints_but_kept_as_best_is_restored_from_best(tmp_path):
    # "No checkpoint for step 1 ... available steps: [3, 4]", though best/ held step 1.
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE, keep=2)
    manager.save(1, _state(1))
    manager.save_if_best(1, _state(1), {"mAP": 0.9})
    for step in (2, 3, 4):
        manager.save(step, _state(step))
    manager.wait()
    state, step = manager.restore(_state(0), which=1)
    assert step == 1
    np.testing.assert_array_equal(state["params"]["w"], 1.0)
    with pytest.raises(
        checkpoints.NoCheckpointError,
        match=r"available steps: \[3, 4\], and step 1 in best/ \(--checkpoint best\)\.",
    ):
        manager.restore(_state(0), which=2)
    manager.close()
    # checkpoints/ deleted, best/ kept: 'latest' names it (it said "train first").
    shutil.rmtree(tmp_path / "checkpoints")
    manager = checkpoints.Checkpoints(tmp_path, SIGNATURE, read_only=True)
    with pytest.raises(checkpoints.NoCheckpointError, match=r", and step 1 in best/ \(--check"):
        manager.restore(_state(0))
    assert manager.restore(_state(0), which="best")[1] == 1
    manager.close()
