"""Wrong inputs to the public API are a ValueError naming the argument and what was expected.

Each module's own tests cover its first checks (wrong box shapes, unknown names, mismatched
loss targets...); these are the remaining ones: non-integer or non-positive sizes, batch
arguments that disagree, unnormalized images, bad config values, and how the command-line
tools report such errors.
"""

import functools
import logging
import os
import re
import signal
import subprocess
import sys
import types
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from configs import shapes
from tests import tiny
from yolojax import (
    boxes,
    checkpoints,
    cli,
    command_flags,
    errors,
    losses,
    models,
    postprocess,
    preemption,
    pretrained,
    targets,
    train_lib,
    trainer,
)
from yolojax.config import validate_config
from yolojax.data import pipeline
from yolojax.detector import Detector

REPO = Path(__file__).resolve().parents[1]

C, B, S = 3, 2, 4  # classes, boxes per cell, grid


def _outputs(n=1):
    return jnp.zeros((n, S, S, C + 5 * B))


@pytest.mark.parametrize("grid_size", [0, -3, 4.0, True])
def test_encode_sizes_must_be_positive_integers(grid_size):
    one = (jnp.zeros((2, 4)), jnp.zeros(2, int), jnp.ones(2, bool))
    with pytest.raises(ValueError, match="grid_size"):
        targets.encode(*one, grid_size=grid_size, num_classes=C)
    with pytest.raises(ValueError, match="num_classes"):
        targets.encode(*one, grid_size=S, num_classes=float(C))
    batch = [x[None] for x in one]
    with pytest.raises(ValueError, match="grid_size"):
        targets.encode_batch(*batch, grid_size=grid_size, num_classes=C)


def test_encode_batch_names_the_argument_that_disagrees_with_boxes():
    boxes_ = jnp.zeros((2, 5, 4))
    labels, mask = jnp.zeros((2, 5), int), jnp.ones((2, 5), bool)
    kwargs = dict(grid_size=S, num_classes=C)
    with pytest.raises(ValueError, match=r"labels must have shape \(N, max_boxes\) = \(2, 5\)"):
        targets.encode_batch(boxes_, labels[:1], mask, **kwargs)
    with pytest.raises(ValueError, match=r"mask must have shape"):
        targets.encode_batch(boxes_, labels, mask[:, 0], **kwargs)
    with pytest.raises(ValueError, match=r"boxes must have shape \(N, max_boxes, 4\)"):
        targets.encode_batch(boxes_[..., :3], labels, mask, **kwargs)


def test_loss_and_detect_need_positive_integer_class_and_box_counts():
    grid = jnp.zeros((1, S, S, C + 5))
    with pytest.raises(ValueError, match="num_classes"):
        losses.yolo_loss(_outputs(), grid, num_classes=float(C))
    with pytest.raises(ValueError, match="num_boxes"):
        losses.yolo_loss(jnp.zeros((1, S, S, C)), grid, num_classes=C, num_boxes=0)
    with pytest.raises(ValueError, match="num_classes"):
        postprocess.detect(_outputs(), num_classes=0, num_boxes=B + 2)
    with pytest.raises(ValueError, match="num_boxes"):
        postprocess.detect(jnp.zeros((1, S, S, C)), num_classes=C, num_boxes=0)


@pytest.mark.parametrize(
    "name, value",
    [
        ("max_detections", -1),
        ("max_detections", 2.5),
        ("pre_nms_top_k", 0),
        ("score_threshold", float("nan")),
        ("score_threshold", "0.1"),
        ("score_threshold", None),
        ("score_threshold", jnp.array(1.5)),  # a concrete array is checked like a number
        ("iou_threshold", 1.5),
    ],
)
def test_detect_and_nms_name_a_bad_setting(name, value):
    with pytest.raises(ValueError, match=name):
        postprocess.detect(_outputs(), num_classes=C, num_boxes=B, **{name: value})
    settings = dict(score_threshold=0.1, iou_threshold=0.5, max_detections=5) | {name: value}
    with pytest.raises(ValueError, match=name):
        postprocess.nms(jnp.zeros((6, 4)), jnp.zeros((6, C)), **settings)


def test_a_threshold_traced_under_jit_is_taken_as_given():
    # Two one-cell boxes of class 0 in cells (0, 0) and (1, 1) (touching at a corner: IoU 0),
    # scored 0.3 and 0.6: confidence × class probability 1. Layout [C classes, B × (conf,
    # x, y, w, h)].
    outputs = np.zeros((1, S, S, C + 5 * B), np.float32)
    for cell, confidence in (((0, 0), 0.3), ((1, 1), 0.6)):
        outputs[(0, *cell, 0)] = 1.0
        outputs[(0, *cell)][C : C + 5] = [confidence, 0.5, 0.5, 1.0, 1.0]

    def count(threshold):
        return postprocess.detect(
            outputs, num_classes=C, num_boxes=B, score_threshold=threshold
        ).valid.sum()

    assert [int(jax.jit(count)(t)) for t in (0.1, 0.5, 0.7)] == [2, 1, 0]


def test_nms_takes_one_image_with_a_score_row_per_box():
    settings = dict(score_threshold=0.1, iou_threshold=0.5, max_detections=5)
    with pytest.raises(ValueError, match=r"scores must have one row per box, shape \(6, C\)"):
        postprocess.nms(jnp.zeros((6, 4)), jnp.zeros((5, C)), **settings)
    with pytest.raises(ValueError, match="Use detect for a batch"):
        postprocess.nms(jnp.zeros((2, 6, 4)), jnp.zeros((2, 6, C)), **settings)


