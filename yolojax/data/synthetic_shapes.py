"""`synthetic_shapes`: an embedded detection dataset, generated procedurally (no download).

Each image holds 1..`max_objects` coloured shapes (ellipse, rectangle, triangle, star, cross;
fewer where one finds no free place) of varied size, aspect ratio and small rotation, on a
textured, noisy background. Colours are random and not tied to the class, so a detector must
learn shape. Objects overlap a little (IoU <= 0.3, centres apart); some images get one tiny
extra object, and an object mostly hidden by others is possible: both are flagged
`is_difficult`, as VOC does, and VOC evaluation ignores them. The features mirror TFDS `voc`
(`image`, `image/filename`, `objects/{label, bbox, is_difficult, is_truncated}`), so the same
pipeline reads both.

The dataset is a pure function of its builder config (and the builder version): example `i`
of a split is drawn from `np.random.default_rng([seed, split_index, i])`.

    builder = make_builder(shapes_builder_config(num_train=64, num_test=16),
                           data_dir=tmp_dir, file_format='array_record')
    builder.download_and_prepare()
"""

import colorsys
import dataclasses
import io
from typing import NamedTuple

from yolojax.data import quiet_tensorflow  # noqa: F401 (first: see its docstring)

# isort: split
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw

from yolojax.data.config import check_synthetic_fields, default_synthetic_config
from yolojax.data.schema import detection_features, local_dataset_info

CLASS_NAMES = ("ellipse", "rectangle", "triangle", "star", "cross")

_TINY_OBJECT_PROBABILITY = 0.2  # chance that an image gets one extra, tiny, difficult object
_TINY_OBJECT_SIZE = (0.05, 0.1)  # its longer side, as a fraction of the image side
_MAX_ASPECT_RATIO = 1.6  # longer / shorter side of an object's box
_MAX_ROTATION_DEGREES = 15.0  # small, so that a rectangle stays a rectangle
_MAX_IOU = 0.3  # "limited overlap" between regular objects
_MAX_COVERED_FRACTION = 0.5  # of the smaller box, so that no object hides behind another
_MIN_CENTRE_DISTANCE = 0.15  # between regular objects, in image sides (about a 7x7 cell)
_MIN_VISIBLE_FRACTION = 0.5  # an object hidden more than this is flagged difficult
_PLACEMENT_TRIES = 30
_NOISE_SIGMA = 0.04  # per-pixel sensor noise, on [0, 1] intensities
_JPEG_QUALITY = 90


def _ellipse_outline(points: int = 48) -> np.ndarray:
    angles = np.linspace(0.0, 2 * np.pi, points, endpoint=False)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star_outline(points: int = 5, inner_radius: float = 0.45) -> np.ndarray:
    angles = np.arange(2 * points) * np.pi / points - np.pi / 2
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner_radius)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _cross_outline(half_width: float = 0.33) -> np.ndarray:
    t = half_width
    # One arm-end pair per side, then the inner corner, clockwise from the top.
    quarter = [(-t, -1), (t, -1), (t, -t)]
    points = []
    for _ in range(4):  # Rotating (x, y) by 90 degrees: (-y, x).
        points += quarter
        quarter = [(-y, x) for x, y in quarter]
    return np.array(points, dtype=np.float64)


# Outlines as (P, 2) [x, y] points, y pointing down; indexed like CLASS_NAMES.
_OUTLINES = (
    _ellipse_outline(),
    np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=np.float64),
    np.array([(0, -1), (1, 1), (-1, 1)], dtype=np.float64),
    _star_outline(),
    _cross_outline(),
)


class RenderedImage(NamedTuple):
    """One generated example.

    Attributes:
      image: (S, S, 3) uint8 RGB.
      boxes: (K, 4) float32 normalized yxyx, the tight box of each object's drawn pixels.
      labels: (K,) int64 indices into CLASS_NAMES.
      difficult: (K,) bool, True for tiny or mostly hidden objects.
      masks: (K, S, S) bool, the pixels each object covers before later objects occlude it.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    masks: np.ndarray


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Grey-ish, low-saturation (S, S, 3) float background with smooth texture and a gradient."""
    base = rng.uniform(0.2, 0.8) + rng.uniform(-0.08, 0.08, size=3)
    # Low-frequency texture: a random 5x5 grid, bilinearly upsampled (separable matrices).
    coarse = rng.normal(0.0, 0.1, size=(5, 5, 3))
    positions = np.linspace(0.0, 4.0, size)
    interpolation = np.maximum(0.0, 1.0 - np.abs(positions[:, None] - np.arange(5)[None, :]))
    texture = (interpolation @ coarse.transpose(2, 0, 1) @ interpolation.T).transpose(1, 2, 0)
    direction = rng.normal(size=2)
    ramp = np.linspace(-0.5, 0.5, size)
    gradient = (
        rng.uniform(0.0, 0.3)
        * (direction[0] * ramp[:, None] + direction[1] * ramp[None, :])
        / np.linalg.norm(direction)
    )
    return base + texture + gradient[:, :, None]


