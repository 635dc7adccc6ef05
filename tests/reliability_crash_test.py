"""Crashes lose nothing: kill -9 a real train.py run, damage checkpoints, evaluate.py after.

Every train.py/evaluate.py here is a real process in its own process group, killed with
SIGKILL (never given a chance to clean up), with a deadline and killed in `finally`. Each
process pays JAX's start-up, so they share a persistent compilation cache: only the first
compiles the train step.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from ml_collections.config_flags import config_path

from configs import shapes
from tests.tiny import tensorboard_scalars
from yolojax import atomic_files, checkpoints, train_lib, trainer, voc_results, workdir
from yolojax.data.synthetic_shapes import CLASS_NAMES

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
# configs/shapes.py shrunk (as tests/train_test.py): 32 train images of 64 px, batch 8, so
# 3 epochs are 12 steps, each saved as a checkpoint; evaluation only at the end.
OVERRIDES = {
    "model.grid_size": 4,
    "model.head_channels": 16,
    "model.head_conv_layers": 1,
    "data.image_size": 64,
    "data.synthetic.num_train": 32,
    "data.synthetic.num_test": 12,
    "data.synthetic.image_size": 64,
    "train.batch_size": 8,
    "train.num_epochs": 3,
    "train.log_every_steps": 1,
    "train.checkpoint_every_steps": 1,
    "train.keep_checkpoints": 3,
    "eval.every_epochs": 0,
    "eval.train_subset": 0,
}
TOTAL_STEPS = 12
PROCESS_DEADLINE_S = 300  # per process; a healthy one takes 10-60 s on 2 loaded cores
RESUMED = re.compile(r"Resuming from the checkpoint of step (\d+)")


@pytest.fixture(scope="module", name="data_dir")
def fixture_data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module", name="env")
def fixture_env(tmp_path_factory):
    """The processes' environment: CPU, quiet TF, one persistent JAX compilation cache."""
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1",
    }


def _tensorflow_import_notices(log: str) -> list[str]:
    """The lines of TensorFlow's import notices in a command's output (none are wanted)."""
    notices = ("absl::InitializeLog", "oneDNN custom operations")
    return [line for line in log.splitlines() if any(notice in line for notice in notices)]


def _config(data_dir):
    """The in-process twin of the command line's config (to restore what it saved)."""
    config = shapes.get_config()
    for key, value in {**OVERRIDES, "data.tfds_data_dir": data_dir}.items():
        config_path.set_value(key, config, value)  # as the command line's flag sets it
    return config


def _command(script, run_dir, data_dir, *extra, overrides=None):
    """The command line of `script` on `run_dir`, with OVERRIDES updated by `overrides`."""
    overrides = {**OVERRIDES, **(overrides or {}), "data.tfds_data_dir": data_dir}
    # --verbosity=0: orbax's INFO logs land in the log too, for a failing test's report.
    return [
        sys.executable,
        script,
        "--config=configs/shapes.py",
        f"--workdir={run_dir}",
        "--verbosity=0",
        *(f"--config.{key}={value}" for key, value in overrides.items()),
        *extra,
    ]


class _Process:
    """A process in its own process group, output to a log file, SIGKILLed on exit."""

    def __init__(self, command, env, log_path):
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.popen = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started = time.monotonic()

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=60)

    def wait_for(self, condition) -> bool:
        """Polls every few ms until `condition()` (True) or the process exits (False)."""
        while self.popen.poll() is None:
            if condition():
                return True
            if time.monotonic() - self.started > PROCESS_DEADLINE_S:
                self.kill()
                pytest.fail(f"no result after {PROCESS_DEADLINE_S} s: {self.log()[-3000:]}")
            time.sleep(0.003)
        return False

    def run_until(self, should_kill=None) -> bool:
        """Runs to the end, or SIGKILLs as soon as `should_kill()`. True if it was killed."""
        if should_kill is not None and self.wait_for(should_kill):
            self.kill()
            return True
        self.wait_for(lambda: False)
        return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.kill()


def _run(command, env, log_path) -> tuple[int, str]:
    with _Process(command, env, log_path) as process:
        process.run_until()
        return process.popen.returncode, process.log()


def _entries(run_dir) -> list[str]:
    try:
        return os.listdir(Path(run_dir) / "checkpoints")
    except FileNotFoundError:
        return []


def _complete_steps(run_dir) -> list[int]:
    """Checkpoints orbax finished (it writes into '<step>.orbax-checkpoint-tmp*' and renames)."""
    return sorted(int(name) for name in _entries(run_dir) if name.isdigit())


