"""Train/eval iterators: the element contract, exact evaluation, sharding, resuming, caps."""

import dataclasses
import gc
import io
import itertools
import json
import logging
import os
import re
import subprocess
import sys
import weakref
from pathlib import Path

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from tests import tiny
from yolojax import errors
from yolojax.data import (
    default_data_config,
    get_dataset_info,
    make_eval_iterator,
    make_train_iterator,
    pipeline,
    sources,
    synthetic_shapes,
)
from yolojax.data.config import validate_data_config
from yolojax.data.testing import VocImage, VocObject, valid_box_data_source, write_voc_folder

NUM_TRAIN, NUM_TEST, SIZE = 10, 7, 32


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture
def config(data_dir):
    config = default_data_config()
    config.tfds_data_dir = data_dir
    config.image_size = SIZE
    config.synthetic.num_train = NUM_TRAIN
    config.synthetic.num_test = NUM_TEST
    config.synthetic.image_size = SIZE
    return config


def _stored_boxes(config, split: str) -> list[np.ndarray]:
    """Each stored example's (N, 4) boxes, in stored order, read with TFDS directly."""
    get_dataset_info(config)  # Prepares the dataset if this test is the first to use it.
    source = tiny.stored_split(config, split)
    return [np.stack(example["objects"]["bbox"]).reshape(-1, 4) for example in source]


def _rows(batch, key="boxes"):
    """Flattens [devices, per_device, ...] into rows; padded boxes are dropped via the mask."""
    values, mask = batch[key].reshape(-1, *batch[key].shape[2:]), batch["mask"].reshape(-1, 64)
    return [value[row_mask] for value, row_mask in zip(values, mask, strict=True)]


def _same(rows, expected) -> bool:
    return len(rows) == len(expected) and all(
        a.shape == b.shape and np.allclose(a, b, atol=1e-6)
        for a, b in zip(rows, expected, strict=True)
    )


def test_mock_data_batches_follow_the_contract(config):
    config.image_size = 16  # the model input; the mock images keep the stored 32x32
    with tfds.testing.mock_data(num_examples=6, as_data_source_fn=valid_box_data_source(6)):
        assert get_dataset_info(config).num_train_examples == 6
        train = next(make_train_iterator(config, global_batch_size=4, seed=0))
        (first, second) = list(make_eval_iterator(config, global_batch_size=4))
    expected = {
        "image": ((1, 4, 16, 16, 3), np.float32),
        "boxes": ((1, 4, 64, 4), np.float32),
        "labels": ((1, 4, 64), np.int32),
        "difficult": ((1, 4, 64), np.bool_),
        "mask": ((1, 4, 64), np.bool_),
        "image_size": ((1, 4, 2), np.int32),
    }
    assert {key: (value.shape, value.dtype) for key, value in train.items()} == expected
    expected["valid"] = ((1, 4), np.bool_)
    expected["index"] = ((1, 4), np.int32)
    assert {key: (value.shape, value.dtype) for key, value in second.items()} == expected
    assert first["valid"].all() and second["valid"].tolist() == [[True, True, False, False]]
    # Each example's place in the split, which names it (-1: padding).
    assert first["index"].tolist() == [[0, 1, 2, 3]] and second["index"].tolist() == [
        [4, 5, -1, -1]
    ]
    assert (train["image_size"] == SIZE).all()


def test_eval_reads_every_example_once_and_pads_the_last_batch(config):
    batches = list(make_eval_iterator(config, global_batch_size=4))
    assert [batch["valid"].sum() for batch in batches] == [4, 3]
    rows = _rows(batches[0]) + _rows(batches[1])[:3]
    assert _same(rows, _stored_boxes(config, "test"))
    padded = {key: value[0, 3] for key, value in batches[1].items()}
    assert padded.pop("index") == -1
    assert not padded["valid"] and all(not value.any() for value in padded.values())


def _as_process(monkeypatch, index: int, count: int) -> None:
    monkeypatch.setattr(jax, "process_count", lambda: count)
    monkeypatch.setattr(jax, "process_index", lambda: index)