def test_box_functions_take_lists_and_name_shapes_that_do_not_broadcast():
    # A list is read as NumPy (NumPy out): area of a 2 x 3 box.
    area = boxes.box_area([[0.0, 0.0, 2.0, 3.0]])
    assert isinstance(area, np.ndarray) and area.tolist() == [6.0]
    with pytest.raises(ValueError, match=r"boxes1 \(2, 4\) and boxes2 \(3, 4\) do not broadcast"):
        boxes.elementwise_iou(np.zeros((2, 4)), np.zeros((3, 4)))


def _model_config(**fields):
    return types.SimpleNamespace(
        **{"backbone": "darknet_tiny", "head_channels": 16, "head_conv_layers": 1} | fields
    )


@pytest.mark.parametrize(
    "fields, name",
    [
        ({"num_groups": 0, "backbone": "darknet_gn"}, r"^model_config\.num_groups"),
        ({"dropout_rate": "0.5"}, r"^model_config\.dropout_rate must be a finite number"),
        ({"grid_size": -7}, r"^model_config\.grid_size"),
        ({"num_boxes": 2.0}, r"^model_config\.num_boxes"),
        ({"head": "mlp"}, r"^model_config\.head must be one of \('fc', 'seed', 'conv'\)"),
    ],
)
def test_get_model_names_a_bad_field(fields, name):
    with pytest.raises(ValueError, match=name):
        models.get_model(_model_config(**fields))


def test_get_model_reads_a_plain_dict_with_numpy_integers():
    model = models.get_model(
        {"backbone": "darknet_tiny", "num_classes": np.int64(C), "grid_size": S}
    )
    assert (model.num_classes, model.grid_size) == (C, S)


def test_get_model_names_a_misspelled_field_instead_of_leaving_its_default():
    with pytest.raises(ValueError, match=r"no field 'num_boxs'\. Did you mean 'num_boxes'"):
        models.get_model({"backbone": "darknet_tiny", "num_boxs": 3})
    config = shapes.get_config()
    # A config is locked: the misspelt field fails where it is set, in Python too (it was a
    # field of its own, which training ignored and a run's saved config.json then refused).
    with pytest.raises(AttributeError, match=r'Did you mean "batch_size" instead of "bach_'):
        config.train.bach_size = 8
    config.model.unlock()  # and an unlocked one fails when the model is built
    config.model.grid = 5
    with pytest.raises(ValueError, match=r"no field 'grid'\. Did you mean 'grid_size'"):
        models.get_model(config.model)
    # Any object with the fields: its attributes are checked as well.
    namespace = types.SimpleNamespace(backbone="darknet_tiny", num_clases=3)
    with pytest.raises(ValueError, match=r"no field 'num_clases'\. Did you mean 'num_classes'"):
        models.get_model(namespace)


def test_encode_rejects_float_labels_that_would_encode_no_class():
    with pytest.raises(ValueError, match="labels must be integer class ids; got dtype float32"):
        targets.encode(
            jnp.array([[0.1, 0.1, 0.5, 0.5]]),
            jnp.array([1.0]),
            jnp.ones(1, bool),
            grid_size=S,
            num_classes=C,
        )


def test_decode_names_its_own_argument_and_the_loss_needs_an_image():
    with pytest.raises(ValueError, match="outputs have 13 channels, expected C \\+ 5B = 14"):
        postprocess.decode(jnp.zeros((1, S, S, 13)), num_classes=4, num_boxes=B)
    with pytest.raises(ValueError, match="at least one image; got a batch of 0"):
        losses.yolo_loss(_outputs(0), jnp.zeros((0, S, S, C + 5)), num_classes=C)


@pytest.mark.parametrize(
    "images, message",
    [
        (jnp.zeros((64, 64, 3)), r"\(N, H, W, 3\) NHWC"),  # one image without its batch axis
        (jnp.zeros((1, 64, 64, 3), jnp.uint8), "normalized floats"),  # raw pixels
        # Raw pixels as floats, and pixels gone bad: known outside jit, so refused.
        (jnp.full((1, 64, 64, 3), 200.0), r"normalized as in training, got values up to 200 "),
        (jnp.full((1, 64, 64, 3), jnp.nan), "images hold NaN or infinite values"),
    ],
)
def test_model_rejects_images_it_cannot_take(images, message):
    model = models.get_model(_model_config())
    with pytest.raises(ValueError, match=message):
        model.init(jax.random.key(0), images, train=False)


def test_normalized_images_pass_and_values_under_jit_are_taken_as_given():
    model = models.get_model(_model_config())
    imagenet_white = jnp.full((1, 64, 64, 3), (1 - 0.406) / 0.225)  # the largest normalized
    variables = model.init(jax.random.key(0), imagenet_white, train=False)
    raw = jnp.full((1, 64, 64, 3), 200.0)
    outputs = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, raw)
    assert outputs.shape == (1, 7, 7, 20 + 5 * 2) and jnp.isfinite(outputs).all()


@pytest.mark.parametrize(
    "box, advice",
    [
        ([-0.2, 0.1, 0.5, 0.5], r"Clip boxes that reach past the image: np\.clip\(boxes, 0, 1\)"),
        ([10.0, 20.0, 200.0, 300.0], r"Pixel xyxy boxes convert with yolojax\.pixel_xyxy"),
    ],
)
def test_encode_advice_follows_how_far_boxes_are_outside(box, advice):
    with pytest.raises(ValueError, match=r"value outside \[0, 1\].*" + advice):
        targets.encode(
            jnp.array([box]), jnp.array([1]), jnp.ones(1, bool), grid_size=S, num_classes=C
        )


