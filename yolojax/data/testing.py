"""Writers of small VOC-layout folders, for tests, benchmarks and trying the pipeline offline.

images = [VocImage('a', 64, 48, [VocObject('dog', (5, 4, 30, 40))])]
write_voc_folder('/tmp/VOCdevkit/VOC2007', images, image_sets={'test': ['a']})
"""

import dataclasses
import os

import numpy as np
from PIL import Image


@dataclasses.dataclass
class VocObject:
    """One annotated object; `box` is (xmin, ymin, xmax, ymax) in VOC pixel coordinates."""

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