def test_eval_shards_processes_evenly_with_equal_batch_counts(config, monkeypatch):
    shards, indices = [], []
    for index in range(2):
        _as_process(monkeypatch, index, 2)
        batches = list(make_eval_iterator(config, global_batch_size=4))  # 2 per process
        assert len(batches) == 2  # shards of 4 and 3 examples
        indices += [i for batch in batches for i in batch["index"].ravel() if i >= 0]
        shards.append(
            [
                row
                for batch in batches
                for row, ok in zip(_rows(batch), batch["valid"].ravel(), strict=True)
                if ok
            ]
        )
    assert [len(shard) for shard in shards] == [4, 3]
    assert _same(shards[0] + shards[1], _stored_boxes(config, "test"))
    assert indices == list(range(7))  # in the split's order, as the rows above


def test_processes_take_slices_of_the_same_global_batch(config, monkeypatch):
    whole = next(make_train_iterator(config, global_batch_size=4, seed=1))
    parts = []
    for index in range(2):
        _as_process(monkeypatch, index, 2)
        parts.append(next(make_train_iterator(config, global_batch_size=4, seed=1)))
    for key, value in whole.items():
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts], axis=1), value)


def test_resuming_yields_the_uninterrupted_batches_without_reading_the_skipped(config, monkeypatch):
    # 10 examples, 4 per step: step 2 straddles the first epoch boundary.
    uninterrupted = list(
        itertools.islice(make_train_iterator(config, global_batch_size=4, seed=3), 6)
    )
    positions, record = [], pipeline._record

    def recording_record(example, position, *args):
        positions.append(position)
        return record(example, position, *args)

    monkeypatch.setattr(pipeline, "_record", recording_record)
    resumed = list(
        itertools.islice(make_train_iterator(config, global_batch_size=4, seed=3, start_step=3), 3)
    )
    for expected, actual in zip(uninterrupted[3:], resumed, strict=True):
        for key in expected:
            np.testing.assert_array_equal(actual[key], expected[key])
    assert min(positions) == 3 * 4


def test_each_epoch_reads_every_example_once_in_a_seeded_order(config):
    config.augment.enabled = False
    config.train_on_difficult = True

    def epoch_rows(seed):
        batches = itertools.islice(make_train_iterator(config, global_batch_size=5, seed=seed), 2)
        return [row for batch in batches for row in _rows(batch)]

    stored = _stored_boxes(config, "train")
    rows = epoch_rows(seed=0)
    order = [next(i for i, boxes in enumerate(stored) if _same([row], [boxes])) for row in rows]
    assert sorted(order) == list(range(NUM_TRAIN))
    assert _same(epoch_rows(seed=0), rows) and not _same(epoch_rows(seed=1), rows)


def test_batches_split_over_local_devices_and_indivisible_sizes_are_refused(config, monkeypatch):
    monkeypatch.setattr(jax, "local_device_count", lambda: 2)
    monkeypatch.setattr(jax, "device_count", lambda: 2)
    batch = next(make_train_iterator(config, global_batch_size=4, seed=0))
    assert batch["image"].shape == (2, 2, SIZE, SIZE, 3) and batch["mask"].shape == (2, 2, 64)
    with pytest.raises(ValueError, match="global_batch_size=3 does not split over the 2 dev"):
        make_train_iterator(config, global_batch_size=3, seed=0)
    with pytest.raises(ValueError, match="global_batch_size=5 does not split over the 2 dev"):
        make_eval_iterator(config, global_batch_size=5)


# torchvision's ImageNet statistics, which the ported weights expect.
IMAGENET_MEAN, IMAGENET_STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def test_normalizations(config):
    images = {}
    for normalization in ("unit", "symmetric", "imagenet"):
        config.normalization = normalization
        images[normalization] = next(make_eval_iterator(config, global_batch_size=2))["image"]
    unit = images["unit"]
    # At the stored size, 'unit' is the stored image itself / 255: RGB, upright, decoded as
    # Pillow decodes it (a channel or axis order mixed up would show).
    source = tiny.stored_split(config, "test")
    stored = [Image.open(io.BytesIO(source[index]["image"])).convert("RGB") for index in (0, 1)]
    np.testing.assert_allclose(unit[0], np.stack(stored) / 255.0, atol=1e-6)
    np.testing.assert_allclose(images["symmetric"], 2 * unit - 1, atol=1e-5)
    np.testing.assert_allclose(images["imagenet"], (unit - IMAGENET_MEAN) / IMAGENET_STD, atol=1e-4)