def test_encode_refuses_a_mask_of_other_numbers_than_0_and_1():
    boxes, labels = jnp.array([[0.1, 0.1, 0.5, 0.5]] * 2), jnp.array([1, 2])
    with pytest.raises(ValueError, match=r"mask must be bool or 0/1, got values \[0 2\]"):
        targets.encode(boxes, labels, jnp.array([2, 0]), grid_size=S, num_classes=C)
    as_bools = targets.encode(boxes, labels, jnp.array([True, False]), grid_size=S, num_classes=C)
    for numbers in (jnp.array([1, 0]), jnp.array([1.0, 0.0])):  # as encode took them before
        as_numbers = targets.encode(boxes, labels, numbers, grid_size=S, num_classes=C)
        np.testing.assert_array_equal(as_numbers, as_bools)
    with pytest.raises(ValueError, match=r"mask must be bool or 0/1, got values \[0\. +0\.5\]"):
        targets.encode(boxes, labels, jnp.array([0.5, 0.0]), grid_size=S, num_classes=C)


def test_yolo_built_directly_checks_its_sizes():
    model = models.YOLO(backbone=models.get_classifier("darknet_tiny"), grid_size=0)
    with pytest.raises(ValueError, match="YOLO: grid_size must be a positive int"):
        model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False)


@pytest.mark.parametrize(
    "section, field, value, name",
    [
        # The model's fields are named as the user sets them: config.model.<field>.
        ("model", "backbone", "resnet200", r"^config\.model\.backbone must be one of"),
        ("model", "grid_size", -7, r"^config\.model\.grid_size"),
        ("model", "grid_size", True, r"^config\.model\.grid_size"),  # a bool is no size
        ("model", "fc_hidden", 0, r"^config\.model\.fc_hidden must be a positive integer"),
        ("model", "head_conv_layers", True, r"^config\.model\.head_conv_layers must be an int"),
        ("model", "num_classes", True, r"^config\.model\.num_classes"),
        ("eval", "score_threshold", -0.01, r"config.eval.score_threshold must be in \[0, 1\]"),
        ("model", "num_classes", -1, "model.num_classes"),
        ("train", "batch_size", 0, "train.batch_size"),
        ("train", "num_epochs", 0, "train.num_epochs"),
        # The data's fields too (refused only as the data opened, after the model's checks).
        ("data", "image_size", 8, r"^config\.data\.image_size must be an int >= 16; got 8"),
        ("model", "grid_size", 200, r"data.image_size \(112\) must be at least"),
        ("data", "max_boxes", 0, r"^config\.data\.max_boxes must be an int >= 1"),
        # Used only after the dataset is prepared, or epochs into training: checked at start.
        ("train", "checkpoint_every_steps", 0, "train.checkpoint_every_steps"),
        ("train", "log_every_steps", 0, "train.log_every_steps"),
        ("eval", "max_detections", 0, "eval.max_detections"),
        ("eval", "pre_nms_top_k", -1, "eval.pre_nms_top_k"),
        ("model", "dropout_rate", 1.5, r"^config\.model\.dropout_rate must be .* < 1; got 1.5"),
        ("train", "lr_drop_factors", (0.1,), "lr_drop_epochs and .*lr_drop_factors"),
        # Real-valued fields: a sign or a range that no recipe has, and NaN.
        ("train", "learning_rate", -1.0, r"train.learning_rate must be a finite number > 0"),
        ("train", "learning_rate", float("nan"), r"train.learning_rate .*; got nan"),
        ("train", "num_epochs", float("inf"), r"train.num_epochs .*; got inf"),
        ("train", "momentum", 1.0, r"train.momentum must be a finite number >= 0 and < 1"),
        ("train", "weight_decay", -5e-4, r"train.weight_decay must be a finite number >= 0"),
        ("train", "warmup_start_factor", 2.0, r"warmup_start_factor .* and <= 1; got 2.0"),
        ("train", "lr_drop_epochs", (-1.0, 10.0), r"train.lr_drop_epochs\[0\] .* >= 0"),
        ("train", "lr_drop_factors", (0.1, 0.0), r"train.lr_drop_factors\[1\] .* > 0"),
        ("train", "grad_clip_norm", -1.0, "train.grad_clip_norm"),
        ("train", "keep_checkpoints", 0, "train.keep_checkpoints must be a positive integer"),
        ("eval", "every_epochs", -5, "eval.every_epochs"),
        ("eval", "train_subset", -1, "eval.train_subset must be an int >= 0"),
        ("loss", "lambda_noobj", -0.5, "loss.lambda_noobj"),
    ],
)
def test_config_values_are_checked_by_name(section, field, value, name):
    config = shapes.get_config()
    config.train.schedule = "piecewise"  # where lr_drop_* are used
    config[section][field] = value
    with pytest.raises(ValueError, match=name):
        validate_config(config)


