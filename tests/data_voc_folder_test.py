"""VOC-format folders: layouts, splits, class names, bad data, and the pipeline on top."""

import ast
import itertools
import logging
import os
import re
import shlex
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from yolojax.config import default_config, validate_config
from yolojax.data import (
    default_data_config,
    get_dataset_info,
    make_eval_iterator,
    make_train_iterator,
    sources,
    voc_folder,
    voc_layout,
    voc_xml,
)
from yolojax.data.config import validate_data_config
from yolojax.data.testing import VocImage, VocObject, write_voc_folder


def _prepare(folder, data_dir, **config_kwargs) -> tfds.core.DatasetBuilder:
    builder = voc_folder.VocFolder(
        config=voc_folder.voc_folder_config(str(folder), **config_kwargs),
        data_dir=str(data_dir),
        file_format="array_record",
    )
    builder.download_and_prepare()
    return builder


def _examples(builder, split) -> dict[str, dict]:
    source = builder.as_data_source(split, decoders={"image": tfds.decode.SkipDecoding()})
    return {example["image/filename"].decode(): example for example in source}


def test_folder_with_image_sets_keeps_its_splits_boxes_and_flags(tmp_path):
    images = [
        VocImage("a", 60, 40, [VocObject("dog", (6, 4, 30, 20)), VocObject("cat", (0, 0, 60, 40))]),
        VocImage(
            "b", 50, 50, [VocObject("cat", (5, 10, 25, 50), difficult=True)], extension=".png"
        ),
        VocImage("c", 30, 20, []),
    ]
    sets = {"train": ["a", "b"], "val": ["c"], "test": ["c", "a"]}
    builder = _prepare(write_voc_folder(str(tmp_path / "f"), images, image_sets=sets), tmp_path)
    assert {split: info.num_examples for split, info in builder.info.splits.items()} == {
        "train": 2,
        "validation": 1,
        "test": 2,
    }
    assert builder.info.features["objects"]["label"].names == ["cat", "dog"]  # sorted
    train = _examples(builder, "train")
    # (ymin, xmin, ymax, xmax) = pixel coordinates / (height, width, height, width).
    np.testing.assert_allclose(
        np.stack(train["a.jpg"]["objects"]["bbox"]), [[0.1, 0.1, 0.5, 0.5], [0, 0, 1, 1]]
    )
    assert list(train["a.jpg"]["objects"]["label"]) == [1, 0]
    np.testing.assert_allclose(np.stack(train["b.png"]["objects"]["bbox"]), [[0.2, 0.1, 1, 0.5]])
    assert list(train["b.png"]["objects"]["is_difficult"]) == [True]
    assert len(_examples(builder, "validation")["c.jpg"]["objects"]["label"]) == 0


def test_folder_without_image_sets_gets_a_seeded_90_10_split(tmp_path):
    ids = [f"img{index:02d}" for index in range(20)]
    images = [VocImage(image_id, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for image_id in ids]
    folder = write_voc_folder(str(tmp_path / "f"), images)
    splits = voc_layout.folder_splits(folder, split_seed=0)
    assert 1 <= len(splits["validation"]) <= 5  # about a tenth
    assert sorted(splits["train"] + splits["validation"]) == ids
    assert voc_layout.folder_splits(folder, split_seed=0) == splits
    assert voc_layout.folder_splits(folder, split_seed=1)["validation"] != splits["validation"]
    # Evaluation then runs on it, and the training log calls its mAP so.
    config = default_data_config()
    config.source, config.folder = "voc_folder", folder
    config.tfds_data_dir = str(tmp_path / "tfds")
    info = get_dataset_info(config)
    assert (info.num_eval_examples, info.eval_split_name) == (
        len(splits["validation"]),
        "validation",
    )


def test_given_class_names_set_the_label_order(tmp_path):
    images = [
        VocImage("a", 20, 20, [VocObject("dog", (1, 1, 5, 5)), VocObject("cat", (2, 2, 8, 8))])
    ]
    folder = write_voc_folder(str(tmp_path / "f"), images, image_sets={"train": ["a"]})
    builder = _prepare(folder, tmp_path, class_names=("person", "cat", "dog"))
    assert list(_examples(builder, "train")["a.jpg"]["objects"]["label"]) == [2, 1]


def _break(folder: str, problem: str) -> str:
    """Damages image 'bad' of `folder` as `problem` says; returns the file the error names."""
    xml = os.path.join(folder, "Annotations", "bad.xml")
    jpeg = os.path.join(folder, "JPEGImages", "bad.jpg")
    if problem == "corrupt or unreadable image":
        with open(jpeg, "wb") as file:
            file.write(b"\xff\xd8\xff\xe0 not really a jpeg")
        return jpeg
    if problem == "not an image file Pillow can read":
        with open(jpeg, "w") as file:
            file.write("a text file named .jpg")
        return jpeg
    if problem == "an image too large to read":  # a PNG of 20000 × 20000 pixels, no data

        def chunk(kind: bytes, data: bytes) -> bytes:
            return (
                struct.pack(">I", len(data))
                + kind
                + data
                + struct.pack(">I", zlib.crc32(kind + data))
            )

        header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
        with open(jpeg, "wb") as file:
            file.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b""))
        return jpeg
    if problem == "image not found":
        os.remove(jpeg)
        return xml
    if problem == "an image the input pipeline cannot decode":
        # Pillow reads a WebP with transparency; TensorFlow's decoder refused it mid-training,
        # with a traceback naming no file (and the run often hung).
        rgba = np.zeros((10, 20, 4), np.uint8)
        rgba[..., 3] = 128
        Image.fromarray(rgba, "RGBA").save(jpeg, "WEBP", lossless=True)
        return jpeg
    if problem == "malformed XML (multi-byte encodings":  # Python's parser reads no GBK
        with open(xml, encoding="utf-8") as file:
            text = file.read()
        with open(xml, "w", encoding="gbk") as file:
            file.write("<?xml version='1.0' encoding='GBK'?>" + text.split("?>", 1)[-1])
        return xml
    with open(xml) as file:
        text = file.read()
    replacements = {
        "malformed XML": ("</annotation>", ""),
        "unknown class 'cat'": ("<name>dog</name>", "<name>cat</name>"),
        "lies outside the 20x10 image": ("<xmax>9</xmax>", "<xmax>25</xmax>"),
        "its corners are swapped": ("<xmax>9</xmax>", "<xmax>1</xmax>"),
        "<size> says 30x10": ("<width>20</width>", "<width>30</width>"),
    }
    old, new = replacements[problem]
    with open(xml, "w") as file:
        file.write(text.replace(old, new))
    return xml


BAD_DATA = [
    "corrupt or unreadable image",
    "an image too large to read",
    "not an image file Pillow can read",
    "image not found",
    "malformed XML",
    "unknown class 'cat'",
    "lies outside the 20x10 image",
    "its corners are swapped",
    "<size> says 30x10",
    "an image the input pipeline cannot decode",
    "malformed XML (multi-byte encodings",
]


def _folder_with_one_bad_image(tmp_path, problem: str) -> tuple[str, str]:
    images = [
        VocImage(image_id, 20, 10, [VocObject("dog", (2, 1, 9, 8))]) for image_id in ("ok", "bad")
    ]
    folder = write_voc_folder(str(tmp_path / "f"), images, image_sets={"train": ["ok", "bad"]})
    return folder, _break(folder, problem)


