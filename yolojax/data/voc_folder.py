"""`voc_folder`: a TFDS builder for any local folder of images with PASCAL VOC XML files.

Two layouts. PASCAL VOC's own:

    folder/Annotations/<id>.xml          one VOC XML per image
    folder/JPEGImages/<id>.jpg|.jpeg|.png|...
    folder/ImageSets/Main/<split>.txt    optional: one id per line ('val.txt' -> 'validation')

or each XML beside its image (Roboflow's "Pascal VOC" export, LabelImg's default), in the
folder itself or in split folders:

    folder/[train|valid|validation|val|test/]<name>.xml and <name>.jpg|.jpeg|.png|...

Without split files or folders, the ids are split about 90:10 into 'train' and 'validation'
by a hash of each id (as the report split its own datasets): `voc_layout` finds the
files and the splits, `voc_xml` reads each XML file, and this module checks each image against
its annotation and builds the dataset. Class names come from the XML
files (all names found, sorted) or from a given list. Boxes are stored normalized yxyx, VOC
pixel coordinates divided by the image size, as TFDS `voc` does.

Bad data (a missing or corrupt image, malformed XML, an unknown class, a box outside the image
or with swapped corners, an XML size that disagrees with the image) raises `BadDataError` naming the
file and the problem, or with `on_bad_data='skip'` leaves the image out and warns with the
count. A skipped image is never kept with some of its boxes dropped. A box at most
`clip_box_overshoot` pixels beyond its image is clipped to it, with a warning.

    builder = VocFolder(config=voc_folder_config('/data/masks'), file_format='array_record')
    builder.download_and_prepare()
"""

import collections
import dataclasses
import difflib
import functools
import hashlib
import io
import logging
import math
import os
import re

from yolojax.data import quiet_tensorflow  # noqa: F401 (first: see its docstring)

# isort: split
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from yolojax import boxes as box_ops
from yolojax import errors
from yolojax.data.config import BAD_DATA_POLICIES
from yolojax.data.decoding import decode_image
from yolojax.data.schema import detection_features, local_dataset_info
from yolojax.data.voc_layout import (
    annotation_ids,
    find_image,
    folder_splits,
    folder_state,
    split_file,
    xml_path_of,
)
from yolojax.data.voc_xml import BadDataError, ParsedObject, parse_annotation
from yolojax.images import exif_orientation
from yolojax.validation import check_choice, check_number

# Pillow's names for the formats tf.io.decode_image reads (MPO: multi-picture camera JPEGs).
_DECODABLE_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP")
_MAX_REPORTED_PROBLEMS = 5
# A box beyond its image by up to this many pixels, or this fraction of the image's longer
# side, gets config.data.clip_box_overshoot suggested.
_SLIP_PIXELS, _SLIP_FRACTION = 2, 0.02

_logger = logging.getLogger(__name__)


def _read_image(path: str) -> tuple[bytes, int, int, int]:
    """Returns the file's bytes, its (width, height) as stored and its EXIF orientation (1:
    none), decoding it fully, as Pillow and as the input pipeline does, to catch corruption."""
    with open(path, "rb") as file:
        encoded = file.read()
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            image.load()
            image_format, mode = image.format, image.mode
            width, height = image.width, image.height
            orientation = exif_orientation(image)
    except UnidentifiedImageError:
        raise BadDataError(
            f"{path}: corrupt or unreadable image (not an image file Pillow can read)"
        ) from None
    except Image.DecompressionBombError as error:  # Pillow's guard: over 179 megapixels
        raise BadDataError(f"{path}: an image too large to read ({error}): shrink it") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadDataError(f"{path}: corrupt or unreadable image ({error})") from error
    if image_format not in _DECODABLE_FORMATS:
        # Pillow reads formats that the pipeline's tf.io.decode_image does not: such a file
        # would pass here and stop training mid-epoch.
        raise BadDataError(
            f"{path}: unsupported image format {image_format}; convert it to JPEG or PNG"
        )
    if image_format == "BMP" and mode not in ("RGB", "RGBA", "L"):
        # TensorFlow's BMP decoder ignores the palette: the colours would become grey indices.
        raise BadDataError(f"{path}: a BMP with a colour palette ({mode}); convert it to PNG")
    try:  # what Pillow reads, TensorFlow may not (a WebP with transparency, a GIF's frame)
        decode_image(tf.constant(encoded))
    except tf.errors.OpError as error:
        # Found in training instead, it stopped the run with TensorFlow's traceback.
        raise BadDataError(
            f"{path}: an image the input pipeline cannot decode "
            f"({errors.first_line(error.message)}); convert it to JPEG or PNG"
        ) from None
    return encoded, width, height, orientation


