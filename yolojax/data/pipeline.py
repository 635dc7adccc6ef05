"""Training and evaluation input pipelines (tf.data on the host, NumPy batches out).

Every batch is a dict of NumPy arrays shaped [local_devices, per_device, ...] (the "Data element
contract" of docs/architecture.md): `image` float32 (D, B, H, W, 3) normalized, `boxes` (D, B,
max_boxes, 4) normalized yxyx in continuous coordinates (VOC's 1-based pixel boxes moved
there: `continuous_boxes`), `labels` int32, `difficult` bool, `mask` bool (True for real
boxes), `image_size` int32 (D, B, 2) original (height, width); eval batches add `valid` (D, B)
(False for padding) and `index` int32 (D, B) (the example's index in the split, -1 for padding).

Training reads a stream of example positions g = 0, 1, 2, ...: global batch t holds positions
[t * G, (t + 1) * G), process p takes its contiguous slice of each, and position g is example
permutation_e[g mod N] of epoch e = g // N, where permutation_e depends only on (seed, e).
The augmentation of position g is keyed by (seed, g) with stateless TF random ops. So the data
is a pure function of (config, seed, global batch size): `start_step=k` skips to position
k * G without reading anything before it and yields exactly the uninterrupted run's batches.

Evaluation reads every example exactly once: process p takes an even contiguous shard (as
`tfds.even_splits`), the last batch is padded with `valid=False` examples, and every process
yields the same number of batches so that a multi-host gather lines up.
"""

import atexit
import dataclasses
import functools
import itertools
import math
import weakref
from collections.abc import Callable, Iterable, Iterator

from yolojax.data import quiet_tensorflow  # noqa: F401 (first: see its docstring)

# isort: split
import jax
import numpy as np
import tensorflow as tf

from yolojax import distributed, errors
from yolojax.cpus import usable_cpus
from yolojax.data import augment, config, malloc_thresholds, sources
from yolojax.data.config import validate_data_config
from yolojax.data.decoding import decode_image
from yolojax.images import uint8_advice
from yolojax.validation import check_choice, check_int

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# config.data.normalization -> (scale, offset) per channel: [0, 1] pixel * scale + offset.
_NORMALIZATIONS = {
    "imagenet": (
        tuple(1 / std for std in _IMAGENET_STD),
        tuple(-mean / std for mean, std in zip(_IMAGENET_MEAN, _IMAGENET_STD, strict=True)),
    ),
    "unit": augment.IDENTITY,
    "symmetric": ((2.0, 2.0, 2.0), (-1.0, -1.0, -1.0)),
}

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What the training loop needs to know about the configured data (after the caps).

    ``num_train_examples`` is None when the train split was not opened (evaluation only);
    ``eval_split_name`` names the eval split in messages ('test', 'validation').
    """

    class_names: tuple[str, ...]
    num_train_examples: int | None
    num_eval_examples: int
    eval_split_name: str


@dataclasses.dataclass(frozen=True)
class _Layout:
    """How a global batch splits over processes and this process's devices."""

    process_index: int
    per_process: int
    local_devices: int


def _layout(global_batch_size: int) -> _Layout:
    global_batch_size = check_int("global_batch_size", global_batch_size, 1)
    distributed.check_batch_size(global_batch_size, "global_batch_size")
    per_process = global_batch_size // jax.process_count()
    return _Layout(jax.process_index(), per_process, jax.local_device_count())


def _num_examples(source: sources.SplitSource, cap: int | None) -> int:
    return len(source) if cap is None else min(len(source), cap)


def get_dataset_info(data_config, *, train: bool = True) -> DatasetInfo:
    """Prepares the configured datasets if needed and describes them.

    Synthetic and folder sources are generated into `data.tfds_data_dir` on first use; 'voc'
    raises sources.DatasetNotPreparedError, explaining the offline preparation, if absent.
    With ``train=False`` only the eval split is opened (evaluating a run on data that has
    no train split, such as a test-only folder); the class names are then the eval split's.
    """
    validate_data_config(data_config)
    train_split = sources.open_split(data_config, "train") if train else None
    evaluation = sources.open_split(data_config, "eval")
    return DatasetInfo(
        class_names=(train_split if train_split is not None else evaluation).class_names,
        num_train_examples=(
            None
            if train_split is None
            else _num_examples(train_split, data_config.max_train_examples)
        ),
        num_eval_examples=_num_examples(evaluation, data_config.max_eval_examples),
        eval_split_name=evaluation.split_name,
    )