def test_normalizations_of_augmented_training_images(config):
    # Training normalizes in the pass that jitters the colours (after the resize); the same
    # seed draws the same augmentation, so each normalization is the 'unit' image's affine
    # map (the blur after it is linear, with weights summing to 1: it commutes).
    config.augment.blur_probability = 0.5
    images = {}
    for normalization in ("unit", "symmetric", "imagenet"):
        config.normalization = normalization
        train = make_train_iterator(config, global_batch_size=4, seed=3)
        images[normalization] = np.concatenate([next(train)["image"] for _ in range(2)])
    unit = images["unit"]
    assert unit.min() >= 0 and unit.max() <= 1 + 1e-6 and unit.std() > 0.05
    np.testing.assert_allclose(images["symmetric"], 2 * unit - 1, atol=1e-5)
    np.testing.assert_allclose(images["imagenet"], (unit - IMAGENET_MEAN) / IMAGENET_STD, atol=1e-4)


def test_too_few_max_boxes_for_the_synthetic_images_is_refused_before_any_is_read(config):
    # Said per image as it was read, the count of that image: following it, a later image of
    # one object more stopped training again.
    most = config.synthetic.max_objects + 1  # and a tiny one, as the generator's test checks
    config.max_boxes = most - 1
    with pytest.raises(ValueError, match=rf"max_objects={most - 1} and a tiny one: set "):
        validate_data_config(config)
    config.max_boxes = most
    validate_data_config(config)


def test_more_objects_than_max_boxes_is_an_error_naming_the_image_and_the_fix(
    config, capfd, monkeypatch
):
    # Its own ValueError, not TensorFlow's error holding (and logging) a traceback as text.
    # Reached by the images of a folder or VOC, whose counts are not known beforehand; the
    # synthetic images' are, and the config check would name them first.
    monkeypatch.setattr(pipeline, "validate_data_config", lambda data_config: None)
    config.max_boxes = 1
    config.train_on_difficult = True
    expected = (
        r"^(train|test)_\d+\.jpg: (\d) objects, more than config\.data\.max_boxes=1: set "
        r"--config\.data\.max_boxes=\2 or more"
    )
    with pytest.raises(ValueError, match=expected):
        list(make_eval_iterator(config, global_batch_size=NUM_TEST))
    with pytest.raises(ValueError, match=expected):
        next(make_train_iterator(config, global_batch_size=2, seed=0))
    assert "Traceback" not in capfd.readouterr().err


def test_difficult_objects_left_out_of_training_do_not_count_against_max_boxes(tmp_path):
    # Counted before they were dropped: an image whose kept boxes fit was refused.
    objects = [VocObject("dog", (2, 2, 9, 9)), VocObject("dog", (4, 4, 16, 8), difficult=True)]
    image = VocImage("a", 20, 10, objects)
    config = default_data_config()
    config.source, config.class_names, config.image_size = "voc_folder", ("dog",), 32
    config.augment.enabled = False  # the box whole in the batch
    config.folder = write_voc_folder(str(tmp_path / "f"), [image], image_sets={"train": ["a"]})
    config.tfds_data_dir, config.train_split, config.max_boxes = str(tmp_path / "tfds"), "train", 1
    batch = next(make_train_iterator(config, global_batch_size=1, seed=0))
    assert batch["mask"].sum() == 1 and not batch["difficult"].any()
    config.train_on_difficult = True  # both boxes then: more than fit
    with pytest.raises(ValueError, match=r"a\.jpg: 2 objects, more than config\.data\.max_b"):
        next(make_train_iterator(config, global_batch_size=1, seed=0))