# EXIF orientations that turn the stored image a quarter (width and height swap).
_TURNED_A_QUARTER = (5, 6, 7, 8)
# For a photo whose EXIF orientation turns it: its boxes are taken in the pixels as stored.
_UPRIGHT_ADVICE = (
    "its EXIF orientation turns it for viewers and most labelling tools, and its boxes were "
    "likely drawn upright; the pipeline uses the pixels as stored: save it upright, "
    "PIL.ImageOps.exif_transpose(image).save(path)"
)


def _overshoot(obj: ParsedObject, width: int, height: int) -> float:
    """How far, in pixels, the box's farthest coordinate lies beyond its range: xmin and
    ymin in [0, size], xmax and ymax in [1, size] (VOC's pixels count from 1, ends inclusive:
    xmin == xmax is a box one pixel wide, xmin = 0 (a 0-based exporter's) is taken as the
    image's edge, and xmax = 0 is no pixel). 0 for a box inside. Rounded to a millionth of a
    pixel: 20.3 - 20 is 0.3 as the message says it, which a setting of 0.3 clips."""
    return round(
        max(
            max(low - value, value - high, 0.0)
            for value, (low, high) in zip(obj.box, _box_ranges(width, height), strict=True)
        ),
        6,
    )


def _box_ranges(width: int, height: int) -> tuple[tuple[int, int], ...]:
    """The [low, high] range of each of a box's xmin, ymin, xmax and ymax (see _overshoot)."""
    return ((0, width), (0, height), (1, width), (1, height))


def _checked_box(
    xml_path: str, obj: ParsedObject, width: int, height: int, class_names, clip_overshoot: float
) -> tuple[tuple[float, float, float, float], bool]:
    """The object's pixel xyxy box, clipped to the image where it overshoots by at most
    ``clip_overshoot`` pixels, and whether it was clipped; raises BadDataError for a box
    farther out, swapped corners or an unknown class."""
    xmin, ymin, xmax, ymax = obj.box
    where = f"{xml_path}: object '{obj.name}' box (xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, "
    where += f"ymax={ymax:g})"
    if obj.name not in class_names:
        raise BadDataError(f"{xml_path}: unknown class '{obj.name}' (known: {list(class_names)})")
    if xmax < xmin or ymax < ymin:
        raise BadDataError(f"{where} has a max below its min: its corners are swapped")
    overshoot = _overshoot(obj, width, height)
    wholly = xmin > width or ymin > height or xmax < 1 or ymax < 1  # clipped, a sliver
    if overshoot > clip_overshoot or wholly:
        # A labelling tool's slip (a 0-based end, a drag past the edge), not a misplaced box:
        # clipping it is offered; a box far out is worth a look.
        slip = not wholly and overshoot <= max(_SLIP_PIXELS, _SLIP_FRACTION * max(width, height))
        raise BadDataError(
            f"{where} lies {'wholly ' * wholly}outside the {width}x{height} image by {overshoot:g} "
            f"pixel{'s' * (overshoot != 1)}: fix the box in the .xml file (xmin and ymin at least "
            f"0, xmax up to {width} and ymax up to {height}, at least 1: VOC's pixels count "
            "from 1)"
            + (
                ", or clip the boxes that overshoot this little with "
                f"--config.data.clip_box_overshoot={math.ceil(overshoot)}"
                if slip
                else ""
            )
        )
    clipped = tuple(
        min(max(value, low), high)
        for value, (low, high) in zip(obj.box, _box_ranges(width, height), strict=True)
    )
    return clipped, overshoot > 0