def _builds_at(model, size: int) -> bool:
    try:
        init = functools.partial(model.init, train=False)
        jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, size, size, 3)))
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("backbone", ["darknet", "resnet18", "vgg16"])
def test_an_image_size_too_small_for_the_backbone_is_refused_at_start(backbone):
    # The model refused it only when it first ran, after the dataset was prepared (minutes
    # for VOC), and train.py --print_config passed it.
    config = shapes.get_config()
    config.model.backbone = backbone
    model = models.get_model(config.model)
    smallest = next(size for size in range(16, 64) if _builds_at(model, size))
    assert smallest > 16  # the data's own minimum: the backbone's is the one checked here
    config.data.image_size = smallest
    validate_config(config)
    config.data.image_size = smallest - 1
    with pytest.raises(
        ValueError,
        match=rf"^config\.data\.image_size \({smallest - 1}\) must be at least {smallest} for "
        rf"config\.model\.backbone='{backbone}': a smaller image leaves its feature map empty",
    ):
        validate_config(config)


def test_detector_settings_are_checked_before_anything_is_read(tmp_path):
    # The workdir does not exist: the argument is checked first.
    with pytest.raises(ValueError, match="checkpoint must be 'latest', 'best' or a step"):
        Detector.from_workdir(tmp_path / "missing", checkpoint="lates")
    with pytest.raises(ValueError, match=r"score_threshold must be in \[0, 1\]"):
        Detector.from_workdir(tmp_path / "missing", config=shapes.get_config(), score_threshold=25)
    # A NumPy number is a number: the error is about the missing workdir, not the threshold.
    with pytest.raises(FileNotFoundError, match=r"The workdir .*missing does not exist"):
        Detector.from_workdir(tmp_path / "missing", score_threshold=np.float32(0.3))


def test_commands_print_a_documented_error_alone_and_exit_1(capsys, monkeypatch):
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_info, cli.command_errors():
        raise checkpoints.NoCheckpointError("No checkpoint in runs/x/checkpoints: train first.")
    assert exit_info.value.code == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith("Error: NoCheckpointError: No checkpoint in runs/x/checkpoints")
    assert "Traceback" not in stderr and "docs/troubleshooting.md" in stderr
    # What the machine refused where yolojax writes (a full disk, a read-only folder) too.
    with pytest.raises(SystemExit) as exit_info, cli.command_errors():
        raise errors.MachineError("Cannot write the run's files in runs/x (No space left)")
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.startswith(
        "Error: MachineError: Cannot write the run's files in runs/x (No space left)\n"
    )
    # Another OSError (a connection, a library that does not load) keeps its traceback.
    with pytest.raises(ConnectionResetError), cli.command_errors():
        raise ConnectionResetError("the coordinator went away")

    # An error that is a bug, not the user's, goes through with its traceback; so does any
    # error on request.
    with pytest.raises(KeyError), cli.command_errors():
        raise KeyError("a bug")
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    with pytest.raises(checkpoints.NoCheckpointError), cli.command_errors():
        raise checkpoints.NoCheckpointError("again")


def test_commands_print_yolojax_notices_as_a_plain_line(recwarn):
    # Python shows a warning as warnings.formatwarning formats it (pytest records them, so
    # the format is checked directly).
    ours = ("Moved the checkpoint aside.", errors.Notice, "/anywhere/contextlib.py", 9)
    theirs = ("from elsewhere", UserWarning, np.__file__, 7, "")
    python_format = warnings.formatwarning(*theirs)
    with cli.command_errors():
        # Whatever line the warning points at (the stack level can land in contextlib).
        assert warnings.formatwarning(*ours) == "Warning: Moved the checkpoint aside.\n"
        assert warnings.formatwarning(*theirs) == python_format  # other warnings as Python's
        numpy_in_ours = ("invalid value", RuntimeWarning, checkpoints.__file__, 9, "")
        assert warnings.formatwarning(*numpy_in_ours).startswith(f"{checkpoints.__file__}:9:")
    assert warnings.formatwarning(*ours).startswith("/anywhere/contextlib.py:9: Notice")
    # The library's notices are of that category: here, a background job's ignored Ctrl-C.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with preemption.StopSignals():
            pass
    finally:
        signal.signal(signal.SIGINT, previous)
    assert [w.category for w in recwarn] == [errors.Notice]


def test_a_finished_command_exits_0_on_a_signal_during_shutdown():
    # What train.py and cli.run do once a command's work is done: SIGTERM and Ctrl-C during
    # the rest, the interpreter's shutdown included, leave the exit status 0, not 143 (a
    # preemption to a scheduler). They are ignored, not handled: Python puts back the
    # default action of every signal it handles early in its shutdown.
    code = (
        "import os, signal\n"
        "from yolojax import cli\n"
        "cli.ignore_stop_signals()\n"
        "assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN\n"
        "assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
    )
    finished = subprocess.run([sys.executable, "-c", code], timeout=60, cwd=REPO)
    assert finished.returncode == 0


def test_ctrl_c_exits_130_without_a_traceback(capsys):
    with pytest.raises(SystemExit) as exit_info, cli.command_errors():
        raise KeyboardInterrupt
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "Interrupted.\n"
    # The trainer's account of it (where to resume from) is printed instead, once.
    with pytest.raises(SystemExit) as exit_info, cli.command_errors():
        raise KeyboardInterrupt("Interrupted. The last checkpoint, step 2, is in DIR.")
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "Interrupted. The last checkpoint, step 2, is in DIR.\n"


def test_commands_drop_the_noise_of_a_failed_restore_only(monkeypatch, caplog):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    asyncio_logger = logging.getLogger("asyncio")
    with cli.command_errors(), caplog.at_level(logging.ERROR, logger="asyncio"):
        for error in (RuntimeError("Event loop is closed"), RuntimeError("something else")):
            sys.unraisablehook(types.SimpleNamespace(exc_value=error))
        asyncio_logger.error("Task exception was never retrieved\nfuture: <Task finished>")
        asyncio_logger.error("Unclosed client session")
    assert [str(unraisable.exc_value) for unraisable in seen] == ["something else"]
    assert [record.getMessage() for record in caplog.records] == ["Unclosed client session"]
    assert sys.unraisablehook == seen.append  # the process's own hook is back
    assert not asyncio_logger.filters