def _shape_mask(
    label: int, box: tuple[float, float, float, float], rotation: float, size: int
) -> np.ndarray:
    """Rasterizes shape `label` rotated by `rotation` (radians), stretched to fill `box`.

    `box` is (left, top, width, height) in pixels, continuous coordinates (pixel i spans
    [i, i + 1]). Returns a (size, size) bool mask.
    """
    left, top, width, height = box
    cos, sin = np.cos(rotation), np.sin(rotation)
    points = _OUTLINES[label] @ np.array([[cos, sin], [-sin, cos]])
    low, high = points.min(axis=0), points.max(axis=0)
    points = (points - low) / (high - low) * (width, height) + (left, top)
    canvas = Image.new("L", (size, size), 0)
    # PIL fills the pixels whose centres (integer coordinates) lie inside: shift by half.
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points - 0.5], fill=1)
    return np.asarray(canvas, dtype=bool)


def _sample_box(rng, size: int, longest: float) -> tuple[float, float, float, float]:
    shorter = longest / rng.uniform(1.0, _MAX_ASPECT_RATIO)
    width, height = (longest, shorter) if rng.random() < 0.5 else (shorter, longest)
    return rng.uniform(0, size - width), rng.uniform(0, size - height), width, height


def _fits(box, placed, size: int) -> bool:
    """True when `box` keeps limited overlap and centre distance with every placed box.

    Boxes are (left, top, width, height) in pixels.
    """
    left, top, width, height = box
    for other_left, other_top, other_width, other_height in placed:
        inter_w = min(left + width, other_left + other_width) - max(left, other_left)
        inter_h = min(top + height, other_top + other_height) - max(top, other_top)
        inter = max(inter_w, 0.0) * max(inter_h, 0.0)
        iou = inter / (width * height + other_width * other_height - inter)
        centre_distance = np.hypot(
            left + width / 2 - other_left - other_width / 2,
            top + height / 2 - other_top - other_height / 2,
        )
        covered = inter / min(width * height, other_width * other_height)
        if (
            iou > _MAX_IOU
            or covered > _MAX_COVERED_FRACTION
            or centre_distance < _MIN_CENTRE_DISTANCE * size
        ):
            return False
    return True


def render_example(
    rng: np.random.Generator,
    *,
    image_size: int,
    max_objects: int,
    min_object_size: float,
    max_object_size: float,
) -> RenderedImage:
    """Draws one image and its annotations; deterministic given the state of `rng`."""
    num_objects = rng.integers(1, max_objects + 1)
    placed, specs = [], []
    for _ in range(num_objects):
        for _ in range(_PLACEMENT_TRIES):
            longest = rng.uniform(min_object_size, max_object_size) * image_size
            box = _sample_box(rng, image_size, longest)
            if _fits(box, placed, image_size):
                placed.append(box)
                specs.append((box, False))
                break
    if rng.random() < _TINY_OBJECT_PROBABILITY:
        longest = rng.uniform(*_TINY_OBJECT_SIZE) * image_size
        specs.append((_sample_box(rng, image_size, longest), True))

    image = _background(rng, image_size)
    owner = np.full((image_size, image_size), -1)
    labels, masks, tiny = [], [], []
    for box, is_tiny in specs:
        label = int(rng.integers(len(CLASS_NAMES)))
        rotation = np.deg2rad(rng.uniform(-_MAX_ROTATION_DEGREES, _MAX_ROTATION_DEGREES))
        mask = _shape_mask(label, box, rotation, image_size)
        if not mask.any():  # Too thin to cover a pixel centre: not an object at all.
            continue
        colour = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))
        image[mask] = colour
        owner[mask] = len(masks)
        labels.append(label)
        masks.append(mask)
        tiny.append(is_tiny)
    image += rng.normal(0.0, _NOISE_SIGMA, size=image.shape)

    masks = np.array(masks, dtype=bool).reshape(-1, image_size, image_size)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    boxes = np.stack(
        [
            rows.argmax(axis=1),
            cols.argmax(axis=1),
            image_size - rows[:, ::-1].argmax(axis=1),
            image_size - cols[:, ::-1].argmax(axis=1),
        ],
        axis=1,
    ).astype(np.float32)
    visible = (owner[None] == np.arange(len(masks))[:, None, None]).sum(axis=(1, 2))
    hidden = visible < _MIN_VISIBLE_FRACTION * masks.sum(axis=(1, 2))
    return RenderedImage(
        image=np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8),
        boxes=boxes / image_size,
        labels=np.array(labels, dtype=np.int64),
        difficult=np.array(tiny) | hidden,
        masks=masks,
    )