def _saves_in_progress(run_dir) -> list[str]:
    return [name for name in _entries(run_dir) if "orbax-checkpoint-tmp" in name]


def _check_workdir_files(run_dir) -> None:
    """config.json is whole; metrics.jsonl is whole but for at most a torn last line."""
    run_dir = Path(run_dir)
    if (run_dir / workdir.CONFIG_FILE).exists():
        json.loads((run_dir / workdir.CONFIG_FILE).read_text())
    if (run_dir / workdir.METRICS_FILE).exists():
        for line in (run_dir / workdir.METRICS_FILE).read_text().splitlines()[:-1]:
            json.loads(line)


def _losses(run_dir) -> dict[int, float]:
    records = workdir.read_metrics(run_dir)
    steps = [r["step"] for r in records if "loss" in r]
    assert len(steps) == len(set(steps)), f"steps logged twice: {steps}"
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def _tensorboard_losses(run_dir) -> list[tuple[int, float]]:
    """(step, loss) as TensorBoard reads them, in order."""
    scalars = tensorboard_scalars(Path(run_dir) / workdir.TENSORBOARD_FOLDER)
    return [(step, value) for step, tag, value in scalars if tag == "loss"]


def _evaluations(run_dir) -> list[tuple[int, float]]:
    """(step, test mAP) of every logged evaluation, in log order."""
    return [(r["step"], r["test_mAP"]) for r in workdir.read_metrics(run_dir) if "test_mAP" in r]


def _saved_state(run_dir, step: int) -> dict:
    """Every array of a checkpoint's train state (params, optimizer state, statistics)."""
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(Path(run_dir) / "checkpoints" / str(step) / "state")


def _kill_during_a_save(save_number):
    """Kills when the `save_number`-th checkpoint save of this process is being written.

    For a fresh workdir: a torn save left by an earlier kill would count as well.
    """

    def plan(run_dir, started):
        seen = set()

        def should_kill():
            seen.update(_saves_in_progress(run_dir))
            return len(seen) >= save_number

        return should_kill

    return "during a checkpoint save", plan


def _kill_after_start(delay_s):
    """Kills `delay_s` after the process started: imports, dataset, restore or compile."""

    def plan(run_dir, started):
        return lambda: time.monotonic() - started > delay_s

    return "while starting up", plan


def _kill_while_training(delay_s):
    """Kills `delay_s` after this process's first new checkpoint: mid-step, -log or -save."""

    def plan(run_dir, started):
        before, first_new = set(_complete_steps(run_dir)), []

        def should_kill():
            if not first_new and set(_complete_steps(run_dir)) - before:
                first_new.append(time.monotonic())
            return bool(first_new) and time.monotonic() - first_new[0] > delay_s

        return should_kill

    return "at a random time while training", plan


def test_kill_9_at_random_points_then_rerun_equals_an_uninterrupted_run(tmp_path, data_dir, env):
    reference = tmp_path / "reference"
    returncode, log = _run(_command("train.py", reference, data_dir), env, tmp_path / "ref.log")
    assert returncode == 0, log[-3000:]
    assert not _tensorflow_import_notices(log)

    rng = random.Random(8)
    plans = [
        _kill_during_a_save(rng.randint(2, 3)),  # step 1 or 2 complete, the next one torn
        _kill_after_start(rng.uniform(1.0, 6.0)),
        _kill_while_training(rng.uniform(0.0, 1.0)),
    ]
    run_dir, killed_mid_save, latest = tmp_path / "killed", False, None
    for attempt in range(len(plans) + 1):
        what, plan = plans[attempt] if attempt < len(plans) else ("not at all", None)
        command = _command("train.py", run_dir, data_dir)
        with _Process(command, env, tmp_path / f"run{attempt}.log") as process:
            killed = process.run_until(plan and plan(run_dir, process.started))
            log = process.log()
        assert killed or process.popen.returncode == 0, log[-3000:]
        # Each restart resumes from the newest checkpoint the killed process completed
        # (one killed before it got that far may not have logged it yet).
        resumed = [int(step) for step in RESUMED.findall(log)]
        previous, latest = latest, max(_complete_steps(run_dir), default=None)
        if previous is None:
            assert not resumed, log[-3000:]
        elif latest != previous:
            assert resumed == [previous], log[-3000:]
        else:
            assert resumed in ([], [previous]), log[-3000:]
        _check_workdir_files(run_dir)
        if what == "during a checkpoint save":
            assert _saves_in_progress(run_dir), "the kill came after the save had finished"
            killed_mid_save = True
        if not killed:
            break
    assert killed_mid_save

    # The torn saves are cleaned up, the log holds each step once with the same losses,
    # and the final state is bit for bit the uninterrupted run's.
    assert not _saves_in_progress(run_dir)
    assert _losses(run_dir) == _losses(reference)
    # TensorBoard's log too: the steps a killed run logged after its checkpoint are dropped.
    assert _tensorboard_losses(run_dir) == _tensorboard_losses(reference)
    # The final evaluation too, once: a kill during it is made good by the next run.
    assert _evaluations(run_dir) == _evaluations(reference) != []
    assert sorted(_losses(run_dir)) == list(range(1, TOTAL_STEPS + 1))
    assert _complete_steps(run_dir)[-1] == _complete_steps(reference)[-1] == TOTAL_STEPS
    jax.tree.map(
        np.testing.assert_array_equal,
        _saved_state(run_dir, TOTAL_STEPS),
        _saved_state(reference, TOTAL_STEPS),
    )