def test_a_failing_command_drops_the_noise_until_it_exits(monkeypatch, capsys):
    # The failed restore's reads may report after the error message, on the way out.
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    with pytest.raises(SystemExit), cli.command_errors():
        raise checkpoints.NoCheckpointError("Every checkpoint in runs/x is damaged")
    sys.unraisablehook(types.SimpleNamespace(exc_value=RuntimeError("Event loop is closed")))
    assert seen == []
    assert "Every checkpoint in runs/x is damaged" in capsys.readouterr().err


def _parse_train_flags(monkeypatch, *overrides, config="configs/shapes.py"):
    """command_flags.parse_flags on train.py's --config flag (own FlagValues) and `overrides`."""
    argv = ["train.py", f"--config={config}", *overrides]
    flag_values = flags.FlagValues()
    # As train.py defines it; the override flags come from argv, as they come from sys.argv.
    config_flags.DEFINE_config_file(
        "config", flag_values=flag_values, lock_config=True, sys_argv=argv
    )
    monkeypatch.setattr(command_flags.flags, "FLAGS", flag_values)
    return command_flags.parse_flags(argv), flag_values


@pytest.mark.parametrize(
    "config, overrides, message",
    [
        (
            "configs/shapes.py",
            ["--config.trian.num_epochs=1"],
            "no such config field 'trian' in --config.trian.num_epochs=1\n",
        ),
        (
            "configs/shape.py",
            [],
            "cannot load the --config file: No such file or directory: 'configs/shape.py'. "
            "The bundled configs: .*configs/shapes.py",
        ),
        ("{tmp}", [], "cannot load the --config file: [^\n]*Is a directory"),
        (
            "configs/shapes.py",
            ["--config", "configs/voc.py:resnet50"],
            r"--config is given 2 times \(configs/shapes.py, configs/voc.py:resnet50\); a run "
            r"takes one config file: keep one, and change its fields with --config.<field>=",
        ),
        ("{tmp}/broken.py", [], r"not valid Python: .*broken.py, line 1: .*\n    def get_config\("),
        (
            "configs/voc.py:vgg15",
            [],
            r"get_config\(\) failed: ValueError: Unknown configs/voc.py variant 'vgg15'",
        ),
        (
            "configs/folder.py:tiny,report",
            [],
            r"get_config\(\) failed: ValueError: configs/folder.py:tiny takes no options; got "
            r"\['report'\]",
        ),
        (
            "configs/folder.py:tiy",
            [],
            r"get_config\(\) failed: ValueError: Unknown configs/folder.py variant 'tiy'; "
            r"choose 'tiny' or a backbone of configs/voc.py",
        ),
        (
            "configs/shapes.py:resnet50",
            [],
            r"get_config\(\) failed: ValueError: configs/shapes.py has no variants \(got "
            r"'resnet50'\)",
        ),
        # The file's own code reads a field that is not there: its line, not "no such field".
        (
            "{tmp}/reads_a_missing_field.py",
            [],
            r"get_config\(\) failed: .*reads_a_missing_field.py, line 4: AttributeError: "
            r"'num_boxs'\nDid you mean \"num_boxes\"",
        ),
        # It sets one: the field's name, not ConfigDict's quoted dump of the whole section.
        (
            "{tmp}/sets_a_missing_field.py",
            [],
            r"sets_a_missing_field.py, line 4: AttributeError: 'num_boxs' is no field of that "
            r"section\nDid you mean \"num_boxes\" instead of \"num_boxs\"\?\n(?!.*backbone)",
        ),
        ("{tmp}/missing_key.py", [], r"missing_key.py, line 2: KeyError: 'size'"),
        # A dict for a config: it failed later, with a traceback.
        (
            "{tmp}/returns_a_dict.py",
            [],
            r"get_config\(\) returned a dict, not an ml_collections\.ConfigDict: start from a "
            r"bundled config's",
        ),
        # A run's config.json: JSON's null runs as a Python name.
        (
            "{tmp}/config.json",
            [],
            "cannot load the --config file: NameError: name 'null' is not defined\n"
            "--config takes a Python file .* use --config configs/run.py:WORKDIR",
        ),
    ],
)
def test_a_bad_config_file_or_section_is_one_message(
    config, overrides, message, tmp_path, capsys, monkeypatch
):
    # The config file loads when first used: without parse_flags loading it, a wrong path
    # surfaced mid-run as a traceback, as did a mistyped section (a KeyError).
    (tmp_path / "broken.py").write_text("def get_config(:\n")
    (tmp_path / "reads_a_missing_field.py").write_text(
        "from configs import shapes\ndef get_config():\n    config = shapes.get_config()\n"
        "    config.model.num_boxes = config.model.num_boxs + 1\n    return config\n"
    )
    (tmp_path / "sets_a_missing_field.py").write_text(
        "from configs import shapes\ndef get_config():\n    config = shapes.get_config()\n"
        "    config.model.num_boxs = 3\n    return config\n"
    )
    (tmp_path / "missing_key.py").write_text("def get_config():\n    return {}['size']\n")
    (tmp_path / "returns_a_dict.py").write_text("def get_config():\n    return {'model': {}}\n")
    (tmp_path / "config.json").write_text(shapes.get_config().to_json_best_effort(indent=2))
    with pytest.raises(SystemExit) as exit_info:
        _parse_train_flags(monkeypatch, *overrides, config=config.format(tmp=tmp_path))
    assert exit_info.value.code == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith("FATAL Flags parsing error: ")
    assert re.search(message, stderr, re.DOTALL), stderr
    assert "Traceback" not in stderr and "config_config" not in stderr  # a flag's inner name


