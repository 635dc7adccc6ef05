"""Bad files in a VOC-format folder: a named error, or skipped and counted; never a crash.

tests/data_voc_folder_test.py covers corrupt JPEGs, missing images, malformed XML, unknown
classes, boxes outside the image or with swapped corners, and wrong <size>s one by one. Here: the
remaining kinds of bad file, and whole training runs on a folder holding several of them.
"""

import json
import logging
import math
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import shapes
from yolojax import trainer, workdir
from yolojax.data import voc_folder
from yolojax.data.testing import VocImage, VocObject, write_voc_folder

WIDTH, HEIGHT = 40, 30


def _image(image_id, name="dog", box=(4, 3, 30, 25), extension=".jpg") -> VocImage:
    return VocImage(image_id, WIDTH, HEIGHT, [VocObject(name, box)], extension=extension)


def _truncate(path: str) -> None:
    with open(path, "rb") as file:
        data = file.read()
    with open(path, "wb") as file:
        file.write(data[: len(data) // 2])


def _rename_to_latin1(folder: str, image_id: str) -> str:
    """Renames image `image_id` (and its XML) to 'café' in Latin-1: not valid UTF-8."""
    new_id = os.fsdecode(b"caf\xe9")
    for sub, extension in (("JPEGImages", ".jpg"), ("Annotations", ".xml")):
        directory = os.path.join(folder, sub)
        os.rename(
            os.path.join(directory, image_id + extension),
            os.path.join(directory, new_id + extension),
        )
    return new_id


def _break(folder: str, image_id: str, problem: str) -> tuple[str, str]:
    """Damages image `image_id` as `problem` says; returns (its id now, the file to name)."""
    xml = os.path.join(folder, "Annotations", image_id + ".xml")
    jpeg = os.path.join(folder, "JPEGImages", image_id + ".jpg")
    png = os.path.join(folder, "JPEGImages", image_id + ".png")
    if problem == "truncated JPEG":
        _truncate(jpeg)
        return image_id, jpeg
    if problem == "truncated PNG":
        _truncate(png)
        return image_id, png
    if problem == "corrupt PNG":
        with open(png, "wb") as file:
            file.write(b"\x89PNG\r\n\x1a\n but not really")
        return image_id, png
    if problem == "TIFF named .jpg":  # Pillow reads it, the pipeline's TF decoder does not
        Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(jpeg, format="TIFF")
        return image_id, jpeg
    if problem == "empty annotation file":
        open(xml, "w").close()
        return image_id, xml
    if problem == "truncated annotation file":
        _truncate(xml)
        return image_id, xml
    if problem == "NaN box coordinate":  # float('nan') parses, and compares False
        with open(xml) as file:
            text = file.read().replace("<xmax>30</xmax>", "<xmax>nan</xmax>")
        with open(xml, "w") as file:
            file.write(text)
        return image_id, xml
    if problem == "file name not UTF-8":
        new_id = _rename_to_latin1(folder, image_id)
        return new_id, ascii(os.path.join(folder, "Annotations", new_id + ".xml"))
    raise ValueError(problem)


# problem → (the error's words, the damaged image's extension)
PROBLEMS = {
    "truncated JPEG": ("corrupt or unreadable image", ".jpg"),
    "truncated PNG": ("corrupt or unreadable image", ".png"),
    "corrupt PNG": ("corrupt or unreadable image", ".png"),
    "empty annotation file": ("malformed XML", ".jpg"),
    "truncated annotation file": ("malformed XML", ".jpg"),
    "NaN box coordinate": ("malformed XML", ".jpg"),
    "TIFF named .jpg": ("unsupported image format TIFF", ".jpg"),
    "file name not UTF-8": ("file name is not valid UTF-8", ".jpg"),
}


def _prepare(folder, data_dir, on_bad_data) -> tfds.core.DatasetBuilder:
    builder = voc_folder.VocFolder(
        config=voc_folder.voc_folder_config(folder, class_names=("dog",), on_bad_data=on_bad_data),
        data_dir=str(data_dir),
        file_format="array_record",
    )
    builder.download_and_prepare()
    return builder


@pytest.mark.parametrize("problem", PROBLEMS)
def test_bad_file_is_a_named_error_or_skipped_and_counted(tmp_path, caplog, problem):
    words, extension = PROBLEMS[problem]
    images = [_image("ok"), _image("bad", extension=extension)]
    folder = write_voc_folder(str(tmp_path / "f"), images, image_sets={"train": ["ok", "bad"]})
    bad_id, bad_file = _break(folder, "bad", problem)
    # surrogateescape writes a name that is not UTF-8 back as the bytes it was read from.
    split_file = os.path.join(folder, "ImageSets", "Main", "train.txt")
    with open(split_file, "w", encoding="utf-8", errors="surrogateescape") as file:
        file.write(f"ok\n{bad_id}\n")

    with pytest.raises(voc_folder.BadDataError) as error:
        _prepare(folder, tmp_path / "tfds_error", "error")
    assert bad_file in str(error.value) and words in str(error.value)

    with caplog.at_level(logging.WARNING):
        builder = _prepare(folder, tmp_path / "tfds_skip", "skip")
    assert builder.info.splits["train"].num_examples == 1
    assert "skipped 1 of 2 images of split 'train'" in caplog.text and words in caplog.text


def test_a_name_that_is_no_utf8_in_a_folder_without_splits_is_skipped(tmp_path, caplog):
    # The split drawn from a hash of each id hashed its text as UTF-8: a Latin-1 name
    # stopped the preparation with a UnicodeEncodeError before on_bad_data could skip it.
    images = [_image(f"ok{index}") for index in range(30)] + [_image("bad")]
    folder = write_voc_folder(str(tmp_path / "f"), images)  # no ImageSets: a random split
    _rename_to_latin1(folder, "bad")
    with caplog.at_level(logging.WARNING):
        builder = _prepare(folder, tmp_path / "tfds", "skip")
    prepared = sum(split.num_examples for split in builder.info.splits.values())
    assert prepared == 30 and "file name is not valid UTF-8" in caplog.text


def _bad_folder(root) -> tuple[str, list[str]]:
    """10 good and 5 bad train images, 4 good and 1 bad test images; returns the bad files."""
    train = [_image(f"train{index}") for index in range(10)]
    test = [_image(f"test{index}") for index in range(4)]
    bad = [
        _image("truncated"),
        _image("empty_xml"),
        _image("unknown_class", name="bird"),
        _image("outside", box=(4, 3, WIDTH + 5, 25)),
        _image("swapped", box=(4, 25, 20, 3)),
        _image("corrupt_png", extension=".png"),
    ]
    sets = {
        "train": [image.image_id for image in train + bad[:5]],
        "test": [image.image_id for image in test + bad[5:]],
    }
    folder = write_voc_folder(str(root), train + test + bad, image_sets=sets)
    bad_files = [
        _break(folder, "truncated", "truncated JPEG")[1],
        _break(folder, "empty_xml", "empty annotation file")[1],
        _break(folder, "corrupt_png", "corrupt PNG")[1],
        *(os.path.join(folder, "Annotations", f"{i}.xml") for i in ("unknown_class", "outside")),
        os.path.join(folder, "Annotations", "swapped.xml"),
    ]
    return folder, bad_files


def _folder_config(folder, data_dir, on_bad_data):
    """A tiny detector on `folder` (classes 'cat' and 'dog'), 1 epoch of batches of 5."""
    config = shapes.get_config()
    config.model.num_classes = 0  # from the folder
    config.model.grid_size = 4
    config.model.head_channels = 16
    config.model.head_conv_layers = 1
    config.data.source = "voc_folder"
    config.data.folder = folder
    config.data.class_names = ("cat", "dog")  # so 'bird' is an unknown class
    config.data.on_bad_data = on_bad_data
    config.data.tfds_data_dir = str(data_dir)
    config.data.image_size = 64
    config.train.batch_size = 5
    config.train.num_epochs = 1
    config.eval.every_epochs = 0
    config.eval.train_subset = 0
    return config


def test_training_on_a_folder_with_bad_files(tmp_path, caplog):
    folder, bad_files = _bad_folder(tmp_path / "f")

    # 'error' stops before the first step, naming a bad file and what is wrong with it.
    run_dir = tmp_path / "stopped"
    with pytest.raises(voc_folder.BadDataError) as error:
        trainer.train_and_evaluate(_folder_config(folder, tmp_path / "tfds", "error"), run_dir)
    assert any(path in str(error.value) for path in bad_files), str(error.value)
    assert not (run_dir / "checkpoints").exists()

    # 'skip' trains on the good images only, and says how many it left out.
    run_dir = tmp_path / "skipped"
    config = _folder_config(folder, tmp_path / "tfds", "skip")
    with caplog.at_level(logging.WARNING):
        results = trainer.train_and_evaluate(config, run_dir)
    assert "skipped 5 of 15 images of split 'train'" in caplog.text
    assert "skipped 1 of 5 images of split 'test'" in caplog.text
    # Said once, by the preparation: not again as each split is opened.
    assert "built without" not in caplog.text
    # The held-out split it evaluated on is recorded: a later default cannot move it.
    assert json.loads((run_dir / "config.json").read_text())["data"]["eval_split"] == "test"
    assert results["step"] == 2  # 10 good train images in batches of 5
    assert results["num_images"] == 4  # every good test image, once
    losses = [r["loss"] for r in workdir.read_metrics(run_dir) if "loss" in r]
    assert losses and all(math.isfinite(loss) for loss in losses)