def test_a_box_one_pixel_wide_is_a_box_and_one_left_of_the_first_pixel_is_outside(tmp_path):
    # VOC's pixels count from 1, ends inclusive: xmin == xmax is one pixel column, which was
    # refused as "zero area"; xmax = 0 lies left of the first column.
    image = VocImage("a", 20, 10, [VocObject("dog", (5, 2, 5, 8))])
    folder = write_voc_folder(str(tmp_path / "f"), [image], image_sets={"train": ["a"]})
    config = default_data_config()
    config.source, config.folder = "voc_folder", folder
    config.tfds_data_dir = str(tmp_path / "tfds")
    config.train_split = config.eval_split = "train"
    config.image_size = 32
    (batch,) = list(make_eval_iterator(config, global_batch_size=1))
    # Column 5 and rows 2..8, in continuous coordinates: x 4..5, y 1..8 (yxyx / size).
    np.testing.assert_allclose(batch["boxes"][0, 0, 0], [0.1, 0.2, 0.8, 0.25], atol=1e-6)
    outside = VocImage("b", 20, 10, [VocObject("dog", (0, 2, 0, 8))])
    folder = write_voc_folder(str(tmp_path / "g"), [outside], image_sets={"train": ["b"]})
    with pytest.raises(
        voc_folder.BadDataError,
        match=r"box .* lies wholly outside the 20x10 image by 1 pixel: fix the box in the .xml "
        r"file "
        r"\(xmin and ymin at least 0, xmax up to 20 and ymax up to 10, at least 1: VOC's pixels",
    ):
        _prepare(folder, tmp_path / "data", class_names=("dog",))


def test_a_box_a_labelling_slip_beyond_its_image_is_clipped_when_asked_and_said(
    tmp_path, caplog, monkeypatch
):
    # 'slip' reaches 1 pixel right of its 20x10 image (xmax 21) and 0.5 above (ymin -0.5);
    # 'far' ends 6 pixels right of it: no slip, so no clipping is offered for it.
    images = [
        VocImage("ok", 20, 10, [VocObject("dog", (2, 1, 9, 8))]),
        VocImage("slip", 20, 10, [VocObject("dog", (2, -0.5, 21, 8))]),
        VocImage("far", 20, 10, [VocObject("dog", (2, 1, 26, 8))]),
    ]
    sets = {"train": ["ok", "slip", "far"]}
    folder = write_voc_folder(str(tmp_path / "f"), images, image_sets=sets)
    with pytest.raises(voc_folder.BadDataError) as error:
        _prepare(folder, tmp_path / "refused", class_names=("dog",))
    slip, far = str(error.value).splitlines()[1:3]
    rule = (
        "fix the box in the .xml file (xmin and ymin at least 0, xmax up to 20 and ymax up to "
        "10, at least 1: VOC's pixels count from 1)"
    )
    assert slip.endswith(
        "slip.xml: object 'dog' box (xmin=2, ymin=-0.5, xmax=21, ymax=8) lies outside the 20x10 "
        f"image by 1 pixel: {rule}, or clip the boxes that overshoot this little with "
        "--config.data.clip_box_overshoot=1"
    )
    assert far.endswith(
        f"far.xml: object 'dog' box (xmin=2, ymin=1, xmax=26, ymax=8) lies "
        f"outside the 20x10 image by 6 pixels: {rule}"
    )

    # Skipped without clipping; kept, clipped, with clipping: a copy prepared of its own.
    skipped = _prepare(folder, tmp_path / "data", class_names=("dog",), on_bad_data="skip")
    assert sorted(_examples(skipped, "train")) == ["ok.jpg"]
    with caplog.at_level(logging.WARNING):
        clipped = _prepare(
            folder,
            tmp_path / "data",
            class_names=("dog",),
            on_bad_data="skip",
            clip_box_overshoot=1,
        )
    examples = _examples(clipped, "train")
    assert sorted(examples) == ["ok.jpg", "slip.jpg"]  # 'far' is still bad data
    # Clipped to (2, 0, 20, 8), stored as TFDS voc stores boxes: yxyx pixels / size.
    np.testing.assert_allclose(
        examples["slip.jpg"]["objects"]["bbox"], [[0 / 10, 2 / 20, 8 / 10, 20 / 20]], atol=1e-6
    )
    assert (
        f"voc_folder: clipped 1 box of 1 image in split 'train' of {folder} to their image "
        "(config.data.clip_box_overshoot=1): slip.jpg"
    ) in caplog.text
    assert "skipped 1 of 3 images" in caplog.text and "far.xml" in caplog.text
    # A later process, which reads the prepared copy, says so once too.
    config = default_data_config()
    config.update(source="voc_folder", folder=folder, class_names=("dog",), on_bad_data="skip")
    config.update(clip_box_overshoot=1.0, tfds_data_dir=str(tmp_path / "data"))
    config.train_split = config.eval_split = "train"
    monkeypatch.setattr(sources, "_built_here", set())
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert get_dataset_info(config).num_train_examples == 2  # the copy above: no new one
        get_dataset_info(config)
    assert (
        caplog.text.count(
            "was built with the boxes of 1 image clipped to their images "
            "(config.data.clip_box_overshoot): train: slip.jpg (1 box)"
        )
        == 1
    )


def test_a_fractional_overshoot_is_clipped_at_its_value_and_a_box_wholly_outside_never(
    tmp_path,
):
    # 20.3 - 20 is 0.30000000000000071 in floating point: refused at 0.3, which the message
    # had offered. (21, 2, 22, 8) lies wholly right of a 20-pixel-wide image: clipped, it
    # would be a sliver of the edge's column, trained on as an object.
    images = [
        VocImage("frac", 20, 10, [VocObject("dog", (2, 1, 20.3, 8))]),
        VocImage("gone", 20, 10, [VocObject("dog", (21, 2, 22, 8))]),
    ]
    folder = write_voc_folder(str(tmp_path / "f"), images, image_sets={"train": ["frac", "gone"]})
    with pytest.raises(voc_folder.BadDataError) as error:
        _prepare(folder, tmp_path / "data", class_names=("dog",), clip_box_overshoot=0.3)
    assert "frac.xml" not in str(error.value)
    assert "lies wholly outside the 20x10 image by 2 pixels: fix the box in the .xml file (" in (
        str(error.value)
    )
    assert "clip_box_overshoot=2" not in str(error.value)


@pytest.mark.parametrize(
    ("source", "overshoot", "expected"),
    [
        ("voc_folder", -1.0, r"config\.data\.clip_box_overshoot must be a finite number >= 0"),
        ("synthetic_shapes", 1.0, r"applies to source 'voc_folder' only .* leave it at 0"),
    ],
)
def test_a_box_overshoot_to_clip_is_checked(source, overshoot, expected):
    config = default_data_config()
    config.source, config.clip_box_overshoot = source, overshoot
    config.folder = "/data" if source == "voc_folder" else None
    with pytest.raises(ValueError, match=expected):
        validate_data_config(config)


@pytest.mark.parametrize("problem", BAD_DATA)
def test_bad_data_raises_naming_the_file_and_the_problem(tmp_path, problem):
    folder, bad_file = _folder_with_one_bad_image(tmp_path, problem)
    with pytest.raises(voc_folder.BadDataError) as error:
        _prepare(folder, tmp_path, class_names=("dog",))
    assert bad_file in str(error.value) and problem in str(error.value)
    assert "(split 'train')\n" in str(error.value)  # which split: evaluate.py reads one
    assert "BytesIO" not in str(error.value)  # Pillow's name for what it was given
    assert str(error.value).endswith("(--config.data.on_bad_data=skip leaves such images out.)")