def _example(config: "VocFolderConfig", image_id: str, split: str) -> tuple[dict, int, int]:
    """Builds one TFDS example of ``split``, and gives its image's EXIF orientation (1:
    none) and how many of its boxes were clipped to the image; raises BadDataError for any
    problem with its files."""
    folder = config.folder
    xml_path = xml_path_of(folder, image_id)
    try:
        image_id.encode("utf-8")
    except UnicodeEncodeError:
        # TFDS stores names as UTF-8 text; !a (ascii) keeps the message printable.
        raise BadDataError(f"{xml_path!a}: file name is not valid UTF-8") from None
    if not os.path.isfile(xml_path):  # the ids of the other layouts are the XML files'
        raise BadDataError(
            f"{xml_path}: annotation file not found, for the id {image_id!r} that "
            f"{split_file(folder, split)} lists: add the file, or remove the id from the list"
        )
    annotation = parse_annotation(xml_path)
    image_path = find_image(folder, image_id, annotation)
    encoded, width, height, orientation = _read_image(image_path)
    if annotation.size is not None and annotation.size != (width, height):
        turned = orientation in _TURNED_A_QUARTER and annotation.size == (height, width)
        raise BadDataError(
            f"{xml_path}: <size> says {annotation.size[0]}x{annotation.size[1]} but "
            f"{image_path} is {width}x{height}"
            + (f" as stored ({_UPRIGHT_ADVICE})" if turned else "")
        )
    class_names = config.class_names
    checked = [
        _checked_box(xml_path, obj, width, height, class_names, config.clip_box_overshoot)
        for obj in annotation.objects
    ]
    # VOC (xmin, ymin, xmax, ymax) pixels -> normalized (ymin, xmin, ymax, xmax).
    pixels = np.array([box for box, _ in checked], np.float64).reshape(-1, 4)
    boxes = box_ops.pixel_xyxy_to_normalized_yxyx(pixels, height, width).astype(np.float32)
    example = {
        "image": encoded,
        "image/filename": os.path.basename(image_path),
        "objects": {
            "label": [class_names.index(obj.name) for obj in annotation.objects],
            "bbox": boxes,
            "is_difficult": np.array([obj.difficult for obj in annotation.objects], dtype=bool),
            "is_truncated": np.array([obj.truncated for obj in annotation.objects], dtype=bool),
        },
    }
    return example, orientation, sum(clipped for _, clipped in checked)


def _with_skip_hint(error: BadDataError) -> BadDataError:
    """``error`` with what to do about it when the file cannot be fixed."""
    return BadDataError(f"{error}\n(--config.data.on_bad_data=skip leaves such images out.)")