# The defaults, and what each field means: config.data.synthetic's.
_DEFAULTS = default_synthetic_config()


@dataclasses.dataclass(eq=False)
class SyntheticShapesConfig(tfds.core.BuilderConfig):
    """Size and content of a `synthetic_shapes` variant; build one with shapes_builder_config."""

    num_train: int = _DEFAULTS.num_train
    num_test: int = _DEFAULTS.num_test
    image_size: int = _DEFAULTS.image_size
    max_objects: int = _DEFAULTS.max_objects
    min_object_size: float = _DEFAULTS.min_object_size
    max_object_size: float = _DEFAULTS.max_object_size
    seed: int = _DEFAULTS.seed


# The variant's fields and their defaults, as SyntheticShapesConfig declares them.
_FIELDS = {
    field.name: field.default
    for field in dataclasses.fields(SyntheticShapesConfig)
    if field.name in SyntheticShapesConfig.__annotations__
}


def shapes_builder_config(**fields) -> SyntheticShapesConfig:
    """A validated config whose name encodes every field (one cache per variant).

    Args:
      **fields: any of SyntheticShapesConfig's fields (num_train, num_test, image_size,
        max_objects, min_object_size, max_object_size, seed); the others keep its defaults.

    Raises:
      ValueError: an unknown field, or a value out of range.
    """
    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise ValueError(
            f"config.data.synthetic has no field(s) {unknown}; its fields: {list(_FIELDS)}."
        )
    values = {**_FIELDS, **fields}
    check_synthetic_fields(values)
    smallest, largest = values["min_object_size"], values["max_object_size"]
    name = (
        f"train{values['num_train']}_test{values['num_test']}_size{values['image_size']}"
        f"_objects{values['max_objects']}_from{smallest:g}_to{largest:g}_seed{values['seed']}"
    )
    return SyntheticShapesConfig(
        name=name,
        description="Coloured shapes on textured backgrounds, generated procedurally.",
        **values,
    )


class SyntheticShapes(tfds.core.GeneratorBasedBuilder):
    """TFDS builder of the synthetic shapes detection dataset (splits 'train' and 'test')."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 (TFDS class attribute)
    BUILDER_CONFIGS = [shapes_builder_config()]  # noqa: RUF012 (TFDS class attribute)

    # TFDS's own lines say "Downloading and preparing dataset Unknown size (download: ...)".
    def _log_download_bytes(self) -> None:
        config = self.builder_config
        print(
            f"Generating the synthetic shapes dataset ({config.num_train} train and "
            f"{config.num_test} test images of {config.image_size} px) in {self.data_dir}, "
            "once: later runs reuse it."
        )

    def _log_download_done(self) -> None:
        pass  # the line above said it all

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return local_dataset_info(
            self.dataset_info_from_configs(
                features=detection_features(
                    CLASS_NAMES,
                    tfds.features.Image(shape=(size, size, 3), encoding_format="jpeg"),
                ),
                homepage="https://github.com/yolojax/yolojax",
            )
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Generated locally.
        config = self.builder_config
        return {
            "train": self._generate_examples("train", 0, config.num_train),
            "test": self._generate_examples("test", 1, config.num_test),
        }

    def _generate_examples(self, split: str, split_index: int, count: int):
        config = self.builder_config
        for index in range(count):
            rendered = render_example(
                np.random.default_rng([config.seed, split_index, index]),
                image_size=config.image_size,
                max_objects=config.max_objects,
                min_object_size=config.min_object_size,
                max_object_size=config.max_object_size,
            )
            encoded = io.BytesIO()
            Image.fromarray(rendered.image).save(encoded, format="JPEG", quality=_JPEG_QUALITY)
            filename = f"{split}_{index:06d}.jpg"
            yield (
                filename,
                {
                    "image": encoded.getvalue(),
                    "image/filename": filename,
                    "objects": {
                        "label": rendered.labels,
                        "bbox": rendered.boxes,
                        "is_difficult": rendered.difficult,
                        "is_truncated": np.zeros_like(rendered.difficult),
                    },
                },
            )


def make_builder(config: SyntheticShapesConfig, **kwargs) -> SyntheticShapes:
    """The builder for `config`; kwargs go to the TFDS builder (data_dir, file_format...)."""
    # TFDS refuses an equal copy of a registered config: pass the registered one.
    registered = SyntheticShapes.builder_configs.get(config.name)
    return SyntheticShapes(config=registered or config, **kwargs)