def test_every_bad_file_of_a_split_is_named_at_once(tmp_path):
    # Only the first was: a user fixed a folder one run a file.
    ids = ["ok", "b1", "b2", "b3"]
    images = [VocImage(image_id, 20, 10, [VocObject("dog", (2, 1, 9, 8))]) for image_id in ids]
    folder = write_voc_folder(str(tmp_path / "f"), images, image_sets={"train": ids})
    annotations = os.path.join(folder, "Annotations")
    os.remove(os.path.join(folder, "JPEGImages", "b1.jpg"))  # image not found
    for image_id, old, new in (
        ("b2", "<xmax>9</xmax>", "<xmax>1</xmax>"),  # corners swapped
        ("b3", "</annotation>", ""),
    ):
        path = os.path.join(annotations, f"{image_id}.xml")
        with open(path) as file:
            text = file.read()
        with open(path, "w") as file:
            file.write(text.replace(old, new))
    with pytest.raises(voc_folder.BadDataError) as error:
        _prepare(folder, tmp_path, class_names=("dog",))
    lines = str(error.value).splitlines()
    assert lines[0] == f"3 of the 4 images of split 'train' in {folder} are unusable:"
    assert [line.split(": ", 1)[1].split(" (")[0] for line in lines[1:4]] == [
        "image not found",
        "object 'dog' box",
        "malformed XML",
    ]
    assert lines[-1] == "(--config.data.on_bad_data=skip leaves such images out.)"


def test_the_bad_files_of_every_split_are_named_at_once(tmp_path):
    # The splits are read in turn, and the first with a bad file stopped the preparation:
    # the test split's were named only once the train split's were fixed, a run later.
    ids = ["t1", "t2", "t3", "e1", "e2"]
    images = [VocImage(image_id, 20, 10, [VocObject("dog", (2, 1, 9, 8))]) for image_id in ids]
    image_sets = {"train": ids[:3], "test": ids[3:]}
    folder = write_voc_folder(str(tmp_path / "f"), images, image_sets=image_sets)
    for image_id in ("t1", "t2", "e2"):
        os.remove(os.path.join(folder, "JPEGImages", f"{image_id}.jpg"))
    with pytest.raises(voc_folder.BadDataError) as error:
        _prepare(folder, tmp_path, class_names=("dog",))
    lines = str(error.value).splitlines()
    annotations = os.path.join(folder, "Annotations")
    assert lines[0] == f"2 of the 3 images of split 'train' in {folder} are unusable:"
    assert [line.split(": ")[0].strip() for line in lines[1:]] == [
        os.path.join(annotations, "t1.xml"),
        os.path.join(annotations, "t2.xml"),
        os.path.join(annotations, "e2.xml"),  # the test split's one, on its own line
        "(--config.data.on_bad_data=skip leaves such images out.)",
    ]
    assert "image not found" in lines[3]