def test_sigterm_saves_the_step_reached_and_exits_143(tmp_path, data_dir, env):
    # Only the last step is a scheduled save, and there are many: SIGTERM comes mid-run.
    overrides = {"train.num_epochs": 100, "train.checkpoint_every_steps": 1000}
    run_dir = tmp_path / "run"
    command = _command("train.py", run_dir, data_dir, overrides=overrides)
    with _Process(command, env, tmp_path / "run.log") as process:
        assert process.wait_for(lambda: len(_losses(run_dir)) >= 2), process.log()[-3000:]
        process.popen.send_signal(signal.SIGTERM)
        process.wait_for(lambda: False)
        log = process.log()
    assert process.popen.returncode == 128 + signal.SIGTERM, log[-3000:]
    [step] = _complete_steps(run_dir)
    assert 2 <= step < 100 * TOTAL_STEPS // 3, log[-3000:]
    assert sorted(_losses(run_dir)) == list(range(1, step + 1))  # logged, up to the saved step
    assert "SIGTERM received: training stops after the current step" in log
    checkpoint_dir = run_dir / "checkpoints"
    assert f"Stopped on SIGTERM after step {step}, saved in {checkpoint_dir}: rerun" in log
    assert "Traceback" not in log


def test_sigterm_while_the_dataset_is_generated_leaves_no_unfinished_folder(tmp_path, env):
    # Killed outright (before, SIGTERM's default action), the process left TFDS's unfinished
    # dataset folder behind, and said nothing. A fresh data folder: the dataset is generated.
    data_dir = tmp_path / "tfds"
    overrides = {"data.synthetic.num_train": 2000}  # generated in about 10 s
    command = _command("train.py", tmp_path / "run", str(data_dir), overrides=overrides)
    with _Process(command, env, tmp_path / "run.log") as process:
        generating = "Generating the synthetic shapes dataset"
        assert process.wait_for(lambda: generating in process.log()), process.log()[-3000:]
        time.sleep(0.5)  # under way
        process.popen.send_signal(signal.SIGTERM)
        process.wait_for(lambda: False)
        log = process.log()
    assert process.popen.returncode == 128 + signal.SIGTERM, log[-3000:]
    assert log.endswith("Stopped on SIGTERM.\n"), log[-3000:]
    assert not list(data_dir.rglob("incomplete*")), sorted(data_dir.rglob("*"))


def test_a_second_run_on_a_folder_in_training_is_refused_and_the_first_trains_on(
    tmp_path, data_dir, env
):
    # As a scheduler's requeued job beside the old one: the second run's start deleted the
    # first's save in progress, and both logged every step to metrics.jsonl.
    overrides = {"train.num_epochs": 100, "train.checkpoint_every_steps": 1000}  # 400 steps
    run_dir = tmp_path / "run"
    command = _command("train.py", run_dir, data_dir, overrides=overrides)
    with _Process(command, env, tmp_path / "first.log") as first:
        assert first.wait_for(lambda: len(_losses(run_dir)) >= 2), first.log()[-3000:]
        code, log = _run(command, env, tmp_path / "second.log")
        assert first.popen.poll() is None, "the first run ended before the second was refused"
        first.popen.send_signal(signal.SIGTERM)  # stops it with the step it reached saved
        first.wait_for(lambda: False)
        first_log = first.log()
    assert code == 1, log[-3000:]
    assert f"Another training run is writing {run_dir}: two runs in one folder" in log
    assert "Traceback" not in log
    assert first.popen.returncode == 128 + signal.SIGTERM, first_log[-3000:]
    [step] = _complete_steps(run_dir)
    assert sorted(_losses(run_dir)) == list(range(1, step + 1))  # each step logged once
    # Once the first has ended, the folder is free again: the rerun resumes (then killed).
    with _Process(command, env, tmp_path / "third.log") as third:
        third.run_until(lambda: RESUMED.search(third.log()))
        resumed = RESUMED.search(third.log())
    assert resumed and int(resumed.group(1)) == step, third.log()[-3000:]


