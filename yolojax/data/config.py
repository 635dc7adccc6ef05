"""Defaults for `config.data`: every field the input pipeline reads, documented.

The project's `configs/*.py` start from `default_data_config()` and override what they need,
e.g. `config.data.source = 'voc'` or `--config.data.augment.hue=0.05` on the command line.
"""

import math

import ml_collections
from ml_collections import config_dict

from yolojax import errors
from yolojax.validation import check_choice, check_int, check_number

SOURCES = ("synthetic_shapes", "voc", "voc_folder")
NORMALIZATIONS = ("imagenet", "unit", "symmetric")
BAD_DATA_POLICIES = ("error", "skip")
COLOR_SPACES = ("yiq", "hsv")


def default_augment_config() -> ml_collections.ConfigDict:
    """Training augmentation (YOLOv1 paper values where the paper gives one)."""
    augment = ml_collections.ConfigDict()
    # Master switch: False trains on resized images only, as evaluation sees them.
    augment.enabled = True
    # Horizontal flip with probability 0.5: Darknet's training flips; the paper does not say.
    augment.flip = True
    # Random scale in [1 - s, 1 + s] and translation of up to s of the image size per axis
    # (paper: "random scaling and translations of up to 20% of the original image size").
    augment.scale_translate = 0.2
    # Exposure (HSV value) and saturation scaled by a factor in [1/f, f], log-uniform
    # (paper: "up to a factor of 1.5 in the HSV color space").
    augment.exposure = 1.5
    augment.saturation = 1.5
    # Hue shifted by up to this fraction of the colour wheel (darknet's yolov1 cfg: .1).
    augment.hue = 0.1
    # 'hsv': exact HSV operations (the paper's colour space); 'yiq': one linear colour matrix
    # per image (saturation and hue as YIQ chroma scale and rotation, exposure the same), ~4x
    # cheaper.
    augment.color_space = "hsv"
    # Gaussian blur applied with this probability, sigma uniform in [0.05, 1) x blur_max_sigma
    # pixels of the model input (the report's list; the paper has no blur).
    augment.blur_probability = 0.1
    augment.blur_max_sigma = 1.5
    # A box clipped by scale/translate is dropped when less than this fraction of its area
    # remains inside the image (a sliver of an object is not a learnable target).
    augment.min_visible_fraction = 0.25
    return augment


def default_synthetic_config() -> ml_collections.ConfigDict:
    """The embedded `synthetic_shapes` dataset (see `yolojax/data/synthetic_shapes.py`).

    The defaults are sized so that a tiny detector (112-128 px input, grid 7) learns it on two
    CPU cores in minutes; generation takes 7-20 s. Changing any field generates a new,
    separately cached dataset.
    """
    synthetic = ml_collections.ConfigDict()
    synthetic.num_train = 4000  # images in the 'train' split
    synthetic.num_test = 500  # images in the 'test' split
    synthetic.image_size = 128  # stored images are image_size x image_size pixels
    # 1..max_objects shapes per image (fewer where one finds no free place), at times one tiny
    # extra; the tiny and the mostly hidden ones are flagged difficult.
    synthetic.max_objects = 4
    # Longer side of a regular object as a fraction of the image side.
    synthetic.min_object_size = 0.15
    synthetic.max_object_size = 0.6
    synthetic.seed = 0  # generation seed; the dataset is a pure function of these fields
    return synthetic


def default_data_config() -> ml_collections.ConfigDict:
    """Returns the `config.data` defaults: the synthetic dataset at the paper's 448x448."""
    data = ml_collections.ConfigDict()
    # 'synthetic_shapes' (embedded, generated locally), 'voc' (TFDS voc/2007 + voc/2012,
    # prepared beforehand: see docs/data.md) or 'voc_folder' (any folder of images with VOC
    # XML files).
    data.source = "synthetic_shapes"
    # TFDS data directory (datasets are prepared and cached there); None = TFDS default
    # (~/tensorflow_datasets or $TFDS_DATA_DIR).
    data.tfds_data_dir = config_dict.placeholder(str)
    # TFDS split expressions; None = the source's default:
    #   voc:              train 'voc/2007:train+validation,voc/2012:train+validation',
    #                     eval 'voc/2007:test' (comma-separated '<dataset>:<split>' parts)
    #   synthetic_shapes: train 'train', eval 'test'
    #   voc_folder:       train 'train', eval 'validation' if the folder defines it, else
    #                     'test' (the best checkpoint is chosen on the eval split); 'test'
    #                     for a train split of trainval or validation (VOC's trainval.txt
    #                     holds val.txt's images)
    # Any TFDS expression works, e.g. 'train[:80%]' or 'voc/2012:validation[:500]'.
    data.train_split = config_dict.placeholder(str)
    data.eval_split = config_dict.placeholder(str)
    # voc_folder only: the folder of images and their VOC XML files (docs/data.md: layouts).
    data.folder = config_dict.placeholder(str)
    # voc_folder only: class names in label order; None = every name found in the XML files,
    # sorted. With a list, an object of another class is bad data.
    data.class_names = config_dict.placeholder(tuple)
    # voc_folder only: 'error' stops at a split's bad files (naming each and its problem);
    # 'skip' leaves out every image with a problem and warns with the count.
    data.on_bad_data = "error"
    # voc_folder only: a box reaching at most this many pixels beyond its image's edge (a
    # labelling tool's slip: a 0-based end, a drag past the edge) is clipped to the image, with
    # a warning giving the count; a box farther out is bad data. 0: none is clipped.
    data.clip_box_overshoot = 0.0
    # Square model input size in pixels.
    data.image_size = 448
    # Boxes per image after padding. 64 is above the most crowded VOC 2007/2012 image; an
    # image with more objects raises an error instead of losing boxes silently.
    data.max_boxes = 64
    # Image normalization: 'imagenet' (mean/std, for ported torchvision weights), 'unit'
    # ([0, 1]) or 'symmetric' ([-1, 1]).
    data.normalization = "imagenet"
    # Train on objects flagged `difficult` (darknet's voc_label.py leaves them out; VOC
    # evaluation ignores them either way). Evaluation always carries them, flagged.
    data.train_on_difficult = False
    # Caps: use only the first N examples of the split (in the dataset's stored order, a fixed
    # pseudo-random subset); None = all. For the report's small-data sweeps.
    data.max_train_examples = config_dict.placeholder(int)
    data.max_eval_examples = config_dict.placeholder(int)
    data.augment = default_augment_config()
    data.synthetic = default_synthetic_config()
    return data