def test_labels_and_difficult_flags_follow_their_boxes_when_augmentation_drops_one(tmp_path):
    # Three objects of a 40×40 image (VOC pixels, 1-based, ends inclusive); continuous x, y:
    #   0: cat, wide (w 8 > h 5), on the left edge: x [0, 8], y [17, 22];
    #   1: dog, tall (w 6 < h 23), difficult: x [9, 15], y [7, 30];
    #   2: cat, wide (w 15 > h 7): x [17, 32], y [19, 26].
    # scale_translate 0.1: zoom z in [0.9, 1.1], shift t in ±0.1. The window starts at
    # round((0.5 - (0.5 + t) / z) · 40), at most round(20 - 40 · 0.4 / 1.1) = 5, and ends
    # round(40 / z) later, at least -2 + 36 = 34 (t = 0.1, z = 1.1): it always holds [5, 34]
    # on both axes, so objects 1 and 2 are never cut (a flip mirrors the window's content
    # after the cut). Object 0 is cut whenever the window starts right of column 0, and
    # min_visible_fraction 1 drops it then.
    # In every image, whatever was dropped, each kept box is a dog exactly when it is tall,
    # and difficult exactly then: the labels and flags of the boxes that stay, not shifted
    # up by one where box 0 left.

    objects = [
        VocObject("cat", (1, 18, 8, 22)),
        VocObject("dog", (10, 8, 15, 30), difficult=True),
        VocObject("cat", (18, 20, 32, 26)),
    ]
    names = [f"a{index}" for index in range(8)]
    config = default_data_config()
    config.source, config.class_names, config.image_size = "voc_folder", ("cat", "dog"), 32
    config.folder = write_voc_folder(
        str(tmp_path / "f"),
        [VocImage(name, 40, 40, objects) for name in names],
        image_sets={"train": names},
    )
    config.tfds_data_dir, config.train_split = str(tmp_path / "tfds"), "train"
    config.train_on_difficult = True
    config.augment.update(scale_translate=0.1, min_visible_fraction=1.0)
    batch = next(make_train_iterator(config, global_batch_size=8, seed=0))
    mask = batch["mask"].reshape(8, -1)
    counts = mask.sum(axis=1).tolist()
    assert set(counts) == {2, 3}, counts  # box 0 dropped in some images, kept in others
    boxes = batch["boxes"].reshape(8, -1, 4)[mask]
    tall = boxes[:, 2] - boxes[:, 0] > boxes[:, 3] - boxes[:, 1]
    np.testing.assert_array_equal(batch["labels"].reshape(8, -1)[mask], np.where(tall, 1, 0))
    np.testing.assert_array_equal(batch["difficult"].reshape(8, -1)[mask], tall)


def test_an_image_tensorflow_cannot_decode_is_one_error_naming_its_file(config, monkeypatch, capfd):
    # A damaged prepared file: TensorFlow's InvalidArgumentError, a page of graph nodes
    # naming nothing (and train.py could hang at exit on it).
    open_split = sources.open_split
    damaged_index = 5  # in the third batch of two: the batches before it are read

    class Damaged:
        def __init__(self, source):
            self.source, self.split_name = source, source.split_name
            self.one_based_boxes = source.one_based_boxes

        def __len__(self):
            return len(self.source)

        def __getitem__(self, index):
            example = self.source[index]
            if index == damaged_index:
                return dataclasses.replace(example, image=b"no image")
            return example

    monkeypatch.setattr(sources, "open_split", lambda *args: Damaged(open_split(*args)))

    def expected(split):
        filename = open_split(config, split)[damaged_index].filename
        assert filename  # synthetic_shapes names its images, as VOC does
        return (
            rf"^The image '{re.escape(filename)}' of the (test|train) split of "
            r"config\.data\.source='synthetic_shapes' could not be decoded \(.*\): the "
            "prepared dataset's files are damaged"
        )

    batches = []
    with pytest.raises(pipeline.UndecodableImageError, match=expected("eval")):
        batches.extend(make_eval_iterator(config, global_batch_size=2))
    assert len(batches) == damaged_index // 2
    config.augment.enabled = False
    with pytest.raises(pipeline.UndecodableImageError, match=expected("train")):
        list(itertools.islice(make_train_iterator(config, global_batch_size=2, seed=0), 20))
    assert "Traceback" not in capfd.readouterr().err


def test_caps_select_the_first_examples_and_train_subset_eval_is_unaugmented(config):
    config.max_train_examples = 3
    assert get_dataset_info(config).num_train_examples == 3
    first_three = _stored_boxes(config, "train")[:3]
    (subset,) = list(make_eval_iterator(config, split="train", max_examples=2, global_batch_size=2))
    assert _same(_rows(subset), first_three[:2])
    config.augment.enabled = False
    config.train_on_difficult = True
    batches = itertools.islice(make_train_iterator(config, global_batch_size=3, seed=0), 2)
    seen = [row for batch in batches for row in _rows(batch)]
    assert all(any(_same([row], [boxes]) for boxes in first_three) for row in seen)
    train_images = next(make_eval_iterator(config, split="train", global_batch_size=1))["image"]
    same_image_trained = next(
        batch["image"]
        for batch in make_train_iterator(config, global_batch_size=1, seed=0)
        if _same(_rows(batch), first_three[:1])
    )
    np.testing.assert_allclose(same_image_trained, train_images, atol=1e-6)