def trained_objects(difficult, train_on_difficult: bool):
    """Which objects training learns: ``difficult``'s shape of bool (NumPy or JAX), all but
    the difficult ones unless ``train_on_difficult`` (``config.data.train_on_difficult``).
    The train batches hold these only; the evaluation's loss targets them too."""
    return ~difficult | train_on_difficult


def _record(example: sources.Example, position: int, max_boxes: int, keep_difficult: bool):
    """The tf.data generator's element for one example (NumPy), keeping all its objects
    (``keep_difficult``) or only those training learns."""
    keep = trained_objects(example.difficult, keep_difficult)
    count = int(np.sum(keep))  # the boxes the batch holds
    if count > max_boxes:
        raise ValueError(
            f"{example.filename}: {count} objects"
            f"{'' if keep_difficult else ' (not counting difficult ones)'}, more than "
            f"config.data.max_boxes={max_boxes}: set --config.data.max_boxes="
            f"{count} or more (boxes are never dropped silently)"
        )
    return {
        "image": example.image,
        "boxes": example.boxes[keep],
        "labels": example.labels[keep],
        "difficult": example.difficult[keep],
        "position": np.int64(position),
    }


# A split's examples for one process, in the order training or evaluation reads them:
# ``examples(skip)`` yields ``(position, example)`` pairs from the ``skip``-th on.
Examples = Callable[[int], Iterator[tuple[int, sources.Example]]]


def _stacked_records(records: list[dict], max_boxes: int) -> dict:
    """:func:`_record`'s records of one batch as one element of the tf.data generator (then
    unbatched): boxes, labels and difficult flags padded to ``max_boxes``, with each
    record's ``count`` of them. ``from_generator`` costs about 0.35 ms of CPU an element (a
    Python call and its conversions): per example, that was a third of the pipeline's CPU
    time an image for configs/shapes.py (1.3-1.6 ms, now 0.9-1.0), on the two cores that
    the train step uses too."""
    size = len(records)
    stacked = {
        "image": np.array([record["image"] for record in records], object),
        "boxes": np.zeros((size, max_boxes, 4), np.float32),
        "labels": np.zeros((size, max_boxes), np.int32),
        "difficult": np.zeros((size, max_boxes), bool),
        "count": np.array([len(record["labels"]) for record in records], np.int32),
        "position": np.array([record["position"] for record in records], np.int64),
    }
    for row, (record, count) in enumerate(zip(records, stacked["count"], strict=True)):
        for key in ("boxes", "labels", "difficult"):
            stacked[key][row, :count] = record[key]
    return stacked


def _records_signature(max_boxes: int) -> dict:
    """The element spec of :func:`_stacked_records`'s elements."""
    return {
        "image": tf.TensorSpec([None], tf.string),
        "boxes": tf.TensorSpec([None, max_boxes, 4], tf.float32),
        "labels": tf.TensorSpec([None, max_boxes], tf.int32),
        "difficult": tf.TensorSpec([None, max_boxes], tf.bool),
        "count": tf.TensorSpec([None], tf.int32),
        "position": tf.TensorSpec([None], tf.int64),
    }


def _normalize(image: tf.Tensor, normalization: str) -> tf.Tensor:
    """[0, 1] image -> the backbone's input range."""
    scale, offset = _NORMALIZATIONS[normalization]
    if (scale, offset) == augment.IDENTITY:
        return image
    return augment.mix_channels(image, tf.linalg.diag(scale), offset)


def _to_model_input(image: tf.Tensor, output_size: int, normalization: str) -> tf.Tensor:
    """(h, w, 3) uint8 image -> normalized float32 (output_size, output_size, 3), without
    augmentation (evaluation, inference)."""
    # Normalizing before the resize is the same (both are linear) and cheaper for images
    # smaller than the model input.
    image = tf.cast(image, tf.float32) / 255.0
    return augment.resize(_normalize(image, normalization), output_size)


