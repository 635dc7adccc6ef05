"""Many devices and many processes on CPU: the same training and the same mAP as one device.

The number of CPU devices is fixed when JAX starts, so the runs happen in fresh worker
processes (tests/distributed_worker.py), killed if still alive after WORKER_TIMEOUT_S:

* one process with 4 devices: one train step on 1 device and on 4 devices, from the same
  state on the same global batch of 8;
* at the same time, one process with 4 devices and a job of 2 processes × 2 devices joined
  with ``jax.distributed`` over loopback (gloo CPU collectives) each run train.py's loop for
  2 steps and an evaluation; the job then runs evaluate.py's restore and evaluation.

Each test starts its own workers, so pytest-xdist never runs the same workers twice.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import traverse_util

from tests import distributed_worker as worker
from tests import tiny
from yolojax import distributed, eval_lib, train_lib, trainer
from yolojax.data import pipeline

REPO = Path(__file__).resolve().parents[1]
WORKER_TIMEOUT_S = 240
# Parameters and BatchNorm statistics are compared relative to how far training moved them:
# max|a - b| <= tolerance * max|b - initial|, per array, in float32. The same sums taken in
# another order (per-device partial sums, then the cross-device mean) make one step's
# update on random images agree to ~5e-5 of its size here (ONE_STEP_TOLERANCE).
# On the synthetic dataset's images, whose flat regions give many tied values, that rounding
# can switch a branch at a kink (a leaky ReLU or max-pool unit, the loss's responsible box):
# the update of the units downstream then differs by more. Measured for the job of two
# processes against one (JOB_TOLERANCE): up to 9e-4 of a step at the first step and 1e-2 at
# the second with one decoding of the JPEGs; 1.2e-2 and 3.1e-2, in a few hundred elements
# of a layer, with another (the accurate DCT; the same code). A wrong shard, or a gradient
# or statistic not averaged over all 4 devices, would be off by tens of percent.
ONE_STEP_TOLERANCE = 1e-3
JOB_TOLERANCE = 6e-2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker_env(root: Path, **extra) -> dict:
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # Shared by a test's workers: they compile the same model initialization.
        "JAX_COMPILATION_CACHE_DIR": str(root / "jax_cache"),
        **extra,
    }


def _start(args, log: Path, *, devices: int, env: dict) -> subprocess.Popen:
    env = {**env, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    with open(log, "w") as out:
        # A new session per worker: its whole process group is killed at the end.
        return subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "distributed_worker.py"), *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _kill(started: dict[str, tuple[subprocess.Popen, Path]]) -> None:
    for process, _ in started.values():
        if process.poll() is None:
            # SIGKILL: jax.distributed turns SIGTERM into a preemption notice.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _run(workers: dict[str, tuple[list[str], int]], root: Path, env: dict) -> None:
    """Runs the workers ``{name: (arguments, device count)}`` together, logging to
    ``root/<name>.log``; fails with their logs if one fails or the deadline passes."""
    started = {}
    try:
        for name, (args, devices) in workers.items():
            log = root / f"{name}.log"
            started[name] = (_start(args, log, devices=devices, env=env), log)
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        pending = dict(started)
        while pending and time.monotonic() < deadline:
            for name, (process, _) in list(pending.items()):
                if process.poll() is not None:
                    del pending[name]
                    if process.returncode != 0:
                        pending = {}  # a dead peer: the others would wait on it
                        break
            time.sleep(0.2)
    finally:
        _kill(started)
    failed = sorted(name for name, (process, _) in started.items() if process.returncode != 0)
    if failed:
        logs = "\n".join(
            f"--- {name} (exit {process.returncode}) ---\n{log.read_text()[-4000:]}"
            for name, (process, log) in started.items()
        )
        pytest.fail(f"workers {failed} failed or timed out:\n{logs}")


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as arrays:
        return dict(arrays)


def _checkpointed(workdir: Path, step: int) -> dict[str, np.ndarray]:
    """Parameters and BatchNorm statistics as saved on disk, read with orbax directly."""
    state = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    return traverse_util.flatten_dict(variables, sep="/")


def _assert_same_training(actual: dict, expected: dict, initial: dict, tolerance: float):
    assert actual.keys() == expected.keys() == initial.keys()
    assert any(k.startswith("batch_stats/") for k in expected)
    for key in expected:
        moved = np.max(np.abs(expected[key] - initial[key]))
        assert moved > 1e-4, f"{key} did not train"  # so that the comparison means something
        difference = np.max(np.abs(actual[key] - expected[key]))
        assert difference <= tolerance * moved, f"{key}: {difference} vs a step of {moved}"


@pytest.mark.slow
def test_one_step_on_4_devices_equals_1_device(tmp_path):
    args = ["step", "--out", str(tmp_path), "--timeout", str(WORKER_TIMEOUT_S - 10)]
    _run({"step": (args, 4)}, tmp_path, _worker_env(tmp_path))
    result = _load_npz(tmp_path / "step.npz")
    assert int(result.pop("device_count")) == 4
    runs = {"initial": {}, "one": {}, "all": {}}
    for key, value in result.items():
        run, _, name = key.partition("/")
        runs[run][name] = value
    np.testing.assert_allclose(runs["all"].pop("loss"), runs["one"].pop("loss"), rtol=1e-6)
    _assert_same_training(runs["all"], runs["one"], runs["initial"], ONE_STEP_TOLERANCE)


@pytest.mark.slow
def test_two_processes_train_and_evaluate_like_one_process(tmp_path):
    data_dir = str(tmp_path / "tfds")
    # Generated here, once, so that the workers only read it.
    pipeline.get_dataset_info(worker.tiny_config(data_dir).data)
    port = _free_port()
    common = ["train", "--data_dir", data_dir, "--timeout", str(WORKER_TIMEOUT_S - 10)]
    (tmp_path / "single").mkdir()
    (tmp_path / "multi").mkdir()
    single_args = ["--workdir", str(tmp_path / "single_run"), "--out", str(tmp_path / "single")]
    workers = {"single": ([*common, *single_args], 4)}
    for process_id in range(2):
        args = ["--workdir", str(tmp_path / "multi_run"), "--out", str(tmp_path / "multi")]
        args += ["--evaluate", "--coordinator_address", f"127.0.0.1:{port}"]
        args += ["--num_processes", "2", "--process_id", str(process_id)]
        workers[f"process{process_id}"] = ([*common, *args], 2)
    # The coordinator listens on loopback only (JAX's default is every interface).
    env = _worker_env(tmp_path, JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}")
    _run(workers, tmp_path, env)

    single = json.loads((tmp_path / "single" / "process0.json").read_text())
    assert (single["process_count"], single["device_count"]) == (1, 4)
    records = [json.loads((tmp_path / "multi" / f"process{i}.json").read_text()) for i in (0, 1)]
    for process_id, record in enumerate(records):
        assert record["process_index"] == process_id
        assert (record["process_count"], record["device_count"]) == (2, 4)
        assert record["local_device_count"] == 2
    _check_training(tmp_path)
    _check_evaluation(tmp_path, records, single["trained"])


def _preempt_one_process(
    root: Path, data_dir: str, run_dir: Path, ready, extra_args=()
) -> tuple[list, str]:
    """Runs a 2-process job for up to 400 steps (only the last a scheduled save); once
    `ready()`, sends SIGTERM to process 1 only, as a scheduler's preemption notice.

    Returns the processes' exit statuses and their logs, once both have exited.
    """
    port = _free_port()
    args = ["train", "--data_dir", data_dir, "--timeout", str(WORKER_TIMEOUT_S - 10)]
    args += ["--workdir", str(run_dir), "--out", str(root), "--num_epochs", "200"]
    args += ["--checkpoint_every_steps", "100000", "--coordinator_address", f"127.0.0.1:{port}"]
    args += ["--num_processes", "2", *extra_args]
    env = _worker_env(root, JAX_COORDINATOR_BIND_ADDRESS=f"127.0.0.1:{port}", PYTHONUNBUFFERED="1")
    started = {}
    try:
        for process_id in range(2):
            log = root / f"process{process_id}.log"
            process = _start([*args, "--process_id", str(process_id)], log, devices=1, env=env)
            started[process_id] = (process, log)
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        while time.monotonic() < deadline and all(p.poll() is None for p, _ in started.values()):
            if ready():
                started[1][0].send_signal(signal.SIGTERM)
                break
            time.sleep(0.01)
        while time.monotonic() < deadline and any(p.poll() is None for p, _ in started.values()):
            time.sleep(0.1)
    finally:
        _kill(started)
    logs = "\n".join(f"--- {i} ---\n{log.read_text()[-3000:]}" for i, (_, log) in started.items())
    return [process.returncode for process, _ in started.values()], logs


@pytest.mark.slow
def test_sigterm_to_one_process_stops_the_job_after_one_step_saved_by_all(tmp_path):
    data_dir = str(tmp_path / "tfds")
    pipeline.get_dataset_info(worker.tiny_config(data_dir).data)
    run_dir, metrics = tmp_path / "run", tmp_path / "run" / "metrics.jsonl"

    def stopped_at() -> int:
        steps = {
            json.loads((tmp_path / f"process{i}.json").read_text())["stopped_at"] for i in (0, 1)
        }
        assert len(steps) == 1, steps  # the same step in both processes
        return steps.pop()

    def logged_steps() -> list[int]:
        return [r["step"] for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r]

    def two_steps_logged():
        return metrics.exists() and len(metrics.read_text().splitlines()) >= 2

    exit_statuses, logs = _preempt_one_process(tmp_path, data_dir, run_dir, two_steps_logged)
    assert exit_statuses == [143, 143], logs
    step = stopped_at()
    assert 2 <= step < 400, logs
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [str(step)]
    assert logged_steps() == list(range(1, step + 1))

    # Resumed, and preempted while it initializes the model (held for 5 s), before it
    # restores the checkpoint and compiles. JAX's preemption service counts steps from 0:
    # unless the job has reported the step it resumes from by then, it agrees on step 1,
    # which the job never reaches, and the job trains on to the end.
    log1 = tmp_path / "process1.log"

    def initializing():
        return "Initializing." in log1.read_text()

    hold = ["--hold_initialization", "5"]
    exit_statuses, logs = _preempt_one_process(tmp_path, data_dir, run_dir, initializing, hold)
    assert exit_statuses == [143, 143], logs
    resumed_step = stopped_at()
    assert step < resumed_step < 400, logs
    assert sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir()) == [step, resumed_step]
    assert logged_steps() == list(range(1, resumed_step + 1))


def _check_training(root: Path) -> None:
    """The job's checkpoints and logged losses match the single-process run's."""
    initial = _load_npz(root / "single" / "initial.npz")
    for step in (1, 2):
        multi = _checkpointed(root / "multi_run", step)
        single = _checkpointed(root / "single_run", step)
        _assert_same_training(multi, single, initial, JOB_TOLERANCE)

    def losses(workdir):
        lines = (workdir / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["loss"]) for r in map(json.loads, lines) if "loss" in r]

    # Process 1 wrote nothing: each step is logged once, and progress printed once.
    multi, expected = losses(root / "multi_run"), losses(root / "single_run")
    assert [step for step, _ in multi] == [1, 2]
    # Step 1's loss is of the same parameters (only sums in another order); step 2's is of
    # parameters that already differ by that rounding (see above): 3e-5 apart was seen.
    np.testing.assert_allclose(multi[0][1], expected[0][1], rtol=1e-5)
    np.testing.assert_allclose(multi[1][1], expected[1][1], rtol=1e-3)
    assert "test mAP" in (root / "process0.log").read_text()
    assert "test mAP" not in (root / "process1.log").read_text()


def _positives_per_class(config) -> list[int]:
    """Non-difficult objects per class in the test split, counted from TFDS itself."""
    counts = np.zeros(config.model.num_classes, int)
    for example in tiny.stored_split(config.data, "test"):
        objects = example["objects"]
        np.add.at(counts, np.asarray(objects["label"])[~np.asarray(objects["is_difficult"])], 1)
    return counts.tolist()


def _assert_same_evaluation(actual: dict, expected: dict) -> None:
    for key in ("num_images", "num_positives", "num_detections"):
        assert actual[key] == expected[key], key
    for key in ("mAP", "mAP_area", "AP", "AP_area"):
        assert actual[key] == pytest.approx(expected[key], abs=1e-6, nan_ok=True), key
    assert actual["loss"] == pytest.approx(expected["loss"], rel=1e-5)  # of the same images


def _voc_results(folder: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """``{file name: [(image id, [score, xmin, ymin, xmax, ymax])]}`` sorted by id, then
    box (one image's order would follow scores, which rounding can swap)."""
    files = {}
    for path in sorted(folder.iterdir()):
        lines = [line.split() for line in path.read_text().splitlines()]
        files[path.name] = sorted(
            ((image_id, np.array(numbers, float)) for image_id, *numbers in lines),
            key=lambda line: (line[0], *np.round(line[1][1:], 1)),
        )
    return files


def _check_evaluation(root: Path, records: list[dict], single: dict) -> None:
    """Both processes computed one result over the whole test set, each image once."""
    # The loop's evaluation after the last step, and evaluate.py's after both processes
    # restored the checkpoint: one result, from the gathered detections, in both.
    assert records[0]["trained"] == records[1]["trained"]
    assert records[0]["evaluated"] == records[1]["evaluated"]
    multi = records[0]["evaluated"]
    assert multi["step"] == 2
    _assert_same_evaluation(records[0]["trained"], multi)
    assert (root / "multi_run" / "eval" / "metrics.json").exists()  # written by process 0

    # The same checkpoint evaluated here, by one process on one device.
    config = worker.tiny_config(str(root / "tfds"))
    reference = eval_lib.evaluate_checkpoint(
        config, str(root / "multi_run"), voc_results_folder=root / "voc_results"
    )
    _assert_same_evaluation(multi, reference)
    # evaluate.py --voc_results: the job's process 0 wrote each image's detections under
    # its name, as one process does (scores and boxes to rounding).
    multi_files = _voc_results(root / "multi" / "voc_results")
    assert multi_files.keys() == _voc_results(root / "voc_results").keys()
    assert sum(map(len, multi_files.values())) == multi["num_detections"] > 0
    for name, single_lines in _voc_results(root / "voc_results").items():
        assert [line[0] for line in multi_files[name]] == [line[0] for line in single_lines]
        np.testing.assert_allclose(
            [line[1] for line in multi_files[name]], [line[1] for line in single_lines], atol=1e-4
        )
    # The trained model scores 0 (its boxes are too small to match anything): the same
    # checkpoint with boxes that do match, evaluated by both processes and by this one.
    assert records[0]["known"] == records[1]["known"]
    _, state, _ = train_lib.restore_trained_state(config, str(root / "multi_run"))
    known = worker.evaluate_known_outputs(config, state)
    assert known["mAP"] > 0.01
    for key in ("num_images", "num_positives", "num_detections"):
        assert records[0]["known"][key] == known[key], key
    # Scores computed on 2 devices and on 1 may differ by rounding, which can swap two
    # nearly equal ones; any image's detections scored against another's annotations would
    # move the mAP by far more.
    for key in ("mAP", "mAP_area"):
        assert records[0]["known"][key] == pytest.approx(known[key], abs=2e-3), key
    assert multi["num_images"] == worker.NUM_TEST
    assert multi["num_positives"] == _positives_per_class(config)
    # max_detections is above the number of candidates: the count is the model's, per image.
    assert 0 < multi["num_detections"] < worker.NUM_TEST * config.eval.max_detections

    # The single-process run (whose parameters differ by rounding) saw the same images.
    assert single["num_images"] == multi["num_images"]
    assert single["num_positives"] == multi["num_positives"]


def test_batch_size_that_does_not_split_names_what_to_change(monkeypatch, tmp_path):
    monkeypatch.setattr(jax, "process_count", lambda: 1)
    monkeypatch.setattr(jax, "local_device_count", lambda: 4)
    monkeypatch.setattr(jax, "device_count", lambda: 4)
    distributed.check_batch_size(8, "config.train.batch_size")  # 2 per device
    config = worker.tiny_config(str(tmp_path / "never_read"))
    config.train.batch_size = 6
    with pytest.raises(ValueError) as error:
        trainer.train_and_evaluate(config, str(tmp_path / "run"))
    message = str(error.value)
    assert "config.train.batch_size=6" in message
    assert "4 devices" in message
    assert "--config.train.batch_size=8" in message
    assert "nearest: 4 or 8" in message
    assert "3 device(s) per process" in message  # 6 = 3 × 2
    assert not (tmp_path / "never_read").exists()  # raised before preparing any data

    # 2 processes × 2 devices: the eval batch is checked too.
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "local_device_count", lambda: 2)
    config.train.batch_size = 8
    config.eval.batch_size = 2
    with pytest.raises(
        ValueError, match=r"config\.eval\.batch_size=2 .*\(2 process\(es\) x 2 local"
    ):
        trainer.train_and_evaluate(config, str(tmp_path / "run"))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"coordinator_address": "127.0.0.1:1234"}, "given: --coordinator_address"),
        ({"num_processes": 2, "process_id": 0}, "needs --coordinator_address"),
        ({"coordinator_address": "localhost", "num_processes": 2, "process_id": 0}, "host:port"),
        ({"coordinator_address": "h:1", "num_processes": 2, "process_id": 2}, r"\[0, num_pro"),
        ({"coordinator_address": "h:1", "num_processes": 0, "process_id": 0}, "num_processes"),
        ({"auto_detect": True, "cpu_collectives": "nccl"}, "cpu_collectives"),
    ],
)
def test_initialize_rejects_incomplete_or_inconsistent_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        distributed.initialize(**kwargs)