def test_commands_name_a_mistyped_config_field_without_a_traceback(capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_info:
        _parse_train_flags(monkeypatch, "--config.train.bach_size=8")
    assert exit_info.value.code == 1
    stderr = capsys.readouterr().err
    assert stderr.startswith(
        "FATAL Flags parsing error: no such config field 'bach_size' in --config.train.bach_size=8"
    )
    assert 'Did you mean "batch_size"' in stderr and "Traceback" not in stderr
    assert "yolojax/models/__init__.py (MODEL_DEFAULTS)" in stderr  # model's fields, too

    argv, flag_values = _parse_train_flags(monkeypatch, "--config.train.batch_size=8")
    assert argv == ["train.py"] and flag_values.config.train.batch_size == 8


def test_an_image_without_pixels_is_refused_by_name():
    with pytest.raises(ValueError, match=r"image must be \(H, W, 3\) RGB with H, W >= 1"):
        pipeline.preprocess_image(
            np.zeros((0, 5, 3), np.uint8), image_size=32, normalization="imagenet"
        )


@pytest.mark.parametrize(
    "image, advice",
    [
        (np.full((4, 5, 3), 0.5, np.float32), "(image * 255).round().astype(np.uint8)"),
        (
            np.full((4, 5, 3), 0.0, np.float32) - [[[1, 0, 1]]],
            "((image + 1) * 127.5).round().astype(np.uint8)",
        ),
        (np.full((4, 5, 3), 128.0), "np.clip(image, 0, 255).round().astype(np.uint8)"),
        (np.full((4, 5, 3), 128, np.int64), "np.clip(image, 0, 255).round().astype(np.uint8)"),
        (np.full((4, 5, 3), 40000, np.uint16), "(image >> 8).astype(np.uint8)"),
        (np.ones((4, 5, 3), bool), "image.astype(np.uint8) * 255"),
        # No conversion brings NaN back: np.clip would make it black without a word.
        (np.full((4, 5, 3), np.nan, np.float32), "it holds NaN or infinite values"),
    ],
)
def test_an_image_of_another_dtype_is_refused_with_its_conversion(image, advice):
    # A float image in [0, 1] is many users' first input; the advice must give what the
    # pipeline would have read from the file.
    with pytest.raises(ValueError, match="image must be uint8") as error:
        pipeline.preprocess_image(image, image_size=8, normalization="unit")
    assert advice in str(error.value)
    if np.isnan(image).any():
        return
    converted = eval(advice, {"np": np, "image": image})  # the advice, as given
    assert converted.dtype == np.uint8 and converted.shape == image.shape
    if image.min() < 0:  # [-1, 1]: -1 is black, 0 mid-grey
        assert converted[..., 0].max() == 0 and converted[..., 1].min() == 128
    else:
        expected = {np.float32: 128, np.float64: 128, np.int64: 128, np.uint16: 156, np.bool_: 255}
        assert (converted == expected[image.dtype.type]).all()


def test_configs_run_py_is_a_saved_run_config_that_takes_overrides(tmp_path, monkeypatch):
    trained = shapes.get_config()
    trained.model.grid_size = 4  # an override the run was trained with
    (tmp_path / "config.json").write_text(trained.to_json_best_effort(indent=2))
    overrides = ["--config.eval.score_threshold=0.1"]
    _, flag_values = _parse_train_flags(
        monkeypatch, *overrides, config=f"configs/run.py:{tmp_path}"
    )
    assert flag_values.config.model.grid_size == 4
    assert flag_values.config.eval.score_threshold == 0.1
    assert flag_values.config.train.batch_size == trained.train.batch_size


def test_configs_run_py_without_a_workdir_says_how_to_name_it(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        _parse_train_flags(monkeypatch, config="configs/run.py")
    stderr = capsys.readouterr().err
    assert (
        "configs/run.py needs the run's folder after a colon: --config configs/run.py:runs/NAME"
        in stderr
    )
    assert "Traceback" not in stderr


def _run_command(*args: str) -> subprocess.CompletedProcess:
    """A command-line tool run as a user runs it, from the repository root."""
    env = {**os.environ, "YOLOJAX_HUGE_PAGES": "0"}  # no restart: one start is enough here
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "command, named",
    [
        # Parsing a second time for absl's report defined the override flags again: every
        # such error came out as "The flag 'config.train.num_epochs' is defined twice".
        (
            ["train.py", "--config=configs/shapes.py", "--config.train.num_epochs=1", "--bogus"],
            "Unknown command line flag 'bogus'",
        ),
        (
            ["evaluate.py", "--config.eval.score_threshold=0.1"],
            "there is none: for a run's own config, add --config configs/run.py:WORKDIR",
        ),
    ],
)
def test_a_bad_flag_beside_config_overrides_is_named_once(command, named, tmp_path):
    result = _run_command(*command, f"--workdir={tmp_path}")
    assert result.returncode == 1
    assert result.stderr.count(named) == 1, result.stderr
    assert "defined twice" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command, named",
    [
        ("train.py", "--config is required: Config file, e.g. configs/voc.py"),
        ("evaluate.py", "--workdir is required: The training run's folder."),
    ],
)
def test_a_required_flag_left_out_is_named_with_what_it_is_for(command, named):
    # absl said "flag --config=None: Flag --config must have a value other than None." and
    # pointed to --helpshort, as no other message of the commands does.
    result = _run_command(command)
    assert result.returncode == 1
    first, second = result.stderr.splitlines()
    assert first.startswith(f"FATAL Flags parsing error: {named}")
    assert second == "Pass --help to see the flags."


