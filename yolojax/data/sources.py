"""The TFDS datasets behind `config.data`, opened as random-access sources of raw examples.

The pipeline reads examples by index (TFDS ArrayRecord data sources), which is what lets it
shuffle each epoch exactly, shard by process and resume at any step without reading the
skipped examples. Images stay encoded (`tfds.decode.SkipDecoding`): the tf.data map decodes
them in parallel.
"""

import bisect
import dataclasses
import functools
import logging
import os
import re
import sys
from typing import Any

from yolojax.data import quiet_tensorflow  # noqa: F401 (first: see its docstring)

# isort: split
import numpy as np
import tensorflow_datasets as tfds

from yolojax import errors
from yolojax.data import synthetic_shapes, voc_folder

_DEFAULT_SPLITS = {
    "voc": ("voc/2007:train+validation,voc/2012:train+validation", "voc/2007:test"),
    "synthetic_shapes": ("train", "test"),
    # eval: 'validation' if the folder defines it (the best checkpoint is chosen on the eval
    # split: the test split stays unseen until asked for), else 'test'; 'test' for a run
    # trained on trainval or validation (see _parts).
    "voc_folder": ("train", None),
}
_FILE_FORMAT = "array_record"  # random access
# The sources whose boxes are VOC's pixel indices, 1-based and inclusive (xmin=1 is the first
# pixel column), divided by the image size as TFDS's voc stores them; synthetic_shapes
# stores continuous coordinates, in which the image spans [0, 1].
_ONE_BASED_SOURCES = ("voc", "voc_folder")

_logger = logging.getLogger(__name__)


class _DropTfdsNotices(logging.Filter):
    """Drops two TFDS warnings that say nothing wrong about yolojax's own builders.

    A synthetic or folder dataset has a config made at run time, so TFDS warns "Using custom
    data configuration" with the whole config each time a run opens it (six times at start);
    and "Variant folder ... has no dataset_info.json" before it first prepares one. Both
    landed in the middle of train.py's progress bar.
    """

    NOTICES = ("Using custom data configuration", "has no dataset_info.json")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message for notice in self.NOTICES)


logging.getLogger("absl").addFilter(_DropTfdsNotices())  # TFDS logs through absl's logger


# The datasets this process prepared: their builders warned of the images they left out.
_built_here = set()


@functools.cache  # once per prepared dataset and process: a run opens its splits many times
def _warn_built_without(name: str, data_dir: str, skipped: tuple[str, ...]) -> None:
    _logger.warning(
        "%s in %s was built without %d bad images (config.data.on_bad_data='skip'); "
        "first problems:\n  %s",
        name,
        data_dir,
        len(skipped),
        "\n  ".join(skipped[:3]),
    )


@functools.cache  # as _warn_built_without
def _warn_built_clipped(name: str, data_dir: str, clipped: tuple[str, ...]) -> None:
    _logger.warning(
        "%s in %s was built with the boxes of %s clipped to their images "
        "(config.data.clip_box_overshoot): %s",
        name,
        data_dir,
        errors.count(len(clipped), "image"),
        errors.first_few(clipped),
    )


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS dataset that yolojax does not prepare itself (VOC) is missing or unreadable."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One raw example: encoded image and its annotations (normalized yxyx boxes)."""

    image: bytes
    boxes: np.ndarray  # (N, 4) float32
    labels: np.ndarray  # (N,) int32
    difficult: np.ndarray  # (N,) bool
    filename: str


class SplitSource:
    """Random access to the examples of one split, which may span several TFDS datasets.

    Attributes:
      class_names: label names, shared by all parts.
      split_name: the parts' TFDS split names, for messages: 'test', 'validation',
        'train+validation' (where the parts' names differ).
      one_based_boxes: whether the boxes are VOC's 1-based pixel indices (normalized), which
        the pipeline turns into continuous coordinates (``pipeline.continuous_boxes``).
    """

    def __init__(
        self,
        parts: list[Any],
        class_names: tuple[str, ...],
        split_name: str,
        *,
        one_based_boxes: bool,
    ):
        """`parts` are TFDS data sources (images undecoded), read one after the other."""
        self.class_names = class_names
        self.split_name = split_name
        self.one_based_boxes = one_based_boxes
        self._sources = parts
        self._ends = list(np.cumsum([len(source) for source in self._sources]))

    def __len__(self) -> int:
        return int(self._ends[-1]) if self._ends else 0

    def __getitem__(self, index: int) -> Example:
        part = bisect.bisect_right(self._ends, index)
        start = self._ends[part - 1] if part else 0
        example = self._sources[part][int(index - start)]
        objects = example["objects"]
        filename = example.get("image/filename", b"")
        return Example(
            image=example["image"],
            boxes=np.asarray(objects["bbox"], np.float32).reshape(-1, 4),
            labels=np.asarray(objects["label"], np.int32).reshape(-1),
            difficult=np.asarray(objects["is_difficult"], bool).reshape(-1),
            filename=filename.decode() if isinstance(filename, bytes) else str(filename),
        )