# The augmentation's settings and the [low, high] range each may take.
_AUGMENT_RANGES = {
    "scale_translate": (0.0, 0.9),
    "exposure": (1.0, 10.0),
    "saturation": (1.0, 10.0),
    "hue": (0.0, 0.5),
    "blur_probability": (0.0, 1.0),
    "blur_max_sigma": (1e-3, 20.0),
    "min_visible_fraction": (0.0, 1.0),
}


def check_synthetic_fields(synthetic) -> None:
    """Raises ValueError naming the first field of ``synthetic`` (``config.data.synthetic``,
    every field) out of range."""
    for name, low in [("num_train", 1), ("num_test", 1), ("image_size", 16), ("max_objects", 1)]:
        check_int(f"config.data.synthetic.{name}", synthetic[name], low)
    smallest, largest = synthetic["min_object_size"], synthetic["max_object_size"]
    if not 0.0 < smallest <= largest <= 1.0:
        raise ValueError(
            "config.data.synthetic.min_object_size and max_object_size must satisfy "
            f"0 < min <= max <= 1, got {smallest} and {largest}"
        )


def validate_data_config(data_config) -> None:
    """Raises ValueError naming the first `config.data` field with an unusable value."""
    check_choice("config.data.source", data_config.source, SOURCES)
    check_choice("config.data.normalization", data_config.normalization, NORMALIZATIONS)
    check_choice("config.data.on_bad_data", data_config.on_bad_data, BAD_DATA_POLICIES)
    if data_config.tfds_data_dir:
        errors.check_utf8_path("config.data.tfds_data_dir", data_config.tfds_data_dir)
    # A setting that would be ignored without a word, and how to leave it.
    for key, unset in [("folder", None), ("class_names", None), ("clip_box_overshoot", 0)]:
        if data_config[key] != unset and data_config.source != "voc_folder":
            raise ValueError(
                f"config.data.{key} applies to source 'voc_folder' only and the source is "
                f"{data_config.source!r}: leave it {'unset' if unset is None else f'at {unset}'}, "
                "or set --config.data.source=voc_folder (configs/folder.py does)."
            )
    check_number("config.data.clip_box_overshoot", data_config.clip_box_overshoot, at_least=0)
    if data_config.source == "voc_folder" and not data_config.folder:
        raise ValueError(
            "config.data.folder must name a folder of images with VOC XML files when "
            "config.data.source='voc_folder': pass --config.data.folder=PATH, the folder "
            "that holds Annotations/ and JPEGImages/, or the images with their .xml files "
            "(docs/data.md, 'A VOC-format folder')."
        )
    if data_config.source == "synthetic_shapes":  # here too for --print_config, not at the build
        check_synthetic_fields(data_config.synthetic)
    for name, low in [("image_size", 16), ("max_boxes", 1)]:
        check_int(f"config.data.{name}", data_config[name], low)
    # Known beforehand for the synthetic images only: an image of more boxes stops training
    # when it is read, whose message's count another image could exceed again.
    most = data_config.synthetic.max_objects + 1  # and the tiny object some images get
    if data_config.source == "synthetic_shapes" and data_config.max_boxes < most:
        raise ValueError(
            f"config.data.max_boxes={data_config.max_boxes} is fewer than the synthetic images' "
            f"objects: up to config.data.synthetic.max_objects="
            f"{data_config.synthetic.max_objects} and a tiny one: set "
            f"--config.data.max_boxes={most} or more."
        )
    for name in ("max_train_examples", "max_eval_examples"):
        if data_config[name] is not None:
            check_int(f"config.data.{name} (or None)", data_config[name], 1)
    augment_config = data_config.augment
    check_choice("config.data.augment.color_space", augment_config.color_space, COLOR_SPACES)
    for name, (low, high) in _AUGMENT_RANGES.items():
        check_number(
            f"config.data.augment.{name}", augment_config[name], at_least=low, at_most=high
        )
    reach = blur_radius(augment_config.blur_max_sigma)  # the blur's reflect padding
    blurs = augment_config.enabled and augment_config.blur_probability > 0
    if blurs and reach >= data_config.image_size:
        raise ValueError(
            f"config.data.augment.blur_max_sigma={augment_config.blur_max_sigma} blurs {reach} "
            f"pixels around each one, as far as config.data.image_size={data_config.image_size}: "
            f"lower it below {data_config.image_size / 3:g}"
        )


def blur_radius(max_sigma: float) -> int:
    """The pixels a blur of up to ``max_sigma`` reaches on each side (3 sigma, at least 1)."""
    return max(1, math.ceil(3 * max_sigma))