@pytest.mark.parametrize("command", [["evaluate.py"], ["-m", "yolojax.predict", "image.png"]])
def test_a_bad_checkpoint_value_is_one_paragraph_not_the_help(command, tmp_path):
    result = _run_command(*command, f"--workdir={tmp_path}", "--checkpoint=foo")
    assert result.returncode == 1
    assert "checkpoint must be 'latest', 'best' or a step number; got 'foo'" in result.stderr
    assert "docs/troubleshooting.md" in result.stderr  # what to do, as for every such error
    assert "--helpfull" not in result.stderr and "Traceback" not in result.stderr


def test_an_error_names_the_troubleshooting_page_by_a_path_that_holds_anywhere(tmp_path):
    # Run from another folder, "docs/troubleshooting.md" named no file there.
    result = subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), f"--workdir={tmp_path}", "--checkpoint=x"],
        cwd=tmp_path,
        env={**os.environ, "YOLOJAX_HUGE_PAGES": "0", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    page = re.search(r"What to do about each error: (\S+)\. For", result.stderr).group(1)
    assert Path(page).is_absolute() and Path(page).is_file(), result.stderr


@pytest.mark.parametrize(
    "command, flag", [("train.py", "--help"), ("evaluate.py", "-h"), ("train.py", "--helpfull")]
)
def test_help_is_printed_and_exits_0(command, flag):
    result = _run_command(command, flag)
    assert result.returncode == 0, result.stderr
    assert "--workdir" in result.stdout and "--config" in result.stdout
    assert "Traceback" not in result.stderr


def test_h_as_a_flag_value_is_that_value_not_a_help_request():
    result = _run_command("evaluate.py", "--workdir", "-h")
    assert result.returncode == 1
    assert "The workdir -h does not exist" in result.stderr
    assert "--helpfull" not in result.stdout


def test_too_few_train_images_suggest_only_what_can_help():
    config = shapes.get_config()
    with pytest.raises(ValueError, match=r"batch_size=16: lower the batch size to 10 or less\.$"):
        train_lib.steps_for(config, 10)
    config.data.max_train_examples = 10  # a cap: raising it is the other way
    with pytest.raises(ValueError, match=r"or raise config.data.max_train_examples=10\.$"):
        train_lib.steps_for(config, 10)


def test_missing_imagenet_weights_are_named_before_any_data_is_prepared(tmp_path):
    config = tiny.tiny_config(str(tmp_path / "tfds"))
    config.model.backbone = "resnet18"
    config.model.pretrained = str(tmp_path / "resnet18.msgpack")
    with pytest.raises(FileNotFoundError, match=r"resnet18.msgpack' not found: make it with"):
        trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "tfds").exists()  # the synthetic dataset was not generated first


def test_orbax_error_logs_keep_their_line_but_not_their_traceback():
    try:
        raise ValueError("RESOURCE_EXHAUSTED: No space left on device")
    except ValueError:
        exc_info = sys.exc_info()
    orbax = logging.LogRecord(
        "absl",
        logging.ERROR,
        "/site-packages/orbax/checkpoint/future.py",
        1,
        "failed",
        (),
        exc_info,
    )
    other = logging.LogRecord("absl", logging.ERROR, "/site-packages/x/y.py", 1, "m", (), exc_info)
    absl = logging.getLogger("absl")
    with cli.command_errors():  # the commands' body: orbax's tracebacks are left out
        assert all(f.filter(orbax) for f in absl.filters) and orbax.exc_info is None
        assert all(f.filter(other) for f in absl.filters) and other.exc_info is exc_info
    assert cli._ORBAX_TRACEBACKS not in absl.filters  # a library user's logs are theirs again


def test_the_model_summary_command_names_a_bad_model_field_without_a_traceback():
    result = _run_command(
        "-m", "yolojax.models", "--config=configs/shapes.py", "--config.model.backbone=resnet200"
    )
    assert result.returncode == 1
    # Named as the user set it, --config.model.backbone.
    assert "Error: ValueError: config.model.backbone must be one of" in result.stderr
    assert "got 'resnet200'" in result.stderr
    # A folder's config counts its classes from the data: the command says what to set.
    result = _run_command("-m", "yolojax.models", "--config=configs/folder.py:tiny")
    assert result.returncode == 1
    assert "config.model.num_classes is 0" in result.stderr
    assert "Set --config.model.num_classes=N." in result.stderr
    assert "Traceback" not in result.stderr