def _with_exif_orientation(path: str, orientation: int) -> None:
    """Saves the JPEG at `path` again, its pixels as they are, tagged with an EXIF
    orientation (6: a phone's portrait photo, stored on its side)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    with Image.open(path) as image:
        pixels = image.copy()
    pixels.save(path, "JPEG", quality=95, exif=exif)


def test_photos_with_an_exif_orientation_are_named(tmp_path, caplog):
    # Boxes drawn on the upright photo (as viewers and most labelling tools show it) do not
    # fit the stored pixels that training uses, and predict turns photos upright: silent.
    images = [VocImage(name, 20, 10, [VocObject("dog", (2, 1, 9, 8))]) for name in "abc"]
    folder = write_voc_folder(str(tmp_path / "f"), images, image_sets={"train": ["a", "b", "c"]})
    _with_exif_orientation(os.path.join(folder, "JPEGImages", "b.jpg"), 6)
    _with_exif_orientation(os.path.join(folder, "JPEGImages", "c.jpg"), 1)  # upright: no word
    with caplog.at_level(logging.WARNING):
        builder = _prepare(folder, tmp_path / "data", class_names=("dog",))
    assert builder.info.splits["train"].num_examples == 3  # used as stored
    assert "an EXIF orientation turns 1 image of split 'train' in" in caplog.text
    assert f"{folder} (b.jpg): training and evaluation use their pixels as stored" in caplog.text
    assert "c.jpg" not in caplog.text
    # With the <size> of the upright photo, the size's error says why.
    with open(os.path.join(folder, "Annotations", "b.xml")) as file:
        text = file.read()
    with open(os.path.join(folder, "Annotations", "b.xml"), "w") as file:
        file.write(
            text.replace("<width>20</width>", "<width>10</width>").replace(
                "<height>10</height>", "<height>20</height>"
            )
        )
    with pytest.raises(
        voc_folder.BadDataError,
        match=r"says 10x20 but .*b\.jpg is 20x10 as "
        r"stored \(its EXIF orientation turns it .*exif_transpose",
    ):
        _prepare(folder, tmp_path / "data2", class_names=("dog",))


def test_a_photo_with_a_damaged_exif_block_is_used_as_stored(tmp_path, monkeypatch):
    # As yolojax.predict reads it; Pillow's struct.error stopped the preparation with a
    # traceback naming no file.
    images = [VocImage("a", 20, 10, [VocObject("dog", (2, 1, 9, 8))])]
    folder = write_voc_folder(str(tmp_path / "f"), images, image_sets={"train": ["a"]})

    def damaged(image):
        raise struct.error("required argument is not a float")

    monkeypatch.setattr(Image.Image, "getexif", damaged)
    builder = _prepare(folder, tmp_path / "data", class_names=("dog",))
    assert builder.info.splits["train"].num_examples == 1


def test_images_without_an_xml_file_are_named_and_a_broken_link_ignored(tmp_path, caplog):
    # LabelImg writes no .xml for an image without objects: such images were left out
    # without a word. A broken link among the images stopped the preparation with
    # FileNotFoundError, though no annotation names it.
    images = [VocImage(name, 20, 10, [VocObject("dog", (2, 1, 9, 8))]) for name in "abcd"]
    folder = write_voc_folder(str(tmp_path / "f"), images)  # no ImageSets: a random split
    os.remove(os.path.join(folder, "Annotations", "c.xml"))
    os.symlink("/no/such/image.jpg", os.path.join(folder, "JPEGImages", "gone.jpg"))
    # d.jpg's file is d_boxes.xml, whose <filename> names it: d.jpg is used, not "left out".
    annotations = os.path.join(folder, "Annotations")
    os.rename(os.path.join(annotations, "d.xml"), os.path.join(annotations, "d_boxes.xml"))
    with caplog.at_level(logging.WARNING):
        builder = _prepare(folder, tmp_path / "data", class_names=("dog",))
    assert sum(split.num_examples for split in builder.info.splits.values()) == 3
    assert (
        f"{folder}: 2 images have no .xml file (JPEGImages/c.jpg, JPEGImages/gone.jpg) and are "
        "left out." in caplog.text
    )


def test_a_split_whose_every_image_is_skipped_says_so(tmp_path):
    # TFDS's "Failed to finalize writing of split ... No examples were yielded" traceback.
    folder, bad_file = _folder_with_one_bad_image(tmp_path, "unknown class 'cat'")
    os.remove(os.path.join(folder, "Annotations", "ok.xml"))
    with open(os.path.join(folder, "ImageSets", "Main", "train.txt"), "w") as file:
        file.write("bad\n")
    with pytest.raises(
        voc_folder.BadDataError,
        match=r"Every image of split 'train' in .* has "
        r"bad data: skipping them would leave the split empty\. Fix them",
    ) as error:
        _prepare(folder, tmp_path / "data", class_names=("dog",), on_bad_data="skip")
    assert bad_file in str(error.value)


def test_class_names_that_are_not_names_are_refused_by_key(tmp_path):
    images = [VocImage("a", 20, 10, [VocObject("dog", (2, 1, 9, 8))])]
    folder = write_voc_folder(str(tmp_path / "f"), images)
    # --config.data.class_names=None on a tuple field gives (None,): a TypeError traceback.
    with pytest.raises(ValueError, match=r"config\.data\.class_names=\(None,\) must be names"):
        voc_folder.voc_folder_config(folder, class_names=(None,))


def test_without_class_names_every_bad_file_is_named_at_once_not_the_first_xml(tmp_path):
    # Without class names in the config, the first read of every .xml is the scan for them:
    # it stopped at the first malformed one, and the user fixed one file a run.
    images = [
        VocImage(image_id, 20, 10, [VocObject("dog", (2, 1, 9, 8))])
        for image_id in ("ok", "bad", "worse", "gone")
    ]
    folder = write_voc_folder(
        str(tmp_path / "f"), images, image_sets={"train": ["ok", "bad", "worse", "gone"]}
    )
    for image_id in ("bad", "worse"):
        with open(os.path.join(folder, "Annotations", f"{image_id}.xml"), "w") as file:
            file.write("<annotation><object>")
    os.remove(os.path.join(folder, "JPEGImages", "gone.jpg"))
    with pytest.raises(voc_folder.BadDataError) as error:
        _prepare(folder, tmp_path / "data")
    message = str(error.value)
    assert message.startswith("3 of the 4 images of split 'train'")
    for name in ("bad.xml", "worse.xml", "gone.jpg"):
        assert name in message
    assert message.endswith("(--config.data.on_bad_data=skip leaves such images out.)")
    skipped = _prepare(folder, tmp_path / "skipped", on_bad_data="skip")
    assert skipped.info.features["objects"]["label"].names == ["dog"]
    assert list(_examples(skipped, "train")) == ["ok.jpg"]


def test_a_folder_whose_xml_files_with_objects_are_all_unreadable_names_one(tmp_path):
    folder = write_voc_folder(str(tmp_path / "f"), [VocImage("a", 20, 10, [])])
    with open(os.path.join(folder, "Annotations", "b.xml"), "w") as file:
        file.write("<annotation><object>")
    for policy in ("error", "skip"):
        with pytest.raises(voc_folder.BadDataError, match=r"no object found .* 1 file cannot be"):
            voc_folder.voc_folder_config(folder, on_bad_data=policy)


@pytest.mark.parametrize(
    "problem",
    ["corrupt or unreadable image", "an image too large to read", "lies outside the 20x10 image"],
)
def test_bad_data_skipped_with_a_warning_and_the_count(tmp_path, caplog, problem):
    folder, bad_file = _folder_with_one_bad_image(tmp_path, problem)
    with caplog.at_level(logging.WARNING):
        builder = _prepare(folder, tmp_path, class_names=("dog",), on_bad_data="skip")
    assert builder.info.splits["train"].num_examples == 1
    assert "skipped 1 of 2 images" in caplog.text and bad_file in caplog.text


def test_pipeline_reads_a_folder_and_warns_about_skipped_images(
    tmp_path, caplog, capsys, monkeypatch
):
    folder, _ = _folder_with_one_bad_image(tmp_path, "its corners are swapped")
    config = default_data_config()
    config.source = "voc_folder"
    config.folder = folder
    config.on_bad_data = "skip"
    config.tfds_data_dir = str(tmp_path / "tfds")
    config.train_split = config.eval_split = "train"
    config.image_size = 32
    with caplog.at_level(logging.WARNING):
        info = get_dataset_info(config)
    assert info.class_names == ("dog",) and info.num_train_examples == 1
    assert caplog.text.count("skipped 1 of 2 images") == 1 and "built without" not in caplog.text
    # A later process, which reads the prepared copy, says so once.
    caplog.clear()
    monkeypatch.setattr(sources, "_built_here", set())
    sources._warn_built_without.cache_clear()
    with caplog.at_level(logging.WARNING):
        get_dataset_info(config)
        get_dataset_info(config)
    assert caplog.text.count("was built without 1 bad images") == 1
    assert f"Reading the VOC-format folder {folder} into" in capsys.readouterr().out
    (batch,) = list(make_eval_iterator(config, global_batch_size=1))
    # VOC's pixels (2, 1, 9, 8) from 1, of 20 x 10, in continuous coordinates: yxyx (0, 1, 8, 9).
    np.testing.assert_allclose(batch["boxes"][0, 0, 0], [0.0, 0.05, 0.8, 0.45], atol=1e-6)
    assert batch["image_size"][0, 0].tolist() == [10, 20]


def test_a_split_the_folder_lacks_names_the_config_key_and_the_splits_it_has(tmp_path):
    folder, _ = _folder_with_one_bad_image(tmp_path, "its corners are swapped")
    config = default_data_config()
    config.source, config.folder, config.on_bad_data = "voc_folder", folder, "skip"
    config.tfds_data_dir = str(tmp_path / "tfds")
    config.train_split, config.eval_split = "train", "testing"
    with pytest.raises(ValueError, match=r"config\.data\.eval_split='testing': Unknown") as error:
        get_dataset_info(config)
    assert "Set --config.data.eval_split to one of them" in str(error.value)


def test_difficult_and_truncated_read_true_and_yes_and_refuse_other_words(tmp_path):
    folder = write_voc_folder(str(tmp_path / "f"), [VocImage("a", 20, 20, [])])
    xml = os.path.join(folder, "Annotations", "a.xml")

    def annotate(difficult: str) -> None:
        with open(xml, "w") as file:
            file.write(
                "<annotation><object><name>dog</name>"
                f"<difficult>{difficult}</difficult><truncated>Yes</truncated>"
                "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>"
                "</object></annotation>"
            )

    for word, difficult in [
        ("1", True),
        ("True", True),
        (" yes ", True),
        ("0", False),
        ("no", False),
    ]:
        annotate(word)
        (obj,) = voc_xml.parse_annotation(xml).objects
        assert (obj.difficult, obj.truncated) == (difficult, True), word
    annotate("maybe")  # was read as not difficult, silently
    with pytest.raises(voc_folder.BadDataError, match=r"<difficult> is 'maybe', not 0 or 1"):
        voc_xml.parse_annotation(xml)


def test_a_listed_id_without_its_xml_names_the_split_file_that_lists_it(tmp_path):
    images = [VocImage(image_id, 20, 10, [VocObject("dog", (2, 1, 9, 8))]) for image_id in "ab"]
    folder = write_voc_folder(
        str(tmp_path / "f"), images, image_sets={"train": ["a"], "val": ["b", "c"]}
    )
    with pytest.raises(voc_folder.BadDataError) as error:
        _prepare(folder, tmp_path, class_names=("dog",))
    listing = os.path.join(folder, "ImageSets", "Main", "val.txt")
    assert str(error.value).startswith(
        f"{os.path.join(folder, 'Annotations', 'c.xml')}: annotation file not found, for the "
        f"id 'c' that {listing} lists: add the file, or remove the id from the list"
    )


@pytest.mark.parametrize(
    ("width", "height", "size"),
    [("320", "240", (320, 240)), ("320.0", "240.0", (320, 240)), ("0", "0", None)],
)
def test_a_size_written_as_floats_or_as_zero_is_read(tmp_path, width, height, size):
    # Some exporters write '320.0', or 0 × 0 where they did not record the size: both were
    # refused as malformed, or as disagreeing with the image.
    xml = tmp_path / "a.xml"
    xml.write_text(
        f"<annotation><size><width>{width}</width><height>{height}</height></size></annotation>"
    )
    assert voc_xml.parse_annotation(xml).size == size


def test_a_size_that_is_no_whole_number_is_refused(tmp_path):
    xml = tmp_path / "a.xml"
    xml.write_text("<annotation><size><width>320.5</width><height>240</height></size></annotation>")
    with pytest.raises(voc_folder.BadDataError, match=r"<size> is not two integers"):
        voc_xml.parse_annotation(xml)


@pytest.mark.parametrize(
    "names", ["mask,no-mask", ("mask,no-mask",), ("[mask, no-mask]",), ("mask", "no-mask,")]
)
def test_class_names_given_as_one_comma_separated_name_are_refused(tmp_path, names):
    # On the command line, "a,b" or "[a, b]" is one name; the fix given is the user's names.
    folder = write_voc_folder(
        tmp_path / "voc", [VocImage("a", 20, 10, [VocObject("mask", (1, 1, 5, 5))])]
    )
    with pytest.raises(ValueError, match="holds one name with commas") as error:
        voc_folder.voc_folder_config(folder, class_names=names)
    assert str(error.value).endswith("""--config.data.class_names="('mask', 'no-mask')".""")


def test_the_class_names_flag_a_message_gives_pastes_into_a_shell_whatever_the_names(tmp_path):
    # Names read from .xml files may hold a quote, a $ or a backtick: inside "...", the shell
    # broke them.
    folder = write_voc_folder(
        tmp_path / "voc", [VocImage("a", 20, 10, [VocObject("mask", (1, 1, 5, 5))])]
    )
    for meant in (("mask", "no-mask"), ("it's", "$HOME", "a`b")):
        with pytest.raises(ValueError, match="holds one name with commas") as error:
            voc_folder.voc_folder_config(folder, class_names=(",".join(meant),))
        (flag,) = shlex.split(str(error.value).rpartition(" on the command line ")[2][:-1])
        name, _, value = flag.partition("=")
        assert name == "--config.data.class_names" and ast.literal_eval(value) == meant


def test_class_names_that_differ_only_in_case_are_refused(tmp_path):
    images = [
        VocImage("a", 20, 20, [VocObject("dog", (1, 1, 9, 9))]),
        VocImage("b", 20, 20, [VocObject("Dog", (1, 1, 9, 9)), VocObject("cat", (2, 2, 8, 8))]),
    ]
    folder = write_voc_folder(str(tmp_path / "f"), images)
    with pytest.raises(ValueError, match=r"\['Dog', 'dog'\] differ only in case"):
        voc_folder.scan_class_names(folder)


def test_a_bmp_with_a_palette_is_bad_data_not_grey(tmp_path):
    # TensorFlow decodes a palette BMP's indices as grey levels: red and blue became 15, 190.
    folder = write_voc_folder(str(tmp_path / "f"), [VocImage("a", 8, 8, [])])
    pixels = np.zeros((8, 8, 3), np.uint8)
    pixels[:4, :, 0] = 255
    pixels[4:, :, 2] = 255
    path = os.path.join(folder, "JPEGImages", "a.jpg")
    os.remove(path)
    Image.fromarray(pixels).convert("P").save(os.path.join(folder, "JPEGImages", "a.png"), "BMP")
    with pytest.raises(voc_folder.BadDataError, match=r"a BMP with a colour palette \(P\)"):
        voc_folder._read_image(os.path.join(folder, "JPEGImages", "a.png"))


def _beside(voc_folder_path: str, target, subfolders: dict[str, str]) -> str:
    """The VOC-layout folder's files rearranged as Roboflow exports them: each image with its
    XML, in `subfolders[image_id]` of `target` ('' for `target` itself)."""
    for image_id, sub in subfolders.items():
        os.makedirs(target / sub, exist_ok=True)
        for kind, ext in (("Annotations", ".xml"), ("JPEGImages", ".jpg")):
            os.rename(
                os.path.join(voc_folder_path, kind, image_id + ext), target / sub / (image_id + ext)
            )
    return str(target)


def test_roboflow_export_with_xml_beside_images_in_split_folders(tmp_path):
    images = [
        VocImage("a", 60, 40, [VocObject("dog", (6, 4, 30, 20))]),
        VocImage("b", 50, 50, [VocObject("cat", (5, 10, 25, 50))]),
        VocImage("c", 30, 20, [VocObject("cat", (3, 2, 15, 10))]),
        VocImage("d", 30, 20, []),
    ]
    voc = write_voc_folder(str(tmp_path / "voc"), images)
    folder = _beside(
        voc, tmp_path / "export", {"a": "train", "b": "train", "c": "valid", "d": "test"}
    )
    builder = _prepare(folder, tmp_path / "data")
    assert {split: info.num_examples for split, info in builder.info.splits.items()} == {
        "train": 2,
        "validation": 1,
        "test": 1,
    }
    assert builder.info.features["objects"]["label"].names == ["cat", "dog"]
    train = _examples(builder, "train")
    np.testing.assert_allclose(np.stack(train["a.jpg"]["objects"]["bbox"]), [[0.1, 0.1, 0.5, 0.5]])
    np.testing.assert_allclose(
        np.stack(_examples(builder, "validation")["c.jpg"]["objects"]["bbox"]),
        [[0.1, 0.1, 0.5, 0.5]],
    )
    # Training evaluates (and picks its best checkpoint) on valid/; test/ stays unseen.
    config = default_data_config()
    config.source, config.folder = "voc_folder", folder
    config.tfds_data_dir = str(tmp_path / "data")
    info = get_dataset_info(config)
    assert (info.num_eval_examples, info.eval_split_name) == (1, "validation")


def test_images_added_to_a_randomly_split_folder_move_none_between_the_splits(tmp_path):
    # A permutation of all ids reshuffled them: images a run had trained on came to be in
    # the validation split that evaluate.py and the best checkpoint are judged on.
    ids = [f"img{index:03d}" for index in range(300)]
    images = [VocImage(image_id, 8, 8, [VocObject("x", (1, 1, 4, 4))]) for image_id in ids]
    folder = write_voc_folder(str(tmp_path / "f"), images)
    before = voc_layout.folder_splits(folder)
    added = [VocImage(f"new{index}", 8, 8, [VocObject("x", (1, 1, 4, 4))]) for index in range(30)]
    write_voc_folder(folder, added)
    after = voc_layout.folder_splits(folder)
    assert set(before["train"]) <= set(after["train"])
    assert set(before["validation"]) <= set(after["validation"])
    assert 20 <= len(after["validation"]) <= 46  # 10% of 330, give or take 3 sigma
    assert any(name.startswith("new") for name in after["validation"])


def test_xml_beside_images_in_one_folder_gets_the_90_10_split(tmp_path):
    ids = [f"img{index:02d}" for index in range(20)]
    images = [VocImage(image_id, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for image_id in ids]
    voc = write_voc_folder(str(tmp_path / "voc"), images)
    folder = _beside(voc, tmp_path / "flat", dict.fromkeys(ids, ""))
    splits = voc_layout.folder_splits(folder, split_seed=0)
    assert sorted(splits["train"] + splits["validation"]) == ids
    assert 1 <= len(splits["validation"]) <= 5  # about a tenth
    builder = _prepare(folder, tmp_path / "data")
    assert builder.info.splits["train"].num_examples == len(splits["train"])


def test_a_folder_without_xml_files_says_which_layouts_it_reads(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    with pytest.raises(ValueError, match=r"neither an Annotations/ directory .*Roboflow.*layouts"):
        voc_folder.voc_folder_config(str(tmp_path))
    # What to pass, also for a path that is no folder, and for none at all.
    with pytest.raises(ValueError, match=r"got 'nothere' \(from .*\): pass the path of the folder"):
        voc_folder.voc_folder_config("nothere")
    config = default_config()
    config.data.source = "voc_folder"
    with pytest.raises(ValueError, match=r"pass --config\.data\.folder=PATH, the folder that"):
        validate_config(config)


def test_a_missing_image_beside_its_xml_is_named(tmp_path):
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in ("a", "b")]
    voc = write_voc_folder(str(tmp_path / "voc"), images)
    folder = _beside(voc, tmp_path / "export", {"a": "train", "b": "valid"})
    os.remove(os.path.join(folder, "train", "a.jpg"))
    with pytest.raises(
        voc_folder.BadDataError, match=r"train/a.xml: image not found \(looked for train/a.jpg"
    ):
        _prepare(folder, tmp_path / "data")


def test_images_are_found_whatever_the_case_of_their_extension(tmp_path):
    # Cameras and exports write a.JPG, a.Jpg, b.PNG; training reads JPEG, PNG, BMP, GIF, WebP.
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in "abc"]
    voc = write_voc_folder(str(tmp_path / "voc"), images)
    folder = _beside(voc, tmp_path / "export", {"a": "train", "b": "train", "c": "valid"})
    os.rename(os.path.join(folder, "train", "a.jpg"), os.path.join(folder, "train", "a.Jpg"))
    Image.open(os.path.join(folder, "train", "b.jpg")).save(os.path.join(folder, "train", "b.PNG"))
    os.remove(os.path.join(folder, "train", "b.jpg"))
    builder = _prepare(folder, tmp_path / "data")
    assert sorted(_examples(builder, "train")) == ["a.Jpg", "b.PNG"]
    assert builder.info.splits["validation"].num_examples == 1


def test_a_train_folder_alone_is_split_90_10_and_stray_xml_files_are_named(tmp_path):
    ids = [f"img{index:02d}" for index in range(10)]
    images = [VocImage(image_id, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for image_id in ids]
    voc = write_voc_folder(str(tmp_path / "voc"), images)
    folder = _beside(voc, tmp_path / "export", {**dict.fromkeys(ids[:9], "train"), ids[9]: ""})
    with pytest.raises(ValueError, match=r"both in split folders and beside them \(img09.xml\)"):
        voc_layout.folder_splits(folder)
    os.rename(os.path.join(folder, "img09.xml"), os.path.join(folder, "train", "img09.xml"))
    os.rename(os.path.join(folder, "img09.jpg"), os.path.join(folder, "train", "img09.jpg"))
    splits = voc_layout.folder_splits(folder)  # something to evaluate on
    assert len(splits["train"]) == 9 and len(splits["validation"]) == 1
    assert sorted(splits["train"] + splits["validation"]) == [f"train/{i}" for i in ids]


def test_an_emptied_valid_folder_says_train_is_split_instead(tmp_path, caplog):
    ids = [f"img{index:02d}" for index in range(10)]
    images = [VocImage(image_id, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for image_id in ids]
    voc = write_voc_folder(str(tmp_path / "voc"), images)
    folder = _beside(voc, tmp_path / "export", dict.fromkeys(ids, "train"))
    os.makedirs(os.path.join(folder, "valid"))  # an export whose validation files are gone
    with caplog.at_level(logging.WARNING):
        splits = voc_layout.folder_splits(folder)
    assert len(splits["validation"]) == 1
    assert (
        "valid/ holds no .xml files: about 10% of train/ is held out for validation" in caplog.text
    )


def test_ids_with_spaces_in_split_files_are_read_whole(tmp_path):
    # Photos named by cameras and screenshots ("IMG 0001.jpg"): the id was cut at the space.
    names = ["IMG 0001", "IMG 0002", "c"]
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in names]
    folder = write_voc_folder(
        str(tmp_path / "f"), images, image_sets={"train": names[:2], "val": ["c"]}
    )
    assert voc_layout.folder_splits(folder) == {"train": names[:2], "validation": ["c"]}
    builder = _prepare(folder, tmp_path / "data")
    assert sorted(_examples(builder, "train")) == ["IMG 0001.jpg", "IMG 0002.jpg"]


def test_an_empty_split_file_is_named(tmp_path):
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in "abc"]
    folder = write_voc_folder(str(tmp_path / "f"), images, image_sets={"train": ["a", "b"]})
    main = os.path.join(folder, "ImageSets", "Main")
    # Was TFDS's "No examples were yielded" under a traceback.
    open(os.path.join(main, "val.txt"), "w").close()
    config = default_data_config()
    config.source, config.folder = "voc_folder", folder
    config.tfds_data_dir = str(tmp_path / "tfds")
    with pytest.raises(ValueError, match=rf"^{re.escape(main)}/val.txt lists no image: list"):
        get_dataset_info(config)


def test_split_files_without_a_held_out_split_say_how_to_get_one(tmp_path):
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in "abc"]
    config = default_data_config()
    config.source = "voc_folder"
    config.folder = write_voc_folder(str(tmp_path / "f"), images, image_sets={"train": ["a", "b"]})
    config.tfds_data_dir = str(tmp_path / "tfds")
    # Was "config.data.eval_split=None: Unknown split 'test'. Should be one of ['train']".
    with pytest.raises(ValueError, match=r"has no validation or test split to evaluate on \(its"):
        get_dataset_info(config)
    config.eval_split = "train[50%:]"  # or a slice of the one it has
    assert get_dataset_info(config).num_eval_examples == 1


def test_a_run_on_trainval_without_a_test_split_is_told_to_add_test_txt(tmp_path):
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in "abc"]
    sets = {"trainval": ["a", "b", "c"], "val": ["c"]}  # no test.txt
    config = default_data_config()
    config.source, config.train_split = "voc_folder", "trainval"
    config.folder = write_voc_folder(str(tmp_path / "f"), images, image_sets=sets)
    config.tfds_data_dir = str(tmp_path / "tfds")
    with pytest.raises(ValueError) as error:
        get_dataset_info(config)
    # val.txt is there: adding it would not help, since trainval.txt holds its images.
    assert str(error.value) == (
        f"config.data.folder={config.folder!r} has no test split to evaluate on: the run trains "
        "on 'trainval', which holds the validation split's images (its splits: validation, "
        "trainval). Add ImageSets/Main/test.txt, or name a split with --config.data.eval_split."
    )


def test_images_both_trained_and_evaluated_on_are_warned_of(tmp_path, caplog):
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in "abcd"]
    # VOC's own trainval.txt is train.txt and val.txt together: no warning for it.
    sets = {"train": ["a", "b"], "val": ["b", "c"], "trainval": ["a", "b", "c"], "test": ["d"]}
    folder = write_voc_folder(str(tmp_path / "f"), images, image_sets=sets)
    with caplog.at_level(logging.WARNING):
        voc_layout.folder_splits(folder)
    assert len(caplog.records) == 1
    assert "1 image is in both train.txt and val.txt (b): evaluated on" in caplog.text


def test_a_class_the_train_split_lacks_is_warned_of(tmp_path, caplog):
    # A typo in a validation file makes a class of its own, which training never sees.
    images = [
        VocImage("a", 16, 16, [VocObject("dog", (1, 1, 9, 9))]),
        VocImage("b", 16, 16, [VocObject("cat", (1, 1, 9, 9))]),
        VocImage("c", 16, 16, [VocObject("dgo", (1, 1, 9, 9)), VocObject("cat", (2, 2, 9, 9))]),
    ]
    sets = {"train": ["a", "b"], "val": ["c"]}
    folder = write_voc_folder(str(tmp_path / "f"), images, image_sets=sets)
    with caplog.at_level(logging.WARNING):
        _prepare(folder, tmp_path / "tfds")
    assert "the train split of" in caplog.text
    assert "has no object of class 'dgo': the model cannot learn it" in caplog.text
    assert "'cat'" not in caplog.text and "'dog'" not in caplog.text


def test_a_rare_class_named_almost_as_a_common_one_is_warned_of(tmp_path, caplog):
    def box(name):
        return VocObject(name, (1, 1, 9, 9))

    images = [VocImage(f"a{i}", 16, 16, [box("redbox"), box("cat")]) for i in range(5)]
    images.append(VocImage("b", 16, 16, [box("redbx"), box("car")]))  # a typo; a real class
    folder = write_voc_folder(str(tmp_path / "f"), images)
    with caplog.at_level(logging.WARNING):
        names = voc_folder.scan_class_names(folder)
        voc_folder.scan_class_names(folder)  # once a folder, however often read
    assert names == ("car", "cat", "redbox", "redbx")  # still a class: a warning, not an error
    assert len(caplog.records) == 1
    assert "class 'redbx' of" in caplog.text
    assert "(1 object, in b.xml) is named almost as 'redbox' (5 objects): a typo" in caplog.text
    # The flags it gives train without the typo's image.
    flags = "--config.data.class_names=\"('car', 'cat', 'redbox')\" --config.data.on_bad_data=skip."
    assert caplog.text.rstrip().endswith(flags)
    builder = _prepare(
        folder, tmp_path / "tfds", class_names=("car", "cat", "redbox"), on_bad_data="skip"
    )
    assert (
        builder.info.splits["train"].num_examples + builder.info.splits["validation"].num_examples
        == 5
    )


def test_editing_a_split_file_beside_xml_files_prepares_the_folder_anew(tmp_path):
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in "abc"]
    voc = write_voc_folder(str(tmp_path / "voc"), images)
    folder = _beside(voc, tmp_path / "flat", dict.fromkeys("abc", ""))
    os.makedirs(os.path.join(folder, "ImageSets", "Main"))
    split_file = os.path.join(folder, "ImageSets", "Main", "train.txt")
    with open(split_file, "w") as file:
        file.write("a\nb\n")
    before = voc_folder.voc_folder_config(folder).name
    with open(split_file, "w") as file:
        file.write("a\nb\nc\n")
    assert voc_folder.voc_folder_config(folder).name != before


def test_a_test_only_export_is_described_for_evaluation_without_a_train_split(tmp_path):
    # Evaluating a trained model on new data: a Roboflow export with only test/.
    images = [
        VocImage("a", 60, 40, [VocObject("dog", (6, 4, 30, 20))]),
        VocImage("b", 50, 50, [VocObject("cat", (5, 10, 25, 50))]),
    ]
    voc = write_voc_folder(str(tmp_path / "voc"), images)
    config = default_data_config()
    config.source = "voc_folder"
    config.folder = _beside(voc, tmp_path / "export", {"a": "test", "b": "test"})
    config.tfds_data_dir = str(tmp_path / "tfds")
    info = get_dataset_info(config, train=False)
    assert info.class_names == ("cat", "dog")
    assert (info.num_train_examples, info.num_eval_examples) == (None, 2)
    assert info.eval_split_name == "test"
    with pytest.raises(ValueError, match=r"data\.train_split=.*one of \['test'\]"):
        get_dataset_info(config)  # training needs one


def _lit_rectangles(rng, height, width, colours) -> tuple[np.ndarray, list[VocObject]]:
    """A black image with one rectangle per colour name (pure red or green), at whole-pixel
    edges, and their VOC objects (a box's pixels, VOC's indices from 1, ends inclusive)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    objects = []
    for name in colours:
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        bottom = top + rng.integers(height // 4, height // 2)
        right = left + rng.integers(width // 4, width // 2)
        pixels[top:bottom, left:right, ("red", "green").index(name)] = 255
        objects.append(VocObject(name, (left + 1, top + 1, right, bottom)))
    return pixels, objects


def test_augmented_training_batches_keep_each_box_on_its_object_pixels(tmp_path):
    # The whole training pipeline (XML → stored boxes → scale, translate, flip → resize →
    # batch): each box in a batch must still bound the pixels of its object, whatever the
    # augmentation did, and carry its object's label.
    rng = np.random.default_rng(0)
    images = []
    for index in range(8):
        pixels, objects = _lit_rectangles(rng, 60, 80, ["red", "green"][: 1 + index % 2])
        images.append(VocImage(f"i{index}", 80, 60, objects, pixels=pixels, extension=".png"))
    ids = [image.image_id for image in images]
    config = default_data_config()
    config.source = "voc_folder"
    config.folder = write_voc_folder(str(tmp_path / "f"), images, image_sets={"train": ids})
    config.tfds_data_dir = str(tmp_path / "tfds")
    config.train_split = config.eval_split = "train"
    config.image_size, config.normalization = 64, "unit"
    config.augment.update(exposure=1.0, saturation=1.0, hue=0.0, blur_probability=0.0)
    class_names = get_dataset_info(config).class_names
    batches = make_train_iterator(config, global_batch_size=8, seed=3)
    checked, moved = 0, 0
    for batch in itertools.islice(batches, 4):  # four epochs, four augmentations of each
        for image, boxes, labels, mask in zip(
            *(
                batch[key].reshape(8, *batch[key].shape[2:])
                for key in ("image", "boxes", "labels", "mask")
            ),
            strict=True,
        ):
            for box, label in zip(boxes[mask], labels[mask], strict=True):
                channel = ("red", "green").index(class_names[label])
                rows, cols = np.nonzero(image[..., channel] > 0.75)
                # The resize's bilinear edges light a pixel a quarter inside the box's edge.
                np.testing.assert_allclose(
                    [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1],
                    np.clip(box * 64, 0, 64),
                    atol=1.0,
                )
                checked += 1
                in_stored_pixels = box * [60, 80, 60, 80]  # whole pixels unless moved
                moved += not np.allclose(in_stored_pixels, np.round(in_stored_pixels), atol=1e-3)
    assert checked >= 40 and moved >= checked // 2  # boxes were checked, and most moved


def test_images_in_train_and_test_files_are_warned_of(tmp_path, caplog):
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in "abc"]
    sets = {"train": ["a"], "trainval": ["a", "b"], "test": ["b", "c"]}
    folder = write_voc_folder(str(tmp_path / "f"), images, image_sets=sets)
    with caplog.at_level(logging.WARNING):
        voc_layout.folder_splits(folder)
    assert "1 image is in both trainval.txt and test.txt (b)" in caplog.text
    assert "train.txt and test.txt" not in caplog.text


def test_classes_apart_by_a_word_or_a_digit_are_not_taken_for_typos(tmp_path, caplog):
    names = [("with_mask", "without_mask"), ("red_light", "green_light"), ("class_1", "class_2")]
    images = [
        VocImage(f"{i}{j}", 16, 16, [VocObject(common, (1, 1, 9, 9))])
        for i, (common, _) in enumerate(names)
        for j in range(5)
    ]
    images += [
        VocImage(f"r{i}", 16, 16, [VocObject(rare, (1, 1, 9, 9))])
        for i, (_, rare) in enumerate(names)
    ]
    folder = write_voc_folder(str(tmp_path / "f"), images)
    with caplog.at_level(logging.WARNING):
        voc_folder.scan_class_names(folder)
    assert not caplog.records


def test_a_run_trained_on_trainval_is_evaluated_on_test(tmp_path):
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in "abcd"]
    sets = {"train": ["a"], "val": ["b"], "trainval": ["a", "b"], "test": ["c", "d"]}
    config = default_data_config()
    config.source = "voc_folder"
    config.folder = write_voc_folder(str(tmp_path / "f"), images, image_sets=sets)
    config.tfds_data_dir = str(tmp_path / "tfds")
    assert get_dataset_info(config).num_eval_examples == 1  # validation
    config.train_split = "trainval"
    assert get_dataset_info(config).num_eval_examples == 2  # test, not val.txt's images