def _prepared(make_builder, data_dir: str | None) -> tfds.core.DatasetBuilder:
    """The builder `make_builder(**kwargs)` makes, generated locally as ArrayRecord if needed
    in ``data_dir`` (``config.data.tfds_data_dir``; None: TFDS's default)."""
    try:
        builder = make_builder()  # Reads an existing preparation, whatever its file format.
        if not builder.is_prepared():
            builder = make_builder(file_format=_FILE_FORMAT)
            if not sys.stderr.isatty():
                # As yolojax's own, TFDS's bars on a terminal only: in a log file they are
                # lines of carriage returns and cursor moves, and a warning printed while
                # one is drawn lands on its line.
                tfds.disable_progress_bar()
            try:
                builder.download_and_prepare()
            except RuntimeError as error:  # ArrayRecord's writer's, for a full disk too
                full = errors.out_of_space(error)
                if full is None:
                    raise
                raise full from error
            _built_here.add(str(builder.data_dir))
    except OSError as error:  # the data folder is a file, read-only, or on a full disk
        default = os.environ.get("TFDS_DATA_DIR", tfds.core.constants.DATA_DIR)
        root = os.path.abspath(os.path.expanduser(data_dir or default))
        where = os.path.abspath(str(getattr(error, "filename", None) or root))
        if os.path.commonpath([root, where]) != root:  # not the data folder's (a VOC folder's)
            raise
        raise errors.machine_error(
            f"prepare the dataset in its TFDS data folder {where}",
            error,
            "data folder (--config.data.tfds_data_dir)",
        ) from error
    return builder


def _check_voc_prepared(builders: list[tfds.core.DatasetBuilder]) -> None:
    """Raises one DatasetNotPreparedError with the command for each unprepared `voc/<year>`."""
    missing = list({b.info.full_name: b for b in builders if not b.is_prepared()}.values())
    if not missing:
        return
    names = " and ".join(builder.name + "/" + builder.builder_config.name for builder in missing)
    commands = "\n".join(
        '  python -c "from yolojax.data.voc_offline import prepare_voc_offline; '
        f"prepare_voc_offline('/path/to/VOCdevkit', '{builder.builder_config.name}', "
        f"data_dir='{builder.data_dir_root}')\""
        for builder in missing
    )
    raise DatasetNotPreparedError(
        f"TFDS dataset {names} {'is' if len(missing) == 1 else 'are'} not prepared in "
        f"{missing[0].data_dir_root}. yolojax does not download it; prepare it once from an "
        f"extracted VOCdevkit, offline:\n{commands}\n"
        "or see docs/data.md (from the original tar files, or with network access)."
    )


def _parts(data_config, split: str | None) -> list[tuple[tfds.core.DatasetBuilder, str]]:
    """(builder, TFDS split expression) pairs making up `split` (None: voc_folder's eval)."""
    source = data_config.source
    if source == "synthetic_shapes":
        config = synthetic_shapes.shapes_builder_config(**data_config.synthetic.to_dict())
        builder = _prepared(
            functools.partial(
                synthetic_shapes.make_builder, config, data_dir=data_config.tfds_data_dir
            ),
            data_config.tfds_data_dir,
        )
        return [(builder, split)]
    if source == "voc_folder":
        config = voc_folder.voc_folder_config(
            data_config.folder,
            class_names=data_config.class_names,
            on_bad_data=data_config.on_bad_data,
            clip_box_overshoot=data_config.clip_box_overshoot,
        )
        builder = _prepared(
            functools.partial(
                voc_folder.VocFolder, config=config, data_dir=data_config.tfds_data_dir
            ),
            data_config.tfds_data_dir,
        )
        if split is None:  # Whichever held-out split the folder has, validation first.
            # VOC's trainval.txt holds val.txt's images: a run trained on them is tested.
            trained = data_config.train_split or "train"
            candidates = (
                ("test",) if re.search("trainval|validation", trained) else ("validation", "test")
            )
            held_out = [name for name in candidates if name in builder.info.splits]
            if not held_out:
                splits = ", ".join(builder.info.splits)
                if len(candidates) == 1:  # validation's images are trained on
                    raise ValueError(
                        f"config.data.folder={data_config.folder!r} has no test split to "
                        f"evaluate on: the run trains on {trained!r}, which holds the "
                        f"validation split's images (its splits: {splits}). Add "
                        "ImageSets/Main/test.txt, or name a split with "
                        "--config.data.eval_split."
                    )
                raise ValueError(
                    f"config.data.folder={data_config.folder!r} has no validation or test "
                    f"split to evaluate on (its splits: {splits}): add ImageSets/Main/val.txt "
                    "or test.txt, remove ImageSets/Main to hold out about 10% of the images "
                    "at random, or name one with --config.data.eval_split (e.g. 'train[90%:]')."
                )
            split = held_out[0]
        return [(builder, split)]
    parts = []
    for part in split.split(","):
        name, _, part_split = part.strip().rpartition(":")
        if not name or not part_split:
            raise ValueError(
                f"data split {split!r}: for source='voc' each comma-separated part must be "
                "'<dataset>:<split>', e.g. 'voc/2007:test'"
            )
        parts.append((tfds.builder(name, data_dir=data_config.tfds_data_dir), part_split))
    _check_voc_prepared([builder for builder, _ in parts])
    return parts


