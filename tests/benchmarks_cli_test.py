"""The benchmark scripts refuse a setting that would print a table of nonsense (NaN rates, a
division by zero, a traceback) with one line naming the flag, and the input pipeline's
table says whether training would be input-bound."""

import functools
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from benchmarks import common

REPO = Path(__file__).resolve().parents[1]


def _benchmark(*args: str) -> subprocess.CompletedProcess:
    return _python("-m", *args)


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env={**os.environ, "YOLOJAX_HUGE_PAGES": "0", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        # Every figure was NaN, with status 0.
        (["train_step", "--rounds", "0"], "argument --rounds: must be at least 1, got 0"),
        # An IndexError traceback.
        (["inference", "--batch", "0"], "argument --batch: must be at least 1, got 0"),
        # OSError from sched_setaffinity.
        (["evaluator", "--cpu", "4096"], "--cpu 4096 is not a core this process may run on"),
        (["predict", "--threads", "0,x"], "argument --threads: wants counts such as 0,2"),
        (["kernel_profile", "no/such/trace", "--steps", "2"], "no such trace file or folder"),
        # A FileNotFoundError traceback: a folder without a trace.
        (["kernel_profile", "configs", "--steps", "2"], "No plugins/profile/*/*.xplane.pb under"),
        # Timed on the main config's batch, of another size, under the new size's name.
        (
            ["train_step", "--compare-config", "data.image_size=128"],
            "data.image_size shapes the batch that the compared steps share (made for the main "
            "config): time each value in a run of its own (--image-size)",
        ),
        # Per-step figures off by the ratio, without a word.
        (["kernel_profile", "no/such/trace", "--steps", "2", "--step-ms", "1"], "gives 1 times"),
        # A ZeroDivisionError once the dataset was prepared: 2 batches, both untimed.
        (
            ["input_pipeline", "--voc-images", "8", "--batch-size", "4"],
            "--voc-images 8: the evaluation times the test split's batches after 2 untimed "
            "ones; give at least 12",
        ),
    ],
)
def test_a_setting_without_meaning_is_one_line_naming_the_flag(args, message):
    done = _benchmark(f"benchmarks.{args[0]}", *args[1:])
    assert done.returncode == 2, done.stderr
    assert message in done.stderr.splitlines()[-1], done.stderr
    assert "Traceback" not in done.stderr


def test_the_input_pipeline_says_how_many_times_the_step_it_feeds():
    given = 40.0  # images/s of a train step, as benchmarks.train_step prints it
    done = _benchmark(
        "benchmarks.input_pipeline",
        *("--voc-images", "12", "--batch-size", "4", "--batches", "3", "--warmup", "1"),
        *("--image-size", "64", "--step-images-per-s", str(given)),
    )
    assert done.returncode == 0, done.stderr
    assert "oneDNN custom operations" not in done.stderr  # TensorFlow's start-up notice
    # The output is the table: the datasets' preparation lines go to stderr.
    assert re.match(r"\d+ cores, image size 64, ", done.stdout.lstrip()), done.stdout
    lines = [line for line in done.stdout.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[-1] == "× the step's 40 images/s"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[:2] for row in rows] == [
        ["voc", "train"],
        ["voc", "eval"],
        ["synthetic_shapes", "train"],
        ["synthetic_shapes", "eval"],
    ]
    for _, kind, rate, *_, times in rows:
        if kind == "eval":
            assert times == ""
            continue
        ratio = float(re.fullmatch(r"([\d.]+)× \((?:not )?input-bound\)", times).group(1))
        assert ratio == pytest.approx(float(rate) / given, abs=0.5 / given + 0.005)
        assert times.endswith("(not input-bound)") == (ratio >= 1)


