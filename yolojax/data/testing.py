"""Writers of small VOC-layout folders, for tests, benchmarks and trying the pipeline offline,
and a TFDS mock data source with valid boxes.

images = [VocImage('a', 64, 48, [VocObject('dog', (5, 4, 30, 40))])]
write_voc_folder('/tmp/VOCdevkit/VOC2007', images, image_sets={'test': ['a']})
"""

import dataclasses
import os

from yolojax.data import quiet_tensorflow  # noqa: F401 (first: see its docstring)

# isort: split
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image


@dataclasses.dataclass
class VocObject:
    """One annotated object; `box` is (xmin, ymin, xmax, ymax) in VOC pixel coordinates:
    pixel indices from 1, ends inclusive (a box of the whole W x H image is (1, 1, W, H))."""

    name: str
    box: tuple[float, float, float, float]
    difficult: bool = False
    truncated: bool = False


@dataclasses.dataclass
class VocImage:
    """One image and its annotation. Without `pixels`, a random image of the given size."""

    image_id: str
    width: int
    height: int
    objects: list[VocObject]
    pixels: np.ndarray | None = None  # (height, width, 3) uint8
    extension: str = ".jpg"  # '.jpg' or '.png'


def voc_xml(image: VocImage) -> str:
    """The VOC annotation XML of `image`."""
    objects = "".join(
        f"<object><name>{obj.name}</name><pose>Unspecified</pose>"
        f"<truncated>{int(obj.truncated)}</truncated><difficult>{int(obj.difficult)}</difficult>"
        "<bndbox>"
        + "".join(
            f"<{tag}>{value:g}</{tag}>"
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), obj.box, strict=True)
        )
        + "</bndbox></object>"
        for obj in image.objects
    )
    return (
        f"<annotation><folder>VOC</folder><filename>{image.image_id}{image.extension}</filename>"
        f"<size><width>{image.width}</width><height>{image.height}</height><depth>3</depth>"
        f"</size>{objects}</annotation>"
    )


def write_voc_folder(
    folder: str,
    images: list[VocImage],
    *,
    image_sets: dict[str, list[str]] | None = None,
    seed: int = 0,
    jpeg_quality: int = 90,
) -> str:
    """Writes Annotations/, JPEGImages/ and, if given, ImageSets/Main/<set>.txt; returns folder."""
    rng = np.random.default_rng(seed)
    for sub in ("Annotations", "JPEGImages"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    for image in images:
        pixels = image.pixels
        if pixels is None:
            pixels = rng.integers(0, 256, (image.height, image.width, 3), dtype=np.uint8)
        path = os.path.join(folder, "JPEGImages", image.image_id + image.extension)
        Image.fromarray(pixels).save(path, quality=jpeg_quality)
        with open(os.path.join(folder, "Annotations", image.image_id + ".xml"), "w") as file:
            file.write(voc_xml(image))
    if image_sets:
        os.makedirs(os.path.join(folder, "ImageSets", "Main"), exist_ok=True)
        for name, ids in image_sets.items():
            with open(os.path.join(folder, "ImageSets", "Main", name + ".txt"), "w") as file:
                file.write("".join(image_id + "\n" for image_id in ids))
    return folder


def valid_box_data_source(num_examples: int):
    """An ``as_data_source_fn`` for ``tfds.testing.mock_data`` whose examples have valid boxes.

    TFDS's own random examples draw each object field's length separately and box corners
    at random (so ``ymin > ymax`` happens); these have equal-length object fields and boxes
    with min <= max, as any real detection dataset.

        with tfds.testing.mock_data(num_examples=6, as_data_source_fn=valid_box_data_source(6)):
            ...
    """

    def data_source(builder, split, decoders=None, **kwargs):
        del split, decoders, kwargs  # every split gets the same random examples
        features = builder.info.features
        generator = tfds.testing.mocking.RandomFakeGenerator(
            features, num_examples, constant_dynamic_shape=True
        )
        examples = []
        for index in range(num_examples):
            example = generator[index]
            corners = example["objects"]["bbox"].reshape(-1, 2, 2)
            example["objects"]["bbox"] = np.concatenate([corners.min(1), corners.max(1)], axis=1)
            examples.append(features.encode_example(example))
        return examples

    return data_source