def split_expression(data_config, which: str) -> str | None:
    """The configured split for 'train' or 'eval', or the source's default (None: decide later)."""
    configured = data_config.train_split if which == "train" else data_config.eval_split
    if configured is not None:
        return configured
    return _DEFAULT_SPLITS[data_config.source][0 if which == "train" else 1]


def open_split(data_config, which: str) -> SplitSource:
    """Opens `which` ('train' or 'eval') of `data_config` as a SplitSource, preparing if needed.

    Raises:
      DatasetNotPreparedError: source 'voc' whose dataset is not in `tfds_data_dir`.
      ValueError: an unknown or empty split.
    """
    parts = _parts(data_config, split_expression(data_config, which))
    split = ",".join(f"{builder.name}:{part_split}" for builder, part_split in parts)
    opened, class_names = [], None
    for builder, part_split in parts:
        names = tuple(builder.info.features["objects"]["label"].names)
        if class_names not in (None, names):
            raise ValueError(f"data split {split!r} mixes datasets with different class names")
        class_names = names
        try:
            data_source = builder.as_data_source(
                part_split, decoders={"image": tfds.decode.SkipDecoding()}
            )
        except ValueError as error:  # TFDS: "Unknown split 'test'. Should be one of [...]."
            key = "train_split" if which == "train" else "eval_split"
            if "can not be of 0 length" in str(error):  # ArrayRecord's, for 'train[:0]'
                raise ValueError(
                    f"config.data.{key}={split_expression(data_config, which)!r} selects no "
                    f"examples of {builder.name}: widen it."
                ) from None
            if not str(error).startswith("Unknown split"):
                raise
            raise ValueError(
                f"config.data.{key}={split_expression(data_config, which)!r}: {error} "
                f"({builder.name} in "
                f"{builder.data_dir}). Set --config.data.{key} to one of them."
            ) from None
        except NotImplementedError as error:  # Prepared without random access (TFRecord).
            dataset = builder.info.full_name.rsplit("/", 1)[0]  # voc/2007: name/config
            raise DatasetNotPreparedError(
                f"{dataset} in {builder.data_dir_root} is stored as "
                f"{builder.info.file_format.value}, without the random access the pipeline "
                "needs. Prepare it again as ArrayRecord in another data_dir, reusing the "
                f"downloads: tfds.builder('{dataset}', data_dir=NEW_DIR, "
                "file_format='array_record').download_and_prepare("
                f"download_dir='{builder.data_dir_root}/downloads')"
            ) from error
        opened.append(data_source)
        metadata = builder.info.metadata or {}
        if str(builder.data_dir) not in _built_here:  # its builder told of them already
            if skipped := tuple(map(str, metadata.get("skipped", []))):
                _warn_built_without(builder.name, str(builder.data_dir), skipped)
            if clipped := tuple(map(str, metadata.get("clipped", []))):
                _warn_built_clipped(builder.name, str(builder.data_dir), clipped)
    split_names = dict.fromkeys(part_split for _, part_split in parts)  # once each, in order
    source = SplitSource(
        opened,
        class_names,
        "+".join(split_names),
        one_based_boxes=data_config.source in _ONE_BASED_SOURCES,
    )
    if len(source) == 0:
        raise ValueError(f"data split {split!r} of source {data_config.source!r} is empty")
    return source
