"""The real TFDS `voc` builder, prepared offline from a tiny VOCdevkit, through the pipeline."""

import functools

import numpy as np
import pytest

from yolojax.data import (
    default_data_config,
    get_dataset_info,
    make_eval_iterator,
    make_train_iterator,
    sources,
)
from yolojax.data.testing import VocImage, VocObject, write_voc_folder
from yolojax.data.voc_offline import prepare_voc_offline

# Test images of distinct sizes, so that a batch row's image_size tells which image it is.
TEST_IMAGES = [
    VocImage(
        "000004",
        60,
        40,
        [VocObject("dog", (6, 4, 30, 20)), VocObject("person", (30, 10, 60, 40), difficult=True)],
    ),
    VocImage("000005", 50, 30, [VocObject("car", (1, 1, 50, 30))]),
    VocImage(
        "000006", 44, 36, [VocObject("bird", (11, 9, 22, 27)), VocObject("bird", (22, 18, 44, 36))]
    ),
]
TRAINVAL_IMAGES = [
    VocImage(
        f"00000{index}",
        40,
        32,
        [VocObject("cat", (4, 4, 20, 16)), VocObject("cow", (20, 8, 40, 32), difficult=True)],
    )
    for index in (1, 2, 3)
]


@pytest.fixture(scope="module")
def voc_data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("voc")
    devkit = root / "VOCdevkit"
    write_voc_folder(
        str(devkit / "VOC2007"),
        TRAINVAL_IMAGES + TEST_IMAGES,
        image_sets={
            "train": ["000001", "000002"],
            "val": ["000003"],
            "test": ["000004", "000005", "000006"],
        },
    )
    write_voc_folder(
        str(devkit / "VOC2012"),
        [VocImage(f"2008_00000{i}", 32, 24, [VocObject("train", (2, 2, 30, 20))]) for i in (1, 2)],
        image_sets={"train": ["2008_000001"], "val": ["2008_000002"]},  # no VOC2012test
    )
    prepare_voc_offline(str(devkit), "2007", data_dir=str(root / "tfds"))
    prepare_voc_offline(str(devkit), "2012", data_dir=str(root / "tfds"))
    return str(root / "tfds")


def _voc_config(data_dir):
    config = default_data_config()
    config.source = "voc"
    config.tfds_data_dir = data_dir
    config.image_size = 32
    return config


def test_default_voc_splits_combine_2007_and_2012_trainval(voc_data_dir):
    info = get_dataset_info(_voc_config(voc_data_dir))
    assert len(info.class_names) == 20 and info.class_names[:2] == ("aeroplane", "bicycle")
    assert info.num_train_examples == 3 + 2  # VOC2007 trainval + VOC2012 trainval
    assert info.num_eval_examples == 3  # VOC2007 test
    assert info.eval_split_name == "test"  # what the training log calls its mAP


def test_eval_batches_carry_exact_pixel_boxes_labels_and_difficult_flags(voc_data_dir):
    config = _voc_config(voc_data_dir)
    names = get_dataset_info(config).class_names
    batches = list(make_eval_iterator(config, global_batch_size=2))
    assert len(batches) == 2
    rows = {}
    for batch in batches:
        for i in np.flatnonzero(batch["valid"][0]):
            rows[tuple(batch["image_size"][0, i])] = {
                key: value[0, i] for key, value in batch.items()
            }
    assert batches[1]["valid"][0].tolist() == [True, False]
    for image in TEST_IMAGES:
        row = rows.pop((image.height, image.width))
        count = len(image.objects)
        assert row["mask"].sum() == count and not row["mask"][count:].any()
        # In pixels, (ymin, xmin, ymax, xmax) * (height, width, height, width): VOC's pixel
        # indices from 1, inclusive, in continuous coordinates (pixel i spans [i - 1, i]).
        pixels = row["boxes"][:count] * ([image.height, image.width] * 2)
        expected = [[y0 - 1, x0 - 1, y1, x1] for x0, y0, x1, y1 in (o.box for o in image.objects)]
        np.testing.assert_allclose(pixels, expected, atol=1e-4)
        assert [names[label] for label in row["labels"][:count]] == [
            obj.name for obj in image.objects
        ]
        assert row["difficult"][:count].tolist() == [obj.difficult for obj in image.objects]
    assert not rows


def test_train_batches_leave_out_difficult_objects(voc_data_dir):
    config = _voc_config(voc_data_dir)
    config.train_split = "voc/2007:train+validation"
    config.augment.enabled = False
    batch = next(make_train_iterator(config, global_batch_size=3, seed=0))
    assert batch["image"].shape == (1, 3, 32, 32, 3)
    # Each trainval image has a cat and a difficult cow: only the cat is a target, its VOC
    # pixels (4, 4, 20, 16) of 40 x 32 in continuous coordinates: yxyx (3, 3, 16, 20) / size.
    assert batch["mask"][0].sum(axis=1).tolist() == [1, 1, 1]
    np.testing.assert_allclose(batch["boxes"][0, :, 0], [[0.09375, 0.075, 0.5, 0.5]] * 3, atol=1e-6)