def test_train_prints_the_config_with_its_overrides_and_needs_a_workdir_to_train(tmp_path):
    result = _run_command(
        "train.py", "--config", "configs/shapes.py", "--print_config", "--config.train.batch_size=8"
    )
    assert result.returncode == 0, result.stderr
    # Every section and field, as a --config.<section>.<field> override names it.
    assert "train:\n" in result.stdout and "\n  batch_size: 8\n" in result.stdout
    assert "\n    num_train: 4000\n" in result.stdout  # data.synthetic.num_train
    # Tuples as plain lists: ml_collections' text tags them !!python/tuple.
    assert "\n  lr_drop_epochs:\n  - 75.0\n  - 105.0\n" in result.stdout
    assert "!!python" not in result.stdout
    # A value training would refuse: printed, then named (it was refused only by train.py).
    result = _run_command(
        "train.py", "--config", "configs/shapes.py", "--print_config", "--config.model.dtype=bf16"
    )
    assert result.returncode == 1 and "\n  dtype: bf16\n" in result.stdout
    assert "config.model.dtype must be one of ('float32', 'bfloat16'); got 'bf16'" in result.stderr
    # The synthetic dataset's fields too (they were refused only once training built it).
    result = _run_command(
        "train.py",
        "--config",
        "configs/shapes.py",
        "--print_config",
        "--config.data.synthetic.min_object_size=0.7",
    )
    assert result.returncode == 1
    assert "min_object_size and max_object_size must satisfy 0 < min <= max" in result.stderr
    # The weights a new run would start from (refused only once training started).
    result = _run_command(
        "train.py",
        "--config",
        "configs/shapes.py",
        "--print_config",
        "--config.model.pretrained=/nowhere/darknet_tiny.msgpack",
    )
    assert result.returncode == 1
    assert "pretrained weights '/nowhere/darknet_tiny.msgpack' not found: " in result.stderr
    pretrained.save_variables(str(tmp_path / "r18.msgpack"), "resnet18", {})  # for another
    result = _run_command(
        "train.py",
        "--config",
        "configs/shapes.py",
        "--print_config",
        f"--config.model.pretrained={tmp_path / 'r18.msgpack'}",
    )
    assert result.returncode == 1
    assert "holds 'resnet18' weights, but the model's backbone is 'darknet_tiny'" in result.stderr
    result = _run_command("train.py", "--config", "configs/shapes.py")
    assert result.returncode == 1
    assert "--workdir is required: the folder for the run's checkpoints." in result.stderr
    # The message and where the help is, not absl's 30 lines of help before it.
    assert result.stdout == "" and result.stderr.count("\n") == 2, result.stderr


def test_paths_given_with_a_tilde_after_an_equals_sign_are_in_the_home_folder():
    # The shell expands a word's leading ~ only: --config.data.tfds_data_dir=~/tfds was a
    # folder named '~' beside the current one.
    result = _run_command(
        "train.py",
        "--config",
        "configs/shapes.py",
        "--print_config",
        "--config.data.tfds_data_dir=~/tfds",
    )
    assert result.returncode == 0, result.stderr
    assert f"\n  tfds_data_dir: {os.path.expanduser('~/tfds')}\n" in result.stdout


def test_a_field_set_to_none_on_the_command_line_is_none():
    # A run's data cap could not be lifted (int("None") failed), and a folder field became
    # the text 'None', a folder of that name.
    result = _run_command(
        "train.py",
        "--config",
        "configs/shapes.py",
        "--print_config",
        "--config.data.max_eval_examples=5",
        "--config.train.freeze_backbone",  # a bool field's flag takes no value
        "--config.data.max_eval_examples=None",
        "--config.data.tfds_data_dir",
        "None",
        "--config.data.max_train_examples=null",
        "--config.data.max_train_examples=7",  # the last one given wins
    )
    assert result.returncode == 0, result.stderr
    assert "\n  max_eval_examples: null\n" in result.stdout
    assert "\n  tfds_data_dir: null\n" in result.stdout
    assert "\n  max_train_examples: 7\n" in result.stdout
    assert "\n  freeze_backbone: true\n" in result.stdout
    # A section is not a value: its fields are.
    result = _run_command("train.py", "--config", "configs/shapes.py", "--config.data=None")
    assert result.returncode == 1
    assert "--config.data=None: data is a section; set its fields" in result.stderr


@pytest.mark.parametrize("command", ["train.py", "evaluate.py"])
def test_an_empty_workdir_is_refused_not_taken_for_the_current_folder(command, tmp_path):
    # --workdir="$RUN" with RUN unset: train.py trained into the current folder (here a
    # temporary one, should it still).
    result = subprocess.run(
        [sys.executable, REPO / command, "--config", REPO / "configs/shapes.py", "--workdir="],
        cwd=tmp_path,
        env={**os.environ, "YOLOJAX_HUGE_PAGES": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "--workdir is empty: give a path" in result.stderr and "Traceback" not in result.stderr


_LOGGED_WARNINGS = """
import logging
from absl import logging as absl_logging
from yolojax import cli

absl_logging.use_absl_handler()  # as absl.app.run does
with cli.command_errors():
    logging.getLogger("yolojax.data.voc_folder").warning("voc_folder: class %r is rare", "redbx")
    logging.getLogger("elsewhere").warning("another package's warning")
"""


def test_the_warnings_yolojax_logs_print_as_its_other_warnings_in_a_command():
    # A VOC folder's warnings (skipped images, a likely misspelt class) came in absl's
    # format, "W1205 18:20:06.997812 140231961832320 voc_folder.py:462] ...".
    done = subprocess.run(
        [sys.executable, "-c", _LOGGED_WARNINGS], capture_output=True, text=True, timeout=120
    )
    assert "Warning: voc_folder: class 'redbx' is rare\n" in done.stderr
    assert "] voc_folder" not in done.stderr  # not in absl's format as well
    assert re.search(r"\] another package's warning", done.stderr)  # others as they were