def scan_class_names(folder: str) -> tuple[str, ...]:
    """Sorted names of every object class in the folder's readable XML files.

    A file that cannot be read is passed over: the preparation that follows names it with
    every other bad file of its split (``on_bad_data='error'``), or leaves its image out
    (``'skip'``); raised here, it was the only one named, one fix a run.
    """
    counts, unreadable, files = collections.Counter(), [], collections.defaultdict(list)
    for image_id in annotation_ids(folder):
        xml_path = xml_path_of(folder, image_id)
        try:
            annotation = parse_annotation(xml_path)
        except BadDataError as error:
            unreadable.append(error)
            continue
        counts.update(obj.name for obj in annotation.objects)
        for name in {obj.name for obj in annotation.objects}:
            if len(files[name]) < 4:  # a rare class's warning names three, then '...'
                files[name].append(os.path.basename(xml_path))
    names = set(counts)
    if not names and unreadable:  # nothing to prepare, with either policy
        raise BadDataError(
            f"config.data.folder={folder!r}: no object found in the .xml files that can be "
            f"read, and {errors.count(len(unreadable), 'file')} cannot be (the first: "
            f"{unreadable[0]})"
        )
    if not names:
        raise ValueError(f"config.data.folder={folder!r}: no object found in its .xml files")
    spellings = {}
    for name in sorted(names):
        spellings.setdefault(name.casefold(), []).append(name)
    for same in spellings.values():
        if len(same) > 1:  # 'Dog' and 'dog' would be two classes, each with half the dogs
            raise ValueError(
                f"config.data.folder={folder!r}: the class names {same} differ only in case and "
                "would be separate classes; use one spelling in the .xml files"
            )
    _warn_of_misspelt_classes(
        folder,
        tuple(sorted(counts.items())),
        tuple(sorted((k, tuple(v)) for k, v in files.items())),
    )
    return tuple(sorted(names))


@functools.lru_cache(maxsize=16)
def _class_names_in(folder: str, state: str) -> tuple[str, ...]:
    """:func:`scan_class_names` once per folder ``state`` (:func:`folder_state`) and
    process: each split a run opens, and each of its evaluations, names the folder again,
    and parsing every .xml file anew took seconds for a VOC-sized folder."""
    del state  # the cache's key: the folder as it is now
    return scan_class_names(folder)


@functools.cache  # once per folder and process: a run reads its class names several times
def _warn_of_misspelt_classes(
    folder: str, counts: tuple[tuple[str, int], ...], files: tuple[tuple[str, tuple], ...]
) -> None:
    """Warns of a class of a few objects named almost as a class of many ('redbx' beside
    'redbox'): most likely a typo, which makes a class the model can hardly learn. The
    warning names the files that hold it (``files``: the first of each class's) and
    the flags that train without them."""
    objects, files_of = dict(counts), dict(files)
    typos = {}
    for name, count in counts:
        common = [other for other in objects if objects[other] >= max(5 * count, 5)]
        for like in difflib.get_close_matches(name, common, n=1, cutoff=0.8):
            if _likely_typo(name, like):
                typos[name] = like
    kept = tuple(name for name in objects if name not in typos)
    for name, like in typos.items():
        _logger.warning(
            "voc_folder: class %r of %s (%s, in %s) is named almost as %r (%d objects): a "
            "typo in the .xml files? Fix it there (the next run prepares the folder again), "
            "or leave out the images that hold it: %s --config.data.on_bad_data=skip.",
            name,
            folder,
            errors.count(objects[name], "object"),
            errors.first_few(files_of[name]),
            like,
            objects[like],
            errors.class_names_flag(kept),
        )


def _likely_typo(rare: str, common: str) -> bool:
    """At most two letters apart, and not only in digits: 'redbx' of 'redbox', not
    'without_mask' of 'with_mask', 'green_light' of 'red_light' or 'class_2' of 'class_1'."""
    if re.sub(r"[0-9]", "", rare) == re.sub(r"[0-9]", "", common):
        return False
    blocks = difflib.SequenceMatcher(None, rare, common).get_matching_blocks()
    return max(len(rare), len(common)) - sum(block.size for block in blocks) <= 2


@dataclasses.dataclass(eq=False)
class VocFolderConfig(tfds.core.BuilderConfig):
    """Which folder to read and how; build one with `voc_folder_config`."""

    folder: str = ""
    class_names: tuple[str, ...] = ()
    on_bad_data: str = "error"
    split_seed: int = 0
    clip_box_overshoot: float = 0.0