def test_unprepared_voc_raises_with_offline_instructions_for_each_year(tmp_path):
    # The default train split reads VOC2007 and VOC2012: one error names both.
    with pytest.raises(sources.DatasetNotPreparedError) as error:
        get_dataset_info(_voc_config(str(tmp_path)))
    message = str(error.value)
    assert f"voc/2007 and voc/2012 are not prepared in {tmp_path}" in message
    for year in ("2007", "2012"):
        assert f"prepare_voc_offline('/path/to/VOCdevkit', '{year}', data_dir='{tmp_path}')" in (
            message
        )


def test_bad_annotations_are_named_before_anything_is_prepared(tmp_path):
    # TFDS's builder would stop at the first one with an error naming a copy of the file in
    # its cache; the check names every bad file where the user can fix it.
    devkit = tmp_path / "VOCdevkit"
    images = [
        VocImage("000001", 40, 32, [VocObject("cat", (4, 4, 20, 16))]),
        VocImage("000002", 40, 32, [VocObject("unicorn", (4, 4, 20, 16))]),
        VocImage("000003", 40, 32, [VocObject("dog", (4, 4, 50, 16))]),
    ]
    sets = {"train": ["000001", "000002"], "val": ["000003", "000004"], "test": ["000001"]}
    write_voc_folder(str(devkit / "VOC2007"), images, image_sets=sets)
    with pytest.raises(ValueError) as error:
        prepare_voc_offline(str(devkit), "2007", data_dir=str(tmp_path / "tfds"))
    message = str(error.value)
    annotations = devkit / "VOC2007" / "Annotations"
    assert "3 annotation file(s)" in message
    assert f"{annotations / '000002.xml'}: object 'unicorn' is not one of VOC's 20 cl" in message
    assert f"{annotations / '000003.xml'}: object 'dog' box" in message
    assert "outside the 40x32 <size>" in message
    assert f"{annotations / '000004.xml'}: not found (listed in val.txt)" in message
    assert not (tmp_path / "tfds" / "voc").exists()


def test_a_year_folder_given_as_the_devkit_is_named_with_its_parent(tmp_path):
    year_dir = tmp_path / "VOCdevkit" / "VOC2007"
    write_voc_folder(str(year_dir), TEST_IMAGES, image_sets={"test": ["000004"]})
    with pytest.raises(ValueError, match=r"is a year's folder: pass the VOCdevkit folder"):
        prepare_voc_offline(str(year_dir), "2007", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="does not exist"):
        prepare_voc_offline(str(tmp_path / "nowhere"), "2007", data_dir=str(tmp_path / "tfds"))


def test_voc2012_test_images_without_annotations_prepare(tmp_path):
    # VOC2012test.tar has no object annotations (they are not public), and the builder reads
    # none for that split: only the annotated splits are checked.
    devkit = tmp_path / "VOCdevkit"
    images = [
        VocImage(f"2008_00000{i}", 32, 24, [VocObject("dog", (2, 2, 30, 20))]) for i in (1, 2, 3)
    ]
    sets = {"train": ["2008_000001"], "val": ["2008_000002"], "test": ["2008_000003"]}
    write_voc_folder(str(devkit / "VOC2012"), images, image_sets=sets)
    (devkit / "VOC2012" / "Annotations" / "2008_000003.xml").unlink()
    builder = prepare_voc_offline(str(devkit), "2012", data_dir=str(tmp_path / "tfds"))
    assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
        "train": 1,
        "validation": 1,
        "test": 1,
    }


def test_a_pose_the_builder_does_not_know_is_named(tmp_path):
    year_dir = tmp_path / "VOCdevkit" / "VOC2007"
    write_voc_folder(str(year_dir), TEST_IMAGES[:1], image_sets={"test": ["000004"]})
    xml = year_dir / "Annotations" / "000004.xml"
    xml.write_text(xml.read_text().replace("<pose>Unspecified</pose>", "<pose>Sideways</pose>", 1))
    with pytest.raises(ValueError, match=r"has <pose> 'sideways', not one of \['frontal'"):
        prepare_voc_offline(str(tmp_path / "VOCdevkit"), "2007", data_dir=str(tmp_path / "tfds"))


@pytest.mark.parametrize(("flag", "refused"), [("true", True), ("2", True), ("false", False)])
def test_a_difficult_flag_the_builder_would_misread_is_named(tmp_path, flag, refused):
    # TFDS's builder takes the text '1' for difficult and any other for not: a 'true', which
    # a VOC-format folder reads as difficult, would be stored as an object to learn and score;
    # a 'false' both read alike.
    year_dir = tmp_path / "VOCdevkit" / "VOC2007"
    sets = {name: ["000004"] for name in ("train", "val", "test")}
    write_voc_folder(str(year_dir), TEST_IMAGES[:1], image_sets=sets)
    xml = year_dir / "Annotations" / "000004.xml"
    xml.write_text(
        xml.read_text().replace("<difficult>0</difficult>", f"<difficult>{flag}</difficult>", 1)
    )
    prepare = functools.partial(
        prepare_voc_offline, str(tmp_path / "VOCdevkit"), "2007", data_dir=str(tmp_path / "tfds")
    )
    if not refused:
        assert prepare().info.splits["test"].num_examples == 1
        return
    with pytest.raises(ValueError, match=rf"has <difficult> '{flag}', which TFDS's voc builder"):
        prepare()
    assert not (tmp_path / "tfds" / "voc").exists()  # nothing prepared