def test_annotated_images_in_no_split_file_are_warned_of(tmp_path, caplog):
    # Images added to Annotations/ and JPEGImages/ but not to train.txt were silently unused.
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in "abcde"]
    sets = {"train": ["a", "b"], "val": ["c"]}
    folder = write_voc_folder(str(tmp_path / "f"), images, image_sets=sets)
    with caplog.at_level(logging.WARNING):
        voc_layout.folder_splits(folder)
    assert len(caplog.records) == 1
    assert "2 of the 5 images in Annotations/ are in no split file of ImageSets/Main (d, e)" in (
        caplog.text
    )
    caplog.clear()
    write_voc_folder(str(tmp_path / "g"), images, image_sets={**sets, "test": ["d", "e"]})
    with caplog.at_level(logging.WARNING):
        voc_layout.folder_splits(str(tmp_path / "g"))
    assert not caplog.records


def test_preparing_a_folder_with_stderr_in_a_file_draws_no_progress_bars(tmp_path):
    # TFDS's bars in a log file were lines of carriage returns and cursor moves, and a
    # warning printed while one was drawn landed on its line. (A process of its own: the
    # setting is TFDS's, for the whole process.)
    images = [VocImage(f"i{k}", 32, 32, [VocObject("dog", (2, 2, 20, 20))]) for k in range(12)]
    folder = write_voc_folder(str(tmp_path / "f"), images)
    script = (
        "from yolojax.data import default_data_config, get_dataset_info\n"
        "config = default_data_config()\n"
        f"config.source, config.folder = 'voc_folder', {folder!r}\n"
        f"config.tfds_data_dir = {str(tmp_path / 'tfds')!r}\n"
        "print(get_dataset_info(config).num_train_examples)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.splitlines()[-1] == "11"  # prepared: 90% of 12 for training
    assert "\r" not in done.stderr and "examples" not in done.stderr, done.stderr[-500:]


def test_macos_copies_upper_case_xml_and_jfif_files_are_read_as_users_name_them(tmp_path, caplog):
    # A folder zipped on a Mac holds ._a.xml beside a.xml (AppleDouble), which stopped
    # training as malformed XML; b.XML was "no .xml file"; c.jfif (a JPEG) "not found".
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in "abcd"]
    voc = write_voc_folder(str(tmp_path / "voc"), images)
    folder = _beside(
        voc, tmp_path / "export", {"a": "train", "b": "train", "c": "train", "d": "valid"}
    )
    train = os.path.join(folder, "train")
    for name in ("._a.xml", "._a.jpg"):
        with open(os.path.join(train, name), "wb") as file:
            file.write(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    os.rename(os.path.join(train, "b.xml"), os.path.join(train, "b.XML"))
    os.rename(os.path.join(train, "c.jpg"), os.path.join(train, "c.jfif"))
    with caplog.at_level(logging.WARNING):
        builder = _prepare(folder, tmp_path / "data")
    assert sorted(_examples(builder, "train")) == ["a.jpg", "b.jpg", "c.jfif"]
    np.testing.assert_allclose(
        np.stack(_examples(builder, "train")["b.jpg"]["objects"]["bbox"]),
        [[1 / 16, 1 / 16, 9 / 16, 9 / 16]],
    )
    assert "no .xml file" not in caplog.text  # not ._a.jpg, nor b.jpg


def test_a_tiff_beside_its_xml_is_named_as_one_to_convert_not_as_missing(tmp_path):
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in "ab"]
    voc = write_voc_folder(str(tmp_path / "voc"), images)
    folder = _beside(voc, tmp_path / "export", {"a": "train", "b": "valid"})
    Image.open(os.path.join(folder, "train", "a.jpg")).save(os.path.join(folder, "train", "a.tiff"))
    os.remove(os.path.join(folder, "train", "a.jpg"))
    with pytest.raises(voc_folder.BadDataError, match=r"a.tiff: unsupported image format TIFF"):
        _prepare(folder, tmp_path / "data")


