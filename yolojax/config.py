"""The base config every ``configs/*.py`` starts from, and its checks.

A config is an ``ml_collections.ConfigDict`` with sections ``model``, ``data``, ``loss``,
``train`` and ``eval`` plus a top-level ``seed``. The dict is locked, so a mistyped key
(``--config.train.bach_size=8``, or ``config.train.bach_size = 8`` in Python) fails at once
with the key named.
"""

import os
from pathlib import Path

import ml_collections

from yolojax import errors
from yolojax.data.config import default_data_config, validate_data_config
from yolojax.models import MODEL_DEFAULTS, get_model, min_input_size
from yolojax.optim import OPTIMIZERS, SCHEDULES, learning_rate_schedule
from yolojax.postprocess import IOU_THRESHOLD, MAX_DETECTIONS, PRE_NMS_TOP_K, SCORE_THRESHOLD
from yolojax.validation import (
    check_choice,
    check_int,
    check_number,
    check_positive_int,
    check_threshold,
)
from yolojax.workdir import CONFIG_FILE, LATEST_FOLDER, is_run_folder, parse_saved_config


def default_model_config() -> ml_collections.ConfigDict:
    """``config.model``: ResNet-152 from scratch, and ``yolojax.models``'s defaults for the
    other fields (its docstring says what each does). ``num_classes`` may also be 0 here:
    as many as the dataset has. ``pretrained``: ported ImageNet weights (a .msgpack file), a
    trained run's folder (to fine-tune it: ``train_lib.with_run_weights``), or '' to train
    from scratch."""
    return ml_collections.ConfigDict({"backbone": "resnet152", **MODEL_DEFAULTS, "pretrained": ""})


def default_train_config() -> ml_collections.ConfigDict:
    """``config.train``: the YOLOv1 paper's recipe (SGD, 135 epochs, batch 64)."""
    return ml_collections.ConfigDict(
        {
            "batch_size": 64,  # global, over all devices and hosts
            "num_epochs": 135.0,  # may be fractional
            "optimizer": "sgd",
            "learning_rate": 1e-2,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": "piecewise",
            # Paper: "slowly raise the learning rate from 1e-3 to 1e-2" over the first epochs,
            # 1e-2 until epoch 75, 1e-3 for 30 epochs, 1e-4 for the last 30.
            "warmup_epochs": 5.0,
            "warmup_start_factor": 0.1,
            "lr_drop_epochs": (75.0, 105.0),
            "lr_drop_factors": (0.1, 0.1),
            "grad_clip_norm": 0.0,
            "freeze_backbone": False,
            # Keep the last good state instead of stopping when a step's loss is NaN/inf.
            "skip_nonfinite": False,
            "log_every_steps": 20,
            "checkpoint_every_steps": 1000,  # also at every evaluation and at the end
            "keep_checkpoints": 3,
        }
    )


# The fields that name files or folders: a run saves them absolute (make_paths_absolute).
PATH_FIELDS = (("data", "folder"), ("data", "tfds_data_dir"), ("model", "pretrained"))


def make_paths_absolute(config) -> None:
    """Makes ``config``'s :data:`PATH_FIELDS` absolute (``~`` expanded), as a run saves them
    in its config.json: evaluate.py, predict and a resume may run from another folder, where
    a relative path named another folder or none (a synthetic dataset was generated again
    there, a VOC folder was not found)."""
    for section, key in PATH_FIELDS:  # a config of the model alone has no data section
        value = config[section].get(key) if section in config else None
        if isinstance(value, str) and value:  # '' is a setting (pretrained: none)
            config[section][key] = os.path.abspath(os.path.expanduser(value))