@pytest.mark.parametrize(
    "field, value, message",
    [
        # Named as the user sets them: --config.data.<field>.
        ("source", "coco", r"^config\.data\.source"),
        ("normalization", "zscore", r"^config\.data\.normalization"),
        ("image_size", 8, r"^config\.data\.image_size"),
        ("max_eval_examples", 0, r"^config\.data\.max_eval_examples"),
        ("synthetic.num_train", 0, r"^config\.data\.synthetic\.num_train must be an int >= 1"),
        # Settings of another source would be ignored without a word.
        ("class_names", ("a", "b"), r"^config\.data\.class_names applies to source 'voc_folder'"),
        ("folder", "/data/masks", r"^config\.data\.folder applies to .* 'synthetic_shapes'"),
    ],
)
def test_bad_config_values_are_named(config, field, value, message):
    section, _, field = field.rpartition(".")
    (config[section] if section else config)[field] = value
    with pytest.raises(ValueError, match=message):
        get_dataset_info(config)


def test_bad_augment_values_are_named(config):
    config.augment.hue = 0.9
    with pytest.raises(ValueError, match=r"^config\.data\.augment\.hue"):
        make_train_iterator(config, global_batch_size=2, seed=0)


def test_a_blur_wider_than_the_model_input_is_refused_at_start(config):
    config.image_size = 32
    config.augment.blur_max_sigma = 11.0  # reflect-pads 33 pixels: tf.pad failed mid-epoch
    with pytest.raises(ValueError, match=r"blur_max_sigma=11.0 blurs 33 pixels .* below 10.6"):
        validate_data_config(config)
    config.augment.blur_max_sigma = 10.0
    validate_data_config(config)


def test_shrinking_a_large_photo_averages_its_pixels_instead_of_skipping_them():
    # A 1-pixel white line every 3 columns: mean 1/3 however it is shrunk, as long as
    # every pixel counts; sampling 448 of 4032 columns (one in nine) hit none of them.
    image = np.zeros((300, 4032, 3), np.uint8)
    image[:, ::3] = 255
    small = pipeline.preprocess_image(image, image_size=448, normalization="unit")
    np.testing.assert_allclose(small.mean(), 1 / 3, atol=0.01)


def test_a_dataset_prepared_without_random_access_is_explained(config, tmp_path):
    config.tfds_data_dir = str(tmp_path)
    builder = synthetic_shapes.make_builder(
        synthetic_shapes.shapes_builder_config(**config.synthetic.to_dict()),
        data_dir=str(tmp_path),  # TFDS's default file format: TFRecord
    )
    builder.download_and_prepare()
    with pytest.raises(sources.DatasetNotPreparedError) as error:
        get_dataset_info(config)
    dataset = f"synthetic_shapes/{builder.builder_config.name}"
    assert str(error.value).startswith(f"{dataset} in {tmp_path} is stored as tfrecord")
    assert f"tfds.builder('{dataset}', data_dir=NEW_DIR, file_format='array_record')" in str(
        error.value
    )