def test_an_id_listed_twice_in_a_split_file_is_taken_once_with_a_warning(tmp_path, caplog):
    # TFDS stopped on it with a page of its log (the JPEG bytes) and a traceback.
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in "abc"]
    sets = {"train": ["a", "b", "a", "b", "a"], "val": ["c"]}
    folder = write_voc_folder(str(tmp_path / "voc"), images, image_sets=sets)
    with caplog.at_level(logging.WARNING):
        builder = _prepare(folder, tmp_path / "data")
    assert sorted(_examples(builder, "train")) == ["a.jpg", "b.jpg"]
    assert "train.txt lists 2 ids more than once (a, b): each is taken once." in caplog.text


def test_xml_files_in_folders_below_the_ones_read_are_warned_of(tmp_path, caplog):
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in "abcd"]
    voc = write_voc_folder(str(tmp_path / "voc"), images)
    folder = _beside(voc, tmp_path / "export", {"a": "train", "b": "train/more", "c": "valid"})
    _beside(voc, tmp_path / "export", {"d": "extra/deeper"})
    with caplog.at_level(logging.WARNING):
        splits = voc_layout.folder_splits(folder)
    assert splits == {"train": ["train/a"], "validation": ["valid/c"]}
    assert (
        "2 .xml files lie in folders below the ones read (extra/deeper/d.xml, train/more/b.xml) "
        "and are left out" in caplog.text
    )