@pytest.fixture(scope="module", name="initial_state")
def fixture_initial_state(data_dir):
    return train_lib.initial_state(_config(data_dir), num_train_examples=32)[1]


def _two_checkpoints(run_dir: Path, data_dir, state) -> Path:
    """A workdir with checkpoints of steps 1 and 2 (initial weights: enough to evaluate)."""
    config = _config(data_dir)
    manager = checkpoints.Checkpoints(run_dir, checkpoints.model_signature(config))
    for step in (1, 2):
        manager.save(step, state.replace(step=step))
    manager.wait()
    manager.close()
    return run_dir


def _damage(checkpoint_dir: Path, how: str) -> None:
    """Damages the array data of one checkpoint: flipped bytes or truncated files."""
    for path in (checkpoint_dir / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            data = bytearray(path.read_bytes())
            if how == "flip":  # one byte in every KiB, as a failing disk might
                data[::1024] = bytes(byte ^ 0xFF for byte in data[::1024])
            else:
                data = data[: len(data) // 3]
            path.write_bytes(bytes(data))


def test_a_corrupted_latest_checkpoint_is_skipped_naming_it(tmp_path, data_dir, initial_state):
    # tests/checkpoints_test.py empties files; here bytes are flipped inside the arrays'
    # data, as a bad disk would, in a real train state.
    run_dir = _two_checkpoints(tmp_path / "run", data_dir, initial_state)
    _damage(run_dir / "checkpoints" / "2", "flip")
    manager = checkpoints.Checkpoints(run_dir, checkpoints.model_signature(_config(data_dir)))
    with pytest.warns(UserWarning, match=rf"Skipping damaged checkpoint {run_dir}/checkpoints/2\b"):
        state, step = manager.restore(initial_state)
    manager.close()
    assert step == 1
    jax.tree.map(np.testing.assert_array_equal, state.params, initial_state.params)


def test_a_damaged_checkpoint_is_named_with_the_reason_not_tensorstores_spec(
    tmp_path, data_dir, initial_state
):
    # The warning kept the end of tensorstore's message: a thousand characters of JSON spec,
    # the reason ("Requested byte range ... is not valid") cut off before it.
    run_dir = _two_checkpoints(tmp_path / "run", data_dir, initial_state)
    _damage(run_dir / "checkpoints" / "2", "truncate")
    manager = checkpoints.Checkpoints(run_dir, checkpoints.model_signature(_config(data_dir)))
    with pytest.warns(UserWarning, match="Skipping damaged checkpoint") as warned:
        _, step = manager.restore(initial_state)
    manager.close()
    assert step == 1
    [message] = [str(warning.message) for warning in warned]
    assert "tensorstore_spec" not in message and '"driver"' not in message, message
    assert not message.endswith("']"), message  # ends with the reason


def test_a_checkpoint_without_its_state_metadata_is_skipped_as_damaged(
    tmp_path, data_dir, initial_state
):
    # Orbax reads a missing state/_METADATA as a state without arrays: the run's own
    # checkpoint was called another model's, with its own config, and blocked the resume.
    run_dir = _two_checkpoints(tmp_path / "run", data_dir, initial_state)
    (run_dir / "checkpoints" / "2" / "state" / "_METADATA").unlink()
    manager = checkpoints.Checkpoints(run_dir, checkpoints.model_signature(_config(data_dir)))
    # (This orbax gives no metadata for it; another may raise: damage either way.)
    with pytest.warns(UserWarning, match=r"Skipping damaged checkpoint .*/checkpoints/2: "):
        _, step = manager.restore(initial_state)
    manager.close()
    assert step == 1


def test_checkpoints_the_training_run_removes_while_they_are_read_are_not_damage(
    tmp_path, data_dir, initial_state
):
    # evaluate.py (or Detector.from_workdir) beside a training run: the run saves step 3 and
    # removes 1 and 2 (it keeps the last few) between the reader's listing and its reads.
    # They were called damaged, and with them all: "Every checkpoint ... is damaged".
    run_dir = _two_checkpoints(tmp_path / "run", data_dir, initial_state)
    signature = checkpoints.model_signature(_config(data_dir))
    reader = checkpoints.Checkpoints(run_dir, signature, read_only=True)
    writer = checkpoints.Checkpoints(run_dir, signature, keep=1)
    writer.save(3, initial_state.replace(step=3))
    writer.wait()
    writer.close()
    assert _complete_steps(run_dir) == [3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "Skipping damaged checkpoint"
        state, step = reader.restore(initial_state, model_only=True)
    reader.close()
    assert step == 3 and int(state.step) == 3


def test_a_damaged_best_checkpoint_points_to_the_latest(tmp_path, data_dir, initial_state):
    run_dir = _two_checkpoints(tmp_path / "run", data_dir, initial_state)
    signature = checkpoints.model_signature(_config(data_dir))
    manager = checkpoints.Checkpoints(run_dir, signature)
    manager.save_if_best(2, initial_state.replace(step=2), {"mAP": 0.5})
    manager.wait()
    _damage(run_dir / "best" / "2", "truncate")
    with (
        pytest.warns(UserWarning, match="Skipping damaged checkpoint"),
        pytest.raises(checkpoints.NoCheckpointError, match="best is damaged") as error,
    ):
        manager.restore(initial_state, "best", model_only=True)
    manager.close()
    assert "the latest checkpoints are other copies: --checkpoint latest" in str(error.value)


@pytest.mark.parametrize(
    "section, field, value", [("model", "head_channels", 32), ("train", "optimizer", "sgd")]
)
def test_a_checkpoint_of_another_train_state_is_a_mismatch_not_damage(
    tmp_path, data_dir, initial_state, section, field, value
):
    run_dir = _two_checkpoints(tmp_path / "run", data_dir, initial_state)
    config = _config(data_dir)
    config[section][field] = value
    # Resuming needs the whole train state to fit.
    _, template, _ = train_lib.initial_state(config, num_train_examples=32)
    manager = checkpoints.Checkpoints(run_dir, checkpoints.model_signature(config))
    try:
        with pytest.raises(checkpoints.CheckpointMismatchError, match="another train state"):
            manager.restore(template)
    finally:
        manager.close()
    assert _complete_steps(run_dir) == [1, 2]


def test_a_run_that_cannot_resume_closes_its_checkpoints(
    tmp_path, data_dir, initial_state, monkeypatch
):
    # A notebook's failed start left the orbax managers (and their threads) open.
    run_dir = _two_checkpoints(tmp_path / "run", data_dir, initial_state)
    config = _config(data_dir)
    config.train.optimizer = "sgd"  # another train state: the resume is refused
    closed, close = [], checkpoints.Checkpoints.close
    monkeypatch.setattr(
        checkpoints.Checkpoints, "close", lambda self: closed.append(self) or close(self)
    )
    with pytest.raises(checkpoints.CheckpointMismatchError, match="another train state"):
        trainer.train_and_evaluate(config, str(run_dir))
    assert len(closed) == 1


def test_a_resume_refused_after_a_config_file_changed_names_the_changed_field(tmp_path, data_dir):
    # A shapes run of a yolojax before 2026-12-06 trained unclipped; configs/shapes.py clips
    # the gradient since, so the same command builds another train state (Adam's state
    # under the clip's). The refusal asked whether a model size or the optimizer had
    # changed, which the user had not touched, and never named the field that had.
    old = _config(data_dir)
    old.train.grad_clip_norm = 0.0
    state = train_lib.initial_state(old, num_train_examples=32)[1]
    run_dir = tmp_path / "run"
    manager = checkpoints.Checkpoints(run_dir, checkpoints.model_signature(old))
    manager.save(1, state.replace(step=1))
    manager.wait()
    manager.close()
    atomic_files.atomic_write_text(run_dir / workdir.CONFIG_FILE, old.to_json_best_effort(indent=2))
    with pytest.raises(
        checkpoints.CheckpointMismatchError,
        match=r"another train state.* config\.json in: train\.grad_clip_norm: 0\.0 -> 10\.0 \(",
    ):
        trainer.train_and_evaluate(_config(data_dir), str(run_dir))


def test_evaluation_restores_the_model_of_a_run_trained_with_another_optimizer(
    tmp_path, data_dir, initial_state
):
    # evaluate.py --config, Detector.from_workdir(config=...): a config file that differs
    # from the run in train fields only (here Adam against SGD) must still give its model;
    # the optimizer's state plays no part there.
    run_dir = _two_checkpoints(tmp_path / "run", data_dir, initial_state)
    config = _config(data_dir)
    config.train.optimizer = "sgd"
    _, state, step = train_lib.restore_trained_state(config, run_dir)
    assert step == 2
    for collection in ("params", "batch_stats"):
        jax.tree.map(
            np.testing.assert_array_equal,
            getattr(state, collection),
            jax.device_get(getattr(initial_state, collection)),
        )
    # A model of another size is still refused.
    config.model.head_channels = 32
    with pytest.raises(checkpoints.CheckpointMismatchError, match="another train state"):
        train_lib.restore_trained_state(config, run_dir)


def test_evaluate_with_every_checkpoint_damaged_says_what_to_do(
    tmp_path, data_dir, env, initial_state
):
    run_dir = _two_checkpoints(tmp_path / "run", data_dir, initial_state)
    for step in ("1", "2"):
        _damage(run_dir / "checkpoints" / step, "truncate")
    returncode, log = _run(_command("evaluate.py", run_dir, data_dir), env, tmp_path / "eval.log")
    assert returncode == 1
    assert f"Every checkpoint in {run_dir}/checkpoints is damaged (steps [2, 1])" in log
    assert "backup" in log  # what to do
    assert "Traceback" not in log
    assert not (run_dir / "eval" / "metrics.json").exists()


def test_evaluate_without_a_config_uses_the_one_the_run_saved(
    tmp_path, data_dir, env, initial_state
):
    # The run's overrides (a 4 × 4 grid, 64 px images...) are only in its config.json:
    # configs/shapes.py alone describes another model, which the checkpoint would not fit.
    run_dir = _two_checkpoints(tmp_path / "run", data_dir, initial_state)
    saved = _config(data_dir).to_json_best_effort(indent=2)
    atomic_files.atomic_write_text(run_dir / workdir.CONFIG_FILE, saved)
    command = [sys.executable, "evaluate.py", f"--workdir={run_dir}", "--checkpoint=1"]
    returncode, log = _run(command, env, tmp_path / "eval.log")
    assert returncode == 0, log
    assert "step 1: mAP@0.5 VOC07 11-point" in log and "on 12 test images" in log
    assert not _tensorflow_import_notices(log)
    assert json.loads((run_dir / "eval" / "metrics.json").read_text())["step"] == 1


def test_evaluate_fails_when_the_voc_results_asked_for_are_not_written(
    tmp_path, data_dir, env, initial_state
):
    # A submission script read exit status 0 and the warning went unseen.
    run_dir = _two_checkpoints(tmp_path / "run", data_dir, initial_state)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    # A file given for the folder, or a folder under it: refused before anything is
    # evaluated or written (VOC2012 test's evaluation is long to lose).
    for folder in (notes, notes / "results"):
        command = _command("evaluate.py", run_dir, data_dir, f"--voc_results={folder}")
        returncode, log = _run(command, env, tmp_path / "eval.log")
        assert returncode == 1
        assert (
            f"The VOC results folder {folder} cannot be written: {notes} is a file. Name "
            "another folder"
        ) in log
        assert "mAP@0.5" not in log
        assert not (run_dir / "eval").exists() and notes.read_text() == "mine"
    # A write that fails all the same (here a folder where a class's file goes; a full disk
    # alike): evaluated and reported, then status 1.
    results = tmp_path / "results"
    (results / voc_results.results_file_name("comp3", "test", CLASS_NAMES[0])).mkdir(parents=True)
    command = _command(
        "evaluate.py",
        run_dir,
        data_dir,
        f"--voc_results={results}",
        overrides={"eval.score_threshold": 0.05},
    )
    returncode, log = _run(command, env, tmp_path / "eval2.log")
    assert returncode == 1
    assert "mAP@0.5 VOC07 11-point" in log and f"Could not save {results}" in log
    assert log.rstrip().endswith("Error: the VOC results files were not written (see above).")
    assert os.listdir(results) == [voc_results.results_file_name("comp3", "test", CLASS_NAMES[0])]
    saved = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert saved["settings"]["score_threshold"] == 0.05  # which settings gave that mAP