def voc_folder_config(
    folder: str,
    *,
    class_names: tuple[str, ...] | None = None,
    on_bad_data: str = "error",
    split_seed: int = 0,
    clip_box_overshoot: float = 0.0,
) -> VocFolderConfig:
    """Returns a config named after the folder and a fingerprint of its files and options."""
    if not folder or not os.path.isdir(folder):
        raise ValueError(
            f"config.data.folder must be an existing directory, got {folder!r} (from "
            f"{os.getcwd()}): pass the path of the folder of images with VOC XML files."
        )
    check_choice("config.data.on_bad_data", on_bad_data, BAD_DATA_POLICIES)
    check_number("config.data.clip_box_overshoot", clip_box_overshoot, at_least=0)
    folder = os.path.abspath(folder)
    state = folder_state(folder)
    given = class_names is not None
    if not given:
        class_names = _class_names_in(folder, state)
    if not all(isinstance(name, str) and name for name in class_names):
        raise ValueError(
            f"config.data.class_names={class_names!r} must be names (strings), or None to read "
            "them from the .xml files: leave the field unset for that."
        )
    # A list typed as "a,b" on the command line is one name; names read from the .xml files
    # may hold commas ("person, adult").
    if given and (isinstance(class_names, str) or any("," in name for name in class_names)):
        text = class_names if isinstance(class_names, str) else ",".join(class_names)
        meant = tuple(filter(None, (name.strip(" '\"[]()") for name in text.split(","))))
        raise ValueError(
            f"config.data.class_names={class_names!r} holds one name with commas: give a list of "
            f"names, on the command line {errors.class_names_flag(meant)}."
        )
    class_names = tuple(class_names)
    if len(set(class_names)) != len(class_names) or not class_names:
        raise ValueError(
            f"config.data.class_names must be distinct and non-empty, got {class_names}"
        )
    stem = re.sub(r"[^A-Za-z0-9_]", "_", os.path.basename(folder.rstrip(os.sep)))[:40]
    parts = (folder, class_names, on_bad_data, split_seed, state)
    if clip_box_overshoot:  # only then: folders prepared before the option keep their copy
        parts += (float(clip_box_overshoot),)
    fingerprint = hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
    return VocFolderConfig(
        name=f"{stem}_{fingerprint}",
        description=f"VOC-format folder {folder}",
        folder=folder,
        class_names=class_names,
        on_bad_data=on_bad_data,
        split_seed=split_seed,
        clip_box_overshoot=float(clip_box_overshoot),
    )