def test_class_names_read_from_the_xml_files_may_hold_commas(tmp_path):
    # Refused with advice for the command line, which could not give such a name either.
    images = [VocImage("a", 20, 10, [VocObject("person, adult", (1, 1, 5, 5))])]
    folder = write_voc_folder(str(tmp_path / "voc"), images, image_sets={"train": ["a"]})
    builder = _prepare(folder, tmp_path / "data")
    assert builder.info.features["objects"]["label"].names == ["person, adult"]


def test_the_likely_mistakes_of_a_layout_are_named(tmp_path):
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in "ab"]
    # Label Studio's export: Annotations/ beside images/. Each image was "not found".
    label_studio = write_voc_folder(str(tmp_path / "ls"), images)
    os.rename(os.path.join(label_studio, "JPEGImages"), os.path.join(label_studio, "images"))
    with pytest.raises(ValueError, match=r"has Annotations/ but no JPEGImages/.*images are in "):
        _prepare(label_studio, tmp_path / "data")
    # A VOCdevkit given for its VOC2007/, and annotations/ spelt in lower case (Kaggle's).
    devkit = tmp_path / "VOCdevkit"
    write_voc_folder(str(devkit / "VOC2007"), images)
    with pytest.raises(ValueError, match=r"layouts .* It holds VOC2007/: pass that folder\."):
        voc_layout.annotation_ids(str(devkit))
    kaggle = write_voc_folder(str(tmp_path / "kaggle"), images)
    os.rename(os.path.join(kaggle, "Annotations"), os.path.join(kaggle, "annotations"))
    with pytest.raises(ValueError, match=r"Its annotations/ is read only as Annotations/"):
        voc_layout.annotation_ids(kaggle)