def preprocess_image(image: np.ndarray, *, image_size: int, normalization: str) -> np.ndarray:
    """One image -> the model input, exactly as evaluation prepares it (for inference).

    Args:
      image: (H, W, 3) uint8 RGB.
      image_size: side of the square model input (`config.data.image_size`).
      normalization: `config.data.normalization`.

    Returns:
      (image_size, image_size, 3) float32.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or 0 in image.shape:
        raise ValueError(f"image must be (H, W, 3) RGB with H, W >= 1, got {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(
            f"image must be uint8 (0-255, as image files hold), got {image.dtype}: "
            + uint8_advice(image)
        )
    image_size = check_int("image_size", image_size, 1)
    check_choice("normalization", normalization, config.NORMALIZATIONS)
    return _model_input_graph(image_size, normalization)(image).numpy()


@functools.lru_cache(maxsize=8)
def _model_input_graph(output_size: int, normalization: str):
    """`_to_model_input` of an (H, W, 3) uint8 image of any size as one TensorFlow graph:
    about twice as fast per image as running its ops one by one (a 640×480 photo to 224 on
    two CPU cores: 3.3-3.7 against 6.6-7.2 ms), a large part of the Detector's time for
    small models (BENCHMARKS.md, "Inference"). Without AutoGraph, as the pipelines' graphs
    (`_Batches`): its generated files would stay in /tmp after a command that fails."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)], autograph=False)
    def model_input(image):
        return _to_model_input(image, output_size, normalization)

    return model_input


def continuous_boxes(boxes: tf.Tensor, image_size: tf.Tensor) -> tf.Tensor:
    """VOC's boxes, pixel indices (1-based and inclusive: xmin=1 is the first pixel column)
    divided by the image size as TFDS stores them, in continuous coordinates: each min edge
    one pixel back, so that pixel column i spans [i - 1, i] and the whole image [0, 1].

    Those are the coordinates that the augmentations transform as they transform the pixels
    (a flip mirrors a box onto its mirrored pixels: in VOC's own it moved one pixel off), and
    that the model learns and outputs. The box's width in pixels is then the devkit's
    ``xmax - xmin + 1``: the evaluator's IoU without ``plus_one`` is the devkit's.

    Args:
      boxes: ``(N, 4)`` float32 normalized ``[ymin, xmin, ymax, xmax]`` of VOC's pixels.
      image_size: ``(2,)`` the image's (height, width) in pixels.
    """
    height, width = tf.unstack(tf.cast(image_size, tf.float32))
    min_edges_back = tf.stack([1 / height, 1 / width, 0.0, 0.0])
    return tf.maximum(boxes - min_edges_back, 0.0)  # xmin=0, outside VOC's pixels: the edge


def _preprocess(
    record, *, data_config, seed: int | None, one_based_boxes: bool
) -> dict[str, tf.Tensor]:
    """Decodes, augments (when `seed` is given) and pads one example to the contract."""
    image = decode_image(record["image"])
    image_size = tf.shape(image)[:2]
    # The record's own objects, without the padding of _stacked_records.
    boxes, labels, difficult = (
        record[key][: record["count"]] for key in ("boxes", "labels", "difficult")
    )
    augment_config = data_config.augment
    if one_based_boxes:
        boxes = continuous_boxes(boxes, image_size)
    output_size = data_config.image_size
    if seed is not None and augment_config.enabled:
        key = tf.stack([tf.constant(seed, tf.int64), record["position"]])
        augment_seed, blur_seed = tf.unstack(tf.random.experimental.stateless_split(key, num=2))
        image, boxes, keep = augment.augment(
            image,
            boxes,
            augment_seed,
            augment_config,
            output_size,
            _NORMALIZATIONS[data_config.normalization],
        )
    else:
        image = _to_model_input(image, output_size, data_config.normalization)
        keep = tf.ones_like(labels, tf.bool)
    if seed is not None and augment_config.enabled and augment_config.blur_probability > 0:
        image = augment.random_blur(
            image,
            blur_seed,
            probability=augment_config.blur_probability,
            max_sigma=augment_config.blur_max_sigma,
        )
    boxes = tf.boolean_mask(boxes, keep)
    padding = data_config.max_boxes - tf.shape(boxes)[0]

    def pad(values):
        return tf.pad(values, [[0, padding]] + [[0, 0]] * (len(values.shape) - 1))

    max_boxes = data_config.max_boxes
    return {
        "image": tf.ensure_shape(image, [output_size, output_size, 3]),
        "boxes": tf.ensure_shape(pad(boxes), [max_boxes, 4]),
        "labels": tf.ensure_shape(pad(tf.boolean_mask(labels, keep)), [max_boxes]),
        "difficult": tf.ensure_shape(pad(tf.boolean_mask(difficult, keep)), [max_boxes]),
        "mask": tf.range(max_boxes) < tf.shape(boxes)[0],
        "image_size": tf.cast(image_size, tf.int32),
    }