class VocFolder(tfds.core.GeneratorBasedBuilder):
    """TFDS builder reading a local folder of images with VOC XML files (module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}  # noqa: RUF012 (TFDS class attribute)

    # TFDS's own lines say "Downloading and preparing dataset Unknown size (download: ...)".
    def _log_download_bytes(self) -> None:
        print(
            f"Reading the VOC-format folder {self.builder_config.folder} into {self.data_dir}, "
            "once: later runs reuse it until a file in the folder changes."
        )

    def _log_download_done(self) -> None:
        pass  # the line above said it all

    def _info(self) -> tfds.core.DatasetInfo:
        return local_dataset_info(
            self.dataset_info_from_configs(
                features=detection_features(self.builder_config.class_names),
                # The images left out for bad data, and those whose boxes were clipped to
                # them (clip_box_overshoot), reloaded with the prepared dataset: a later
                # process says so.
                metadata=tfds.core.MetadataDict(skipped=[], clipped=[]),
            )
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Reads local files only.
        config = self.builder_config
        splits = folder_splits(config.folder, config.split_seed)
        # With on_bad_data='error', each split's bad files, named together once the last split
        # is read (TFDS reads them in turn): one fix for the folder, not one run a split.
        self._unusable, self._splits_left = [], set(splits)
        return {split: self._generate_examples(split, ids) for split, ids in splits.items()}

    def _generate_examples(self, split: str, image_ids: list[str]):
        config = self.builder_config
        problems, labels_seen, oriented, clipped = [], set(), [], collections.Counter()
        for image_id in image_ids:
            try:
                example, orientation, clipped_boxes = _example(config, image_id, split)
            except BadDataError as error:  # with on_bad_data='error' too: all named at once
                problems.append(str(error))
                continue
            labels_seen.update(example["objects"]["label"])
            if clipped_boxes:
                clipped[example["image/filename"]] = clipped_boxes
            if orientation != 1:
                oriented.append(example["image/filename"])
            yield image_id, example
        if oriented:
            # Silent otherwise: boxes drawn on the upright photo fit the stored pixels only
            # where the orientation is 1, and yolojax.predict reads photos upright.
            _logger.warning(
                "voc_folder: an EXIF orientation turns %s of split '%s' in %s (%s): "
                "training and evaluation use their pixels as stored, with the .xml boxes in "
                "that frame, while photo viewers, most labelling tools and yolojax.predict "
                "turn them upright. If their boxes were drawn upright, save the images "
                "upright (PIL.ImageOps.exif_transpose(image).save(path)): the next run "
                "prepares the folder again.",
                errors.count(len(oriented), "image"),
                split,
                config.folder,
                errors.first_few(oriented),
            )
        if clipped:  # the boxes trained on are not the files' own: said, as any change is
            self.info.metadata["clipped"].extend(
                f"{split}: {name} ({errors.count(count, 'box', 'boxes')})"
                for name, count in clipped.items()
            )
            _logger.warning(
                "voc_folder: clipped %s of %s in split '%s' of %s to their image "
                "(config.data.clip_box_overshoot=%g): %s",
                errors.count(clipped.total(), "box", "boxes"),
                errors.count(len(clipped), "image"),
                split,
                config.folder,
                config.clip_box_overshoot,
                errors.first_few(list(clipped)),
            )
        first_problems = "\n  ".join(problems[:_MAX_REPORTED_PROBLEMS])
        self._splits_left.discard(split)
        if problems and config.on_bad_data == "error":
            # Every bad file of the split, not the first alone: one fix, not one run a file.
            more = len(problems) - _MAX_REPORTED_PROBLEMS
            self._unusable.append(
                f"{problems[0]} (split '{split}')"
                if len(problems) == 1
                else f"{len(problems)} of the {len(image_ids)} images of split '{split}' in "
                f"{config.folder} are unusable:\n  {first_problems}"
                + (f"\n  ... and {more} more" if more > 0 else "")
            )
        # Now, too, for a split left empty: TFDS would refuse it before the next is read.
        if self._unusable and (not self._splits_left or len(problems) == len(image_ids)):
            raise _with_skip_hint(BadDataError("\n".join(self._unusable)))
        if problems and config.on_bad_data == "error":
            return  # its bad files are named after the other splits are read
        if problems and len(problems) == len(image_ids):
            # TFDS would refuse the empty split with an AssertionError's traceback.
            raise BadDataError(
                f"Every image of split '{split}' in {config.folder} has bad data: skipping "
                f"them would leave the split empty. Fix them (the first problems):\n  "
                f"{first_problems}"
            )
        unseen = [name for i, name in enumerate(config.class_names) if i not in labels_seen]
        if split == "train" and unseen:
            # A class named only in the evaluation split's files (a typo, most often): it
            # is never learned, and its AP of 0 lowers the mAP by a class's share.
            _logger.warning(
                "voc_folder: the train split of %s has no object of class %s: the model "
                "cannot learn it, and where the evaluation split has it, its AP of 0 counts in "
                "the mAP. A misspelt name in the "
                ".xml files? Classes: %s.",
                config.folder,
                ", ".join(repr(name) for name in unseen),
                ", ".join(config.class_names),
            )
        if problems:
            self.info.metadata["skipped"].extend(problems)
            _logger.warning(
                "voc_folder: skipped %d of %d images of split '%s' in %s for bad data; "
                "first problems:\n  %s",
                len(problems),
                len(image_ids),
                split,
                config.folder,
                first_problems,
            )