def test_the_pipelines_eval_rate_counts_the_real_images_not_the_padding(monkeypatch):
    # 25 test images in batches of 8: the last holds 1 and 7 padding examples, which the
    # rate counted (32 images, 1.28x too many).
    from benchmarks import input_pipeline

    clock = iter([0.0, 2.0])  # 2 s between the first and the last batch
    monkeypatch.setattr(input_pipeline.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(input_pipeline.time, "process_time", lambda: 0.0)
    last = {"valid": np.array([[True] + [False] * 7])}
    batches = iter([{"valid": np.ones((1, 8), bool)}] * 4 + [last])
    rate, _ = input_pipeline.throughput(batches, batch_size=8, warmup=1, batches=None)
    assert rate == 25 / 2


@pytest.mark.parametrize("load, busy", [(0.2, False), (0.9, False), (1.0, True), (3.5, True)])
def test_a_busy_cpu_is_named_before_its_figures(load, busy, monkeypatch):
    # Under contention PyTorch's threads slow down far more than XLA's: a ratio taken then
    # is the other work's, and the run must say so.
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    warning = common.busy_machine_warning()
    assert (warning is not None) == busy
    if busy:
        assert f"load average is {load:.2f} on 2 cores" in warning


@pytest.mark.parametrize(
    "name, flag_help",
    [
        (
            "conv",
            "--image-size IMAGE_SIZE input side, pixels: darknet_tiny's layers at any "
            "(default 112), resnet50's at 224 --batch",
        ),
        ("inference", "head for all (default: the one each backbone trains with) --image-size"),
        ("kernel_profile", "wall time (default: their sum is the kernels' span) --gflop"),
    ],
)
def test_a_benchmarks_help_names_its_command_and_one_default_a_flag(name, flag_help):
    # The usage line read `conv.py`, which does not run as a file; a flag without a default
    # said what it does then, followed by "(default: None)".
    if name == "conv":  # it times PyTorch's convolutions beside JAX's
        pytest.importorskip("torch", reason="needs the `port` extra (torch)")
    done = _benchmark(f"benchmarks.{name}", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m benchmarks.{name} "), done.stdout
    text = " ".join(done.stdout.split())
    assert flag_help in text, text
    assert "(default: None)" not in text


@pytest.mark.parametrize("backbone", ["darknet_tiny", "resnet18"])
def test_inference_times_the_model_the_configs_train(backbone):
    # darknet_tiny was timed as a 20-class model with the default 4 × 256 conv head: 3.4 M
    # parameters, where configs/shapes.py's has 1.4 M.
    import jax

    from benchmarks import inference
    from configs import shapes, voc
    from yolojax import train_lib

    config = shapes.get_config() if backbone == "darknet_tiny" else voc.get_config(backbone)
    config.model.pretrained, config.data.image_size = "", 112
    _, trained, _ = train_lib.initial_state(config, config.train.batch_size)
    _, variables, _ = inference.random_model(backbone, config.model.head, 112, "float32")
    shapes_of = functools.partial(jax.tree.map, lambda array: array.shape)
    assert shapes_of(variables["params"]) == shapes_of(trained.params)


def test_the_predict_benchmark_draws_the_most_boxes_the_nms_keeps():
    # configs/shapes.py's model at random weights scored no box at all: the drawing threads
    # were timed drawing nothing.
    from benchmarks import inference, predict

    head = inference.default_head("darknet_tiny")
    model, variables, config = inference.random_model("darknet_tiny", head, 64, "float32")
    variables = predict._scoring_every_box(variables, head)
    detector = inference.make_detector(model, variables, config, 64, score_threshold=0.0)
    photo = np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)
    assert len(detector(photo).boxes) == detector.config.eval.max_detections == 100


# `python -m benchmarks.<name>`, interrupted (a Ctrl-C) as its main starts, with an atexit
# handler that says whether the interpreter's shutdown ran.
_INTERRUPTED_AS_IT_STARTS = textwrap.dedent(
    """
    import atexit, runpy, sys
    from benchmarks import common

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    atexit.register(print, "shut down", flush=True)
    common.argument_parser = ctrl_c
    sys.argv = [sys.argv[1]]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    """
)


@pytest.mark.parametrize("name", ["evaluator", "input_pipeline", "train_step"])
def test_a_ctrl_c_ends_a_benchmark_at_once_and_says_so(name):
    # A traceback, and a shutdown of 2.5-4.8 s (a segmentation fault once in 3, when the
    # Ctrl-C came while the step compiled: the shutdown freed the devices under XLA's thread).
    done = _python("-c", _INTERRUPTED_AS_IT_STARTS, f"benchmarks.{name}")
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "Interrupted.\n")