def test_an_xml_naming_another_existing_image_than_its_stems_is_warned_of(tmp_path, caplog):
    # s.xml says <filename>s.png</filename>, and s.jpg is there too: s.jpg was served with
    # the boxes drawn on s.png, without a word.
    images = [VocImage(name, 16, 16, [VocObject("x", (1, 1, 9, 9))]) for name in "st"]
    folder = write_voc_folder(str(tmp_path / "voc"), images, image_sets={"train": ["s", "t"]})
    xml = os.path.join(folder, "Annotations", "s.xml")
    with open(xml) as file:
        text = file.read()
    with open(xml, "w") as file:
        file.write(text.replace("<filename>s.jpg</filename>", "<filename>s.png</filename>"))
    Image.new("RGB", (16, 16)).save(os.path.join(folder, "JPEGImages", "s.png"))
    with caplog.at_level(logging.WARNING):
        builder = _prepare(folder, tmp_path / "data")
    assert sorted(_examples(builder, "train")) == ["s.jpg", "t.jpg"]
    assert f"{xml}: its <filename> s.png is another image than s.jpg, which is used" in caplog.text
    assert "t.xml: its <filename>" not in caplog.text  # its own image, named


def test_preparing_a_folder_leaves_no_temporary_folder(tmp_path, monkeypatch):
    # As for synthetic_shapes (data_synthetic_test.py): TFDS's bucket look-up left an empty
    # tmp*tfds folder for each builder made before the preparation.
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    images = [VocImage("a", 30, 20, [VocObject("dog", (2, 2, 20, 10))]), VocImage("b", 30, 20, [])]
    folder = write_voc_folder(
        str(tmp_path / "f"), images, image_sets={"train": ["a"], "test": ["b"]}
    )
    assert _prepare(folder, tmp_path / "tfds").info.splits["train"].num_examples == 1
    assert list(temporary.iterdir()) == []