class _Batches:
    """The NumPy batches of ``examples`` of ``source`` (a ``sources.SplitSource``): a tf.data
    pipeline built once, each iteration reading them all anew, one iteration at a time.

    TensorFlow keeps every generator ``from_generator`` is given for as long as the process
    runs (the functions it traces stay registered with its global graph), and with it what
    the generator refers to: the split's data source and the files it has open (eval
    iterators made at each evaluation added two open files each time, with no end). So the
    generator reaches ``examples`` through ``reading``, emptied once these batches and every
    iteration of them (each keeps them) are dropped."""

    def __init__(
        self,
        examples: Examples,
        source,
        data_config,
        *,
        keep_difficult: bool,
        seed: int | None,
        batch_size: int,
        drop_remainder: bool,
    ):
        failures, max_boxes = [], data_config.max_boxes
        reading = {"examples": examples}

        def until_an_error():
            records = []
            try:
                # None: the batches were dropped before TensorFlow's threads called this.
                examples_now = reading.get("examples")
                for position, example in examples_now(0) if examples_now else ():
                    records.append(_record(example, position, max_boxes, keep_difficult))
                    if len(records) == batch_size:
                        yield _stacked_records(records, max_boxes)
                        records = []
            except Exception as error:
                # Raised by _numpy_batches, after the batches before it. Raised here,
                # TensorFlow would log its traceback and raise its own error with the
                # traceback as text.
                failures.append(error)
            if records:  # those before the error, or the last short batch's
                yield _stacked_records(records, max_boxes)

        dataset = tf.data.Dataset.from_generator(
            until_an_error, output_signature=_records_signature(max_boxes)
        ).unbatch()
        # Graph code as written (tf.cond, no Python branches on tensors): AutoGraph's rewrite
        # is not needed, and it leaves its generated files in /tmp whenever a process ends
        # without running its atexit handlers (a command that fails, a kill).
        preprocess = tf.autograph.experimental.do_not_convert(
            lambda record: _preprocess(
                record, data_config=data_config, seed=seed, one_based_boxes=source.one_based_boxes
            )
        )
        # One call per core: what tf.data's tuning allows at most (it starts at 16 or the
        # cores, whichever is fewer, which is where an AUTOTUNE map stays untuned).
        dataset = dataset.map(preprocess, num_parallel_calls=usable_cpus())
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        options = tf.data.Options()
        options.deterministic = True  # Same batches in the same order, every run.
        # No autotuning thread: freeing an iterator cancels that thread, which can miss the
        # cancellation and sleep out its tuning period, up to 60 s into a run (train.py
        # waited 6 to 85 s at exit, in this thread's wait). Untuned, the prefetch buffer
        # still grows whenever the reader finds it empty. Measured: the same images/s as
        # tuned (benchmarks/input_pipeline.py).
        options.autotune.enabled = False
        dataset = dataset.prefetch(tf.data.AUTOTUNE).with_options(options)
        self.element_spec = dataset.element_spec
        self._failures = failures
        self._read = functools.partial(
            _numpy_batches,
            dataset,
            failures,
            examples=examples,
            batch_size=batch_size,
            data_config=data_config,
            split_name=source.split_name,
        )
        weakref.finalize(self, reading.clear)

    def __iter__(self) -> Iterator[Batch]:
        self._failures.clear()  # an earlier iteration's
        yield from self._read()


# The iterators handed out and still referenced, closed when the interpreter exits.
_open_iterators = weakref.WeakSet()


@atexit.register
def _close_open_iterators() -> None:
    """Closes the iterators still open, while Python still runs: a tf.data iterator over
    ``from_generator`` freed during the interpreter's shutdown waits for a thread that can no
    longer run Python, and the process hangs (measured: a script that read one eval batch
    and ended hung 3 times in 3; a train iterator, 2 times in 4)."""
    for batches in list(_open_iterators):
        try:
            batches.close()
        except ValueError:  # being read in another thread: "generator already executing"
            continue


def _closed_at_exit(batches: Iterator[Batch]) -> Iterator[Batch]:
    """``batches`` (a generator), registered to be closed when the interpreter exits."""
    _open_iterators.add(batches)
    return batches


