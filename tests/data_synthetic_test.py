"""The embedded synthetic_shapes dataset: content statistics, determinism, TFDS round trip."""

import io
import tempfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from yolojax.data import default_data_config, sources, synthetic_shapes

RENDER_ARGS = dict(image_size=64, max_objects=4, min_object_size=0.15, max_object_size=0.6)


def _render(index: int) -> synthetic_shapes.RenderedImage:
    return synthetic_shapes.render_example(np.random.default_rng([0, 0, index]), **RENDER_ARGS)


@pytest.fixture(scope="module")
def rendered():
    return [_render(index) for index in range(150)]


def _iou(a, b):
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter)


def test_boxes_are_the_tight_boxes_of_the_drawn_shapes(rendered):
    for example in rendered[:30]:
        for box, mask in zip(example.boxes, example.masks, strict=True):
            rows, cols = np.nonzero(mask)
            expected = np.array([rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]) / 64
            np.testing.assert_allclose(box, expected)


def test_objects_have_the_configured_count_size_and_limited_overlap(rendered):
    for example in rendered:
        regular = example.boxes[~example.difficult]
        assert 1 <= len(example.labels) <= RENDER_ARGS["max_objects"] + 1  # + one tiny object
        assert len(regular) <= RENDER_ARGS["max_objects"]
        longest = np.max(regular[:, 2:] - regular[:, :2], axis=1) if len(regular) else []
        # Rasterizing moves an edge by up to about a pixel.
        assert all(0.15 - 2 / 64 <= side <= 0.6 + 2 / 64 for side in longest)
        for i in range(len(regular)):
            for j in range(i):
                assert _iou(regular[i], regular[j]) <= 0.3 + 0.05


def test_classes_all_appear_and_a_few_objects_are_difficult(rendered):
    labels = np.concatenate([example.labels for example in rendered])
    difficult = np.concatenate([example.difficult for example in rendered])
    assert set(labels) == set(range(len(synthetic_shapes.CLASS_NAMES)))
    assert 0.02 < difficult.mean() < 0.2
    assert 1.5 < len(labels) / len(rendered) < 4.0


def test_rendering_is_deterministic_per_seed():
    first, again, other = _render(3), _render(3), _render(4)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.boxes, again.boxes)
    assert not np.array_equal(first.image, other.image)


def test_shapes_builder_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"synthetic\.num_train"):
        synthetic_shapes.shapes_builder_config(num_train=0)
    with pytest.raises(ValueError, match="min_object_size"):
        synthetic_shapes.shapes_builder_config(min_object_size=0.7, max_object_size=0.5)
    with pytest.raises(ValueError, match=r"no field\(s\) \['num_tests'\]"):
        synthetic_shapes.shapes_builder_config(num_tests=3)


def test_the_default_config_trains_on_the_builders_default_variant():
    # configs/shapes.py's dataset is the one TFDS registers as synthetic_shapes' default.
    default = synthetic_shapes.SyntheticShapes.BUILDER_CONFIGS[0]
    config = default_data_config().synthetic.to_dict()
    assert config == {name: getattr(default, name) for name in config}
    assert default.name == synthetic_shapes.shapes_builder_config(**config).name


def test_tfds_builder_stores_the_rendered_examples(tmp_path):
    config = synthetic_shapes.shapes_builder_config(num_train=6, num_test=3, image_size=48)
    builder = synthetic_shapes.make_builder(
        config, data_dir=str(tmp_path), file_format="array_record"
    )
    builder.download_and_prepare()
    assert builder.info.splits["train"].num_examples == 6
    assert builder.info.splits["test"].num_examples == 3
    assert builder.info.features["objects"]["label"].names == list(synthetic_shapes.CLASS_NAMES)
    source = builder.as_data_source("test", decoders={"image": tfds.decode.SkipDecoding()})
    stored = {example["image/filename"].decode(): example for example in source}
    expected = synthetic_shapes.render_example(
        np.random.default_rng([0, 1, 2]),
        image_size=48,
        max_objects=4,
        min_object_size=0.15,
        max_object_size=0.6,
    )
    example = stored["test_000002.jpg"]
    np.testing.assert_allclose(np.stack(example["objects"]["bbox"]), expected.boxes)
    np.testing.assert_array_equal(example["objects"]["label"], expected.labels)
    np.testing.assert_array_equal(example["objects"]["is_difficult"], expected.difficult)
    decoded = np.asarray(Image.open(io.BytesIO(example["image"])), np.float32)

    def pooled(image):  # 4x4 means: JPEG drops the pixel noise, not the picture
        return image.reshape(12, 4, 12, 4, 3).mean(axis=(1, 3))

    assert np.abs(pooled(decoded) - pooled(expected.image)).mean() < 3


def test_preparing_leaves_no_temporary_folder(tmp_path, monkeypatch):
    # TFDS's look-up of a builder's info in its GCS bucket made an empty tmp*tfds folder in
    # the temporary folder for each builder made before the preparation (two a run's first
    # start), never removed: 1,293 had piled up in the /tmp of a machine running the tests.
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    data = default_data_config()
    data.synthetic.update(num_train=4, num_test=2, image_size=32)
    data.tfds_data_dir = str(tmp_path / "tfds")
    assert len(sources.open_split(data, "eval")) == 2
    assert len(sources.open_split(data, "train")) == 4  # prepared: opened as it is
    assert list(temporary.iterdir()) == []