def default_config() -> ml_collections.ConfigDict:
    """The full default config (ResNet-152 conv head on VOC-sized 448 px inputs)."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = default_model_config()
    config.data = default_data_config()
    config.loss = ml_collections.ConfigDict(
        {
            "lambda_coord": 5.0,
            "lambda_noobj": 0.5,
            "rescore": True,
            "noobj_on_unassigned": True,
        }
    )
    config.train = default_train_config()
    config.eval = ml_collections.ConfigDict(
        {
            "every_epochs": 5,  # eval-split mAP every N epochs (and at the end); 0 = at the end
            "batch_size": 0,  # 0 = train.batch_size
            "score_threshold": SCORE_THRESHOLD,  # low, so the precision/recall curve is complete
            "iou_threshold": IOU_THRESHOLD,  # NMS's; matching a ground truth takes VOC's 0.5
            # Per image, after NMS, the best-scored kept (as COCO's evaluation; Darknet's
            # validate_yolo keeps all): the cap can only cut the lowest-scored tail of each
            # image's detections, so a class's precision/recall curve may end earlier.
            "max_detections": MAX_DETECTIONS,
            # Best-scored (box, class) candidates per image that enter NMS (of S·S·B·C).
            "pre_nms_top_k": PRE_NMS_TOP_K,
            "train_subset": 256,  # train mAP on this many fixed train images; 0 disables
        }
    )
    # Locked in Python too, not only by the command line's flags: `config.train.bach_size = 8`
    # was a field of its own, ignored by training and refused by everything reading the
    # run's config.json afterwards.
    config.lock()
    return config


# The config's real-valued fields and the values they may take (validation.check_number).
_NUMBER_BOUNDS = {
    "train.num_epochs": {"above": 0},
    "train.learning_rate": {"above": 0},
    "train.momentum": {"at_least": 0, "below": 1},
    "train.weight_decay": {"at_least": 0},
    "train.warmup_epochs": {"at_least": 0},
    "train.warmup_start_factor": {"at_least": 0, "at_most": 1},
    "train.grad_clip_norm": {"at_least": 0},  # 0: no clipping
    "eval.every_epochs": {"at_least": 0},  # 0: at the end only
    "loss.lambda_coord": {"at_least": 0},
    "loss.lambda_noobj": {"at_least": 0},
}


def validate_config(config) -> None:
    """Checks values that a locked ConfigDict cannot: names, ranges, divisibility.

    Raises:
      TypeError: ``config`` is not a ConfigDict.
      ValueError: naming the config key and what was expected.
    """
    check_config_dict(config)
    check_choice("config.train.optimizer", config.train.optimizer, OPTIMIZERS)
    check_choice("config.train.schedule", config.train.schedule, SCHEDULES)
    num_classes = config.model.num_classes
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(
            "config.model.num_classes must be a positive integer, or 0 for as many as the "
            f"dataset has; got {num_classes!r}."
        )
    # The model's fields, as get_model checks them when it builds the model after the
    # dataset is prepared (minutes for VOC). num_classes 0, the dataset's count, is not
    # known yet: any count checks the others.
    validate_data_config(config.data)  # before the data is prepared, as the model's fields
    model_config = config.model.copy_and_resolve_references()
    model_config.num_classes = num_classes or 1
    get_model(model_config, name="config.model")
    for name in (
        "train.batch_size",
        "train.log_every_steps",
        "train.checkpoint_every_steps",
        "train.keep_checkpoints",
        "eval.max_detections",
        "eval.pre_nms_top_k",
    ):
        section, key = name.split(".")
        check_positive_int(f"config.{name}", config[section][key])
    for name, bounds in _NUMBER_BOUNDS.items():
        section, key = name.split(".")
        check_number(f"config.{name}", config[section][key], **bounds)
    for index, epoch in enumerate(config.train.lr_drop_epochs):
        check_number(f"config.train.lr_drop_epochs[{index}]", epoch, at_least=0)
    for index, factor in enumerate(config.train.lr_drop_factors):
        check_number(f"config.train.lr_drop_factors[{index}]", factor, above=0)
    for name in ("eval.batch_size", "eval.train_subset"):  # 0: the train batch; none
        section, key = name.split(".")
        check_int(f"config.{name}", config[section][key], 0)
    if config.data.image_size < config.model.grid_size:
        raise ValueError(
            f"config.data.image_size ({config.data.image_size}) must be at least "
            f"config.model.grid_size ({config.model.grid_size})."
        )
    # Refused by the model too, but only once the dataset is prepared.
    smallest = min_input_size(config.model.backbone)
    if config.data.image_size < smallest:
        raise ValueError(
            f"config.data.image_size ({config.data.image_size}) must be at least {smallest} "
            f"for config.model.backbone={config.model.backbone!r}: a smaller image leaves its "
            "feature map empty."
        )
    # Checked by detect too, but only at the first evaluation, epochs into training.
    for name in ("score_threshold", "iou_threshold"):
        check_threshold(f"config.eval.{name}", config.eval[name])
    # Checked where it is used too, after the dataset is prepared (minutes for VOC).
    learning_rate_schedule(config.train, steps_per_epoch=1, total_steps=1)


def check_config_dict(config) -> None:
    """Raises TypeError, saying where a config comes from, unless ``config`` is a
    ConfigDict (a dict, or a config file's path, would fail later on an attribute)."""
    if not isinstance(config, ml_collections.ConfigDict):
        raise TypeError(
            "config must be an ml_collections.ConfigDict: a config file's get_config() (such "
            "as configs.shapes.get_config()), or yolojax.config.load_run_config(workdir) for a "
            f"run's own; got {type(config).__name__} {str(config)[:80]!r}."
        )


def resolve_num_classes(
    config, class_names, *, source: str = "the dataset", remedy: str | None = None
) -> None:
    """Sets ``config.model.num_classes`` from ``class_names`` (``source``'s) when it is 0;
    otherwise checks that the two agree.

    Raises:
      ValueError: the config and ``source`` disagree; the message ends with ``remedy``
        (by default: set config.model.num_classes to the count, or to 0).
    """
    if config.model.num_classes == 0:
        config.model.num_classes = len(class_names)
    elif config.model.num_classes != len(class_names):
        count = len(class_names)
        if remedy is None:
            remedy = (
                f"set config.model.num_classes={count} (--config.model.num_classes={count} on "
                f"the command line), or 0 to follow {source}"
            )
        raise ValueError(
            f"config.model.num_classes={config.model.num_classes} but {source} has {count} "
            f"classes {tuple(class_names)}: {remedy}."
        )


def load_run_config(
    workdir, *, otherwise: str = "use the config the run was trained with (its get_config())"
) -> ml_collections.ConfigDict:
    """The config a run saved as ``workdir/config.json`` (locked, like a loaded config file).

    The saved values are laid over :func:`default_config`, so that a field
    added to yolojax after the run was saved has its default, the value the run had in effect.

    Args:
      workdir: the training run's folder.
      otherwise: how to give the config instead, for the error messages.

    Raises:
      FileNotFoundError: there is no ``config.json``.
      ValueError: it is not JSON, has a field yolojax does not know, or a value of the wrong
        type or out of range (:func:`validate_config`).
    """
    path = Path(workdir) / CONFIG_FILE
    if not Path(workdir).is_dir():
        what = "is a file" if Path(workdir).exists() else "does not exist"
        raise FileNotFoundError(
            f"The workdir {workdir} {what}: give the folder a training run wrote (train.py's "
            "--workdir)."
        )
    if not path.exists():
        raise FileNotFoundError(_no_config_advice(Path(workdir), otherwise))
    config = default_config()
    try:
        saved = parse_saved_config(workdir)
        _check_saved_fields(saved, config.to_dict())
        config.update(saved)  # nested sections field by field
        validate_config(config)  # a value edited out of range fails here, naming the file
    except (ValueError, TypeError, AttributeError) as error:  # not JSON; a wrong type
        raise ValueError(
            f"{path} is not a config this version of yolojax can read ({error}); was it edited "
            f"by hand, or saved by a newer yolojax? Fix the file, or {otherwise}."
        ) from None
    _warn_of_an_earlier_folder_split(path, saved)
    return config


def _warn_of_an_earlier_folder_split(path: Path, saved: dict) -> None:
    """A VOC-format folder run saved without its class names was trained by a yolojax
    before 2026-12-05 (every run since records them): its folder was prepared under another
    name, and a folder without split files was split by a seeded permutation, which today's
    preparation of it (by a hash of each id) does not reproduce."""
    data = saved.get("data", {})
    if data.get("source") == "voc_folder" and data.get("class_names") is None:
        errors.notice(
            f"{path} is of a run trained by a yolojax before 2026-12-05. If its folder "
            f"{data.get('folder')} has no split files (ImageSets/Main/*.txt, train/ and "
            "valid/ folders), that yolojax split it by another rule: the folder is prepared "
            "again with today's split, whose validation images include some this run trained "
            "on (its mAP on them reads high; a resume trains on some it was evaluated on). "
            "Train such a run again in a new --workdir."
        )


def _no_config_advice(workdir: Path, otherwise: str) -> str:
    """Why ``workdir`` has no config.json, and what to give instead: for a run's checkpoints
    without their config, ``otherwise``; else the run folder it lies in (its checkpoints/ or
    a step's folder given), the runs it holds (their parent given), or another folder."""
    workdir = Path(os.path.abspath(workdir))  # '.' or 'checkpoints' named in full
    path = workdir / CONFIG_FILE
    if is_run_folder(workdir):
        return (
            f"{path} does not exist, beside the run's checkpoints in {workdir}: train.py writes "
            f"the run's config there; for a run without it, {otherwise}."
        )
    run = next((folder for folder in workdir.parents[:2] if is_run_folder(folder)), None)
    if run is not None:
        return (
            f"{path} does not exist: {workdir} is a folder inside the training run {run}; "
            f"give the run's folder, {run}."
        )
    try:
        runs = sorted(sub.name for sub in workdir.iterdir() if sub.is_dir() and is_run_folder(sub))
    except OSError:  # unreadable: said below as a folder without a run
        runs = []
    if runs:
        return (
            f"{path} does not exist: {workdir} holds the training runs "
            f"{errors.first_few(runs)}; give one of those folders, such as {workdir / runs[0]}."
        )
    return (
        f"{workdir} is not a training run's folder: it has neither {CONFIG_FILE} nor "
        f"{LATEST_FOLDER}/. Give the folder train.py wrote (its --workdir)."
    )


def _check_saved_fields(saved, defaults: dict, section: str = "") -> None:
    """Raises ValueError naming the first field of ``saved`` that ``defaults`` has no place for.

    ``ConfigDict.update`` would add an unknown field silently: a run of a newer yolojax whose
    new field this version would ignore.
    """
    if not isinstance(saved, dict):
        raise TypeError(f"{section or 'the file'} should be a JSON object, not {saved!r}")
    for key, value in saved.items():
        name = f"{section}.{key}" if section else key
        if key not in defaults:
            raise ValueError(f"{name} is not a field of yolojax's config")
        if isinstance(defaults[key], dict):
            _check_saved_fields(value, defaults[key], section=name)