class UndecodableImageError(ValueError):
    """An image of a prepared dataset that TensorFlow could not decode, found while reading
    its batches: a damaged file, or an image its preparation did not check."""


def _numpy_batches(
    dataset: tf.data.Dataset,
    failures: list[Exception],
    *,
    examples: Examples,
    batch_size: int,
    data_config,
    split_name: str,
) -> Iterator[Batch]:
    """`dataset.as_numpy_iterator()`, then the error that ended its records early, if any
    (``failures``, from :class:`_Batches`), raised as it was: an image with more objects than
    max_boxes is its ValueError, not TensorFlow's error holding a traceback as text.

    Making the iterator runs TensorFlow's `from_generator` kernel, which pins glibc's mmap
    threshold at 128 KiB; `malloc_thresholds.restore` undoes that, or XLA:CPU faults in fresh
    pages for its scratch buffers at every step."""
    batches = dataset.as_numpy_iterator()
    malloc_thresholds.restore()
    batches_read = 0
    try:
        for batch in batches:
            batches_read += 1
            yield batch
    except tf.errors.InvalidArgumentError as error:
        # TensorFlow's own error is a page of graph nodes naming no file, and a command that
        # ended on it could hang at exit, in tf.data's threads. The dataset keeps the
        # examples' order, so the image is one of the next batch's: decoded again one by
        # one, the one that fails names its file.
        first = batches_read * batch_size
        filename = _undecodable_filename(itertools.islice(examples(first), batch_size))
        image = f"The image {filename!r}" if filename else "An image"
        raise UndecodableImageError(
            f"{image} of the {split_name} split of config.data.source="
            f"{data_config.source!r} could not be decoded ({errors.first_line(error.message)}): "
            "the prepared dataset's files are damaged, or hold an image TensorFlow cannot "
            "decode. Delete the dataset's folder under config.data.tfds_data_dir (for a "
            "VOC-format folder, its prepared copy there, whose preparation names such images) "
            "and run again to prepare it anew."
        ) from None
    if failures:
        raise failures[0]


def _undecodable_filename(examples: Iterable[tuple[int, sources.Example]]) -> str | None:
    """The filename of the first of the ``(position, sources.Example)`` pairs ``examples``
    whose image the pipeline cannot decode; None if they all decode."""
    for _, example in examples:
        try:
            decode_image(tf.constant(example.image))
        except tf.errors.InvalidArgumentError:
            return example.filename
    return None


def _to_devices(batch: Batch, local_devices: int) -> Batch:
    return {key: value.reshape(local_devices, -1, *value.shape[1:]) for key, value in batch.items()}