@pytest.mark.parametrize("image_size", [SIZE, 20, 45])  # as stored, shrunk, enlarged
def test_preprocess_image_matches_evaluation_input(config, image_size):
    config.image_size = image_size
    batch = next(make_eval_iterator(config, global_batch_size=1))
    source = tiny.stored_split(config, "test")
    # Decoded by Pillow, as a user's own code (or Detector) reads a JPEG.
    first = np.asarray(Image.open(io.BytesIO(source[0]["image"])).convert("RGB"))
    model_input = pipeline.preprocess_image(first, image_size=image_size, normalization="imagenet")
    np.testing.assert_allclose(model_input, batch["image"][0, 0], atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        pipeline.preprocess_image(first / 255.0, image_size=SIZE, normalization="imagenet")


def test_opening_a_synthetic_dataset_logs_no_tfds_notices_but_other_warnings_pass(
    tmp_path, caplog, capsys
):
    config = default_data_config()
    config.tfds_data_dir = str(tmp_path)
    config.synthetic.update(num_train=4, num_test=2, image_size=32)
    with caplog.at_level(logging.WARNING):
        get_dataset_info(config)  # prepares it
        sources.open_split(config, "train")  # opens it again
        logging.getLogger("absl").warning("a TFDS warning that matters")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == ["a TFDS warning that matters"]
    # One line of its own on stdout, not TFDS's "Downloading and preparing ... Unknown size".
    out = capsys.readouterr().out
    assert out.count("Generating the synthetic shapes dataset (4 train and 2 test images") == 1
    assert "Downloading" not in out and "downloaded" not in out


def _run_script(script: str, *args: str, tmp_dir) -> subprocess.CompletedProcess:
    """Runs `python -c script *args` from the repository root with TMPDIR=tmp_dir."""
    try:
        return subprocess.run(
            [sys.executable, "-c", script, *args],
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, "TMPDIR": str(tmp_dir)},
            capture_output=True,
            text=True,
            timeout=300,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the script did its work but did not exit")


def _read_a_batch_in_a_script(config, *, ending: str, tmp_dir) -> subprocess.CompletedProcess:
    """Runs a script that reads one train batch, prints 'read', then runs `ending`."""
    script = (
        "import json, os, sys\n"
        "from ml_collections import ConfigDict\n"
        "from yolojax.data import make_train_iterator\n"
        "config = ConfigDict(json.loads(sys.argv[1]))\n"
        "train = make_train_iterator(config, global_batch_size=2, seed=0)\n"
        "next(train)\n"
        "print('read', flush=True)\n"
    ) + ending
    return _run_script(script, json.dumps(config.to_dict()), tmp_dir=tmp_dir)


def test_iterators_left_unfinished_are_closed_before_the_interpreter_shuts_down(
    config, tmp_path, monkeypatch
):
    # A user's script that reads a few batches and ends: a tf.data iterator over
    # from_generator freed during the interpreter's shutdown could hang it there for good
    # (often, not always: 2 of 4 tries with a train iterator, 3 of 3 with an eval one).
    monkeypatch.setattr(pipeline, "_open_iterators", weakref.WeakSet())  # this test's only
    train = make_train_iterator(config, global_batch_size=2, seed=0)
    evaluation = make_eval_iterator(config, global_batch_size=2)
    next(train), next(evaluation)
    pipeline._close_open_iterators()  # what runs at exit, before the shutdown
    for closed in (train, evaluation):
        with pytest.raises(StopIteration):
            next(closed)
    # And as a user's script runs it, to its end.
    finished = _read_a_batch_in_a_script(config, ending="", tmp_dir=tmp_path)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert finished.stdout.splitlines()[-1] == "read", finished.stdout


def test_a_process_that_ends_abruptly_leaves_no_files_in_tmp(config, tmp_path):
    # A failed command ends with os._exit (no atexit handlers), as does a killed one: the
    # pipeline's AutoGraph rewrite used to leave its generated modules in $TMPDIR then.
    finished = _read_a_batch_in_a_script(config, ending="os._exit(3)\n", tmp_dir=tmp_path)
    assert finished.returncode == 3 and "read" in finished.stdout, finished.stderr[-2000:]
    assert list(tmp_path.glob("__autograph_generated_file*")) == []


def test_inference_preprocessing_in_a_process_that_ends_abruptly_leaves_no_files_in_tmp(
    tmp_path,
):
    # As `python -m yolojax.predict` ends when a photo fails (os._exit, not atexit).
    script = (
        "import os, numpy as np\n"
        "from yolojax.data.pipeline import preprocess_image\n"
        "image = preprocess_image(np.zeros((20, 30, 3), np.uint8), image_size=32, "
        "normalization='imagenet')\n"
        "print(image.shape, flush=True)\n"
        "os._exit(3)\n"
    )
    finished = _run_script(script, tmp_dir=tmp_path)
    assert finished.returncode == 3 and "(32, 32, 3)" in finished.stdout, finished.stderr[-2000:]
    assert list(tmp_path.glob("__autograph_generated_file*")) == []


def _record_opened_splits(monkeypatch) -> list:
    """The splits ``sources.open_split`` opens from here on, as weak references."""
    opened, original = [], sources.open_split

    def open_split(*args, **kwargs):
        source = original(*args, **kwargs)
        opened.append(weakref.ref(source))
        return source

    monkeypatch.setattr(sources, "open_split", open_split)
    return opened


def test_eval_iterators_let_go_of_their_data_source_once_read_or_dropped(config, monkeypatch):
    # TensorFlow keeps every generator given to from_generator for the life of the process:
    # reachable from one, an iterator's data source stayed, and with it its open files, two
    # more files (and about a MiB) at each evaluation of a training run.
    opened = _record_opened_splits(monkeypatch)
    for _ in make_eval_iterator(config, global_batch_size=4):  # read to the end
        pass
    partly = make_eval_iterator(config, global_batch_size=4, split="train")
    next(partly)
    del partly
    del _
    make_eval_iterator(config, global_batch_size=4)  # dropped unread
    gc.collect()
    assert len(opened) == 3
    assert [source() for source in opened] == [None] * 3


def test_eval_batches_read_again_are_the_same_from_one_opening_let_go_once_dropped(
    config, monkeypatch
):
    # A training run evaluates many times: opened at each, its splits kept memory with no
    # end. One EvalBatches reads the same batches at each evaluation, bit for bit.
    expected = list(make_eval_iterator(config, global_batch_size=4))  # 7 examples: padded
    opened = _record_opened_splits(monkeypatch)
    evaluation = pipeline.EvalBatches(config, global_batch_size=4)
    first = list(evaluation)
    cut_short = iter(evaluation)  # an evaluation that a Ctrl-C or an error ended
    next(cut_short)
    del cut_short
    second = list(evaluation)
    assert len(opened) == 1
    for batches in (first, second):
        assert len(batches) == len(expected) == 2
        for batch, same in zip(batches, expected, strict=True):
            assert batch.keys() == same.keys()
            assert all(np.array_equal(batch[key], same[key]) for key in batch)
    del evaluation
    gc.collect()
    assert opened[0]() is None


def test_a_split_that_selects_nothing_names_the_key(config):
    config.train_split = "train[:0]"
    with pytest.raises(ValueError, match=r"^config\.data\.train_split='train\[:0\]' selects no"):
        get_dataset_info(config)


def test_a_data_folder_that_cannot_be_written_names_the_setting(config, tmp_path):
    config.tfds_data_dir = str(tmp_path / "a_file")
    (tmp_path / "a_file").write_text("")
    with pytest.raises(
        errors.MachineError, match=r"a_file.*another data folder \(--config\.data\.tfds_data_dir"
    ):
        get_dataset_info(config)


def test_a_disk_that_fills_while_the_dataset_is_generated_is_named(config, tmp_path, monkeypatch):
    # ArrayRecord's writer reports a full disk as a RuntimeError (TFDS adds the split to it),
    # which printed 40 lines of traceback.
    def full_disk(cls, path, examples):
        raise RuntimeError(f"write() failed: No space left on device; writing {path}; at byte 4096")

    adapter = tfds.core.file_adapters.ArrayRecordFileAdapter
    monkeypatch.setattr(adapter, "write_examples", classmethod(full_disk))
    config.tfds_data_dir = str(tmp_path / "full")
    with pytest.raises(errors.MachineError) as error:
        get_dataset_info(config)
    assert str(error.value) == (
        f"Cannot prepare the dataset in its TFDS data folder {tmp_path / 'full'} (OSError: No "
        "space left on device): free space, or choose another data folder "
        "(--config.data.tfds_data_dir)."
    )
    monkeypatch.undo()  # space freed: the next run prepares it whole
    assert get_dataset_info(config).num_train_examples == NUM_TRAIN


def test_a_data_folder_whose_name_is_not_utf8_is_named_at_the_check(config, tmp_path):
    # ArrayRecord's writer failed with a cast error once the images were generated.
    config.tfds_data_dir = os.fsdecode(bytes(tmp_path) + b"/d\xe9ta")
    with pytest.raises(ValueError, match=r"^config\.data\.tfds_data_dir .*d\\udce9ta' is not"):
        validate_data_config(config)


def test_an_error_outside_the_data_folder_is_not_blamed_on_it(tmp_path):
    # Preparing a VOC folder also reads the user's folder: an error there is its own.
    def unreadable_annotations(**kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "masks" / "a.xml"))

    with pytest.raises(PermissionError, match="Permission denied"):
        sources._prepared(unreadable_annotations, str(tmp_path / "tfds"))