def _epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    """The order in which training reads the examples in `epoch` (a pure function)."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples)


def make_train_iterator(
    data_config, *, global_batch_size: int, seed: int, start_step: int = 0
) -> Iterator[Batch]:
    """Infinite iterator of augmented training batches for this process.

    Args:
      data_config: `config.data`.
      global_batch_size: examples per step over all processes and devices.
      seed: data order and augmentation seed.
      start_step: first step to yield; the batches equal the uninterrupted iterator's from
        this step on, and the skipped ones are never read.

    Yields:
      Batches per the contract, arrays shaped [local_devices, per_device, ...].
    """
    validate_data_config(data_config)
    layout = _layout(global_batch_size)
    global_batch_size = int(global_batch_size)
    seed, start_step = check_int("seed", seed, 0), check_int("start_step", start_step, 0)
    source = sources.open_split(data_config, "train")
    num_examples = _num_examples(source, data_config.max_train_examples)

    def examples(skip: int):
        """This process's examples, from the ``skip``-th on, with their positions in the
        global stream (which seed their augmentation)."""
        epoch, order = None, None
        for read in itertools.count(skip):
            step, slot = divmod(read, layout.per_process)
            position = (
                (start_step + step) * global_batch_size
                + layout.process_index * layout.per_process
                + slot
            )
            if position // num_examples != epoch:
                epoch = position // num_examples
                order = _epoch_permutation(seed, epoch, num_examples)
            yield position, source[int(order[position % num_examples])]

    batches = _Batches(
        examples,
        source,
        data_config,
        keep_difficult=data_config.train_on_difficult,
        seed=seed,
        batch_size=layout.per_process,
        drop_remainder=True,
    )
    return _closed_at_exit(_to_devices(batch, layout.local_devices) for batch in batches)


def make_eval_iterator(
    data_config, *, global_batch_size: int, split: str = "eval", max_examples: int | None = None
) -> Iterator[Batch]:
    """Finite, deterministic iterator over every example of a split, unaugmented: one
    iteration of :class:`EvalBatches` (which reads them again at each evaluation of a run).

    Args:
      data_config: `config.data`.
      global_batch_size: examples per batch over all processes and devices.
      split: 'eval' (data.eval_split) or 'train' (data.train_split, e.g. for train mAP).
      max_examples: use only the first `max_examples` of the split (after the config's cap
        for that split, data.max_eval_examples or data.max_train_examples).

    Yields:
      Batches per the contract plus `valid` (D, B) bool and `index` (D, B) int32, each
      example's index in the split (what names it, through the split's `image/filename`;
      -1 for padding); padding examples are otherwise all zeros with valid=False. Every
      process yields ceil(ceil(N / processes) / per_process) batches.
    """
    return iter(
        EvalBatches(
            data_config,
            global_batch_size=global_batch_size,
            split=split,
            max_examples=max_examples,
        )
    )


class EvalBatches:
    """The batches of :func:`make_eval_iterator` (same arguments), all of them again at each
    iteration, the same ones: the split opened and its pipeline built once, for every
    evaluation of a training run. Made anew at each evaluation, they kept about 21 KiB a
    split with no end (TFDS keeps every dataset builder, TensorFlow part of every pipeline),
    and a VOC-format folder's files were listed and fingerprinted again.

    Iterations are read one after the other, not interleaved: they share the record of the
    error that ends one early.
    """

    def __init__(
        self,
        data_config,
        *,
        global_batch_size: int,
        split: str = "eval",
        max_examples: int | None = None,
    ):
        validate_data_config(data_config)
        layout = _layout(global_batch_size)
        if split not in ("eval", "train"):
            raise ValueError(f"split must be 'eval' or 'train', got {split!r}")
        if max_examples is not None:
            max_examples = check_int("max_examples", max_examples, 1)
        source = sources.open_split(data_config, split)
        cap = data_config.max_eval_examples if split == "eval" else data_config.max_train_examples
        if max_examples is not None:
            cap = max_examples if cap is None else min(cap, max_examples)
        num_examples = _num_examples(source, cap)
        processes = jax.process_count()
        # Even contiguous shards: the first num_examples % processes get one example more.
        shard_sizes = [
            num_examples // processes + (p < num_examples % processes) for p in range(processes)
        ]
        start = sum(shard_sizes[: layout.process_index])
        stop = start + shard_sizes[layout.process_index]

        def examples(skip: int):
            """This process's examples, from the ``skip``-th on, with their indices in the
            split."""
            for index in range(start + skip, stop):
                yield index, source[index]

        self._batches = _Batches(
            examples,
            source,
            data_config,
            keep_difficult=True,
            seed=None,
            batch_size=layout.per_process,
            drop_remainder=False,
        )
        self._layout, self._first_index = layout, start
        self._num_batches = math.ceil(max(shard_sizes) / layout.per_process)

    def __iter__(self) -> Iterator[Batch]:
        return _closed_at_exit(
            _padded_batches(
                self._batches, self._layout, self._num_batches, first_index=self._first_index
            )
        )


def _padded_batches(
    batches: _Batches,
    layout: _Layout,
    num_batches: int,
    first_index: int,
):
    """Pads the last batch with valid=False examples, then adds all-padding batches; numbers
    the examples from ``first_index`` (the dataset keeps the records' order)."""
    padding = {
        key: np.zeros((layout.per_process, *spec.shape[1:]), spec.dtype.as_numpy_dtype)
        for key, spec in batches.element_spec.items()
    }
    yielded = 0
    for batch in batches:
        size = len(batch["image"])
        if size < layout.per_process:
            batch = {
                key: np.concatenate([value, padding[key][size:]]) for key, value in batch.items()
            }
        batch["valid"] = np.arange(layout.per_process) < size
        index = first_index + yielded * layout.per_process + np.arange(layout.per_process)
        batch["index"] = np.where(batch["valid"], index, -1).astype(np.int32)
        yielded += 1
        yield _to_devices(batch, layout.local_devices)
    for _ in range(yielded, num_batches):
        empty = {
            "valid": np.zeros(layout.per_process, bool),
            "index": np.full(layout.per_process, -1, np.int32),
        }
        yield _to_devices({**padding, **empty}, layout.local_devices)
