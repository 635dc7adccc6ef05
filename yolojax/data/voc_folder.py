"""`voc_folder`: a TFDS builder for any local folder of images with PASCAL VOC XML files.

Two layouts. PASCAL VOC's own:

    folder/Annotations/<id>.xml          one VOC XML per image
    folder/JPEGImages/<id>.jpg|.jpeg|.png
    folder/ImageSets/Main/<split>.txt    optional: one id per line ('val.txt' -> 'validation')

or each XML beside its image (Roboflow's "Pascal VOC" export, LabelImg's default), in the
folder itself or in split folders:

    folder/[train|valid|validation|val|test/]<name>.xml and <name>.jpg|.jpeg|.png

Without split files or folders, the ids are split 90:10 into 'train' and 'validation' with a
seeded random permutation (as the report did for its own datasets). Class names come from the XML
files (all names found, sorted) or from a given list. Boxes are stored normalized yxyx, VOC
pixel coordinates divided by the image size, as TFDS `voc` does.

Bad data (a missing or corrupt image, malformed XML, an unknown class, a box outside the image
or of zero area, an XML size that disagrees with the image) raises `BadDataError` naming the
file and the problem, or with `on_bad_data='skip'` leaves the image out and warns with the
count. A skipped image is never kept with some of its boxes dropped.

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
import xml.etree.ElementTree as ElementTree
from typing import NamedTuple

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image, UnidentifiedImageError

from yolojax import boxes as box_ops
from yolojax.data.config import BAD_DATA_POLICIES
from yolojax.validation import check_choice

# The extensions of _DECODABLE_FORMATS' files, looked for in lower, upper and title case
# (a.jpg, a.JPG, a.Jpg) where an XML's image is found by its stem.
_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "gif", "webp")
_SPLIT_FILE_NAMES = {"train": "train", "val": "validation", "trainval": "trainval", "test": "test"}
# Split folders of the XML-beside-image layout (Roboflow names its validation split 'valid').
_SPLIT_FOLDER_NAMES = {
    "train": "train",
    "valid": "validation",
    "validation": "validation",
    "val": "validation",
    "test": "test",
}
_VALIDATION_FRACTION = 0.1
# Pillow's names for the formats tf.io.decode_image reads (MPO: multi-picture camera JPEGs).
_DECODABLE_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP")
_MAX_REPORTED_PROBLEMS = 5

_logger = logging.getLogger(__name__)


class BadDataError(ValueError):
    """A file of a VOC-format folder is unusable; the message names the file and the problem."""


class _Object(NamedTuple):
    name: str
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in pixels
    difficult: bool
    truncated: bool


class _Annotation(NamedTuple):
    filename: str | None  # the <filename> element, if any
    size: tuple[int, int] | None  # (width, height) from <size>, if any
    objects: list[_Object]


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


def _flag(xml_path: str, element: ElementTree.Element, tag: str) -> bool:
    """``<difficult>`` or ``<truncated>``: 1/true/yes or 0/false/no (any case), else bad data."""
    text = (element.findtext(tag) or "").strip().lower()
    if text not in _TRUE + _FALSE:
        raise BadDataError(f"{xml_path}: malformed XML (<{tag}> is {text!r}, not 0 or 1)")
    return text in _TRUE


def parse_annotation(xml_path: str) -> _Annotation:
    """Reads one VOC XML file; raises BadDataError for anything unparseable."""
    try:
        root = ElementTree.parse(xml_path).getroot()
    except (ElementTree.ParseError, OSError) as error:
        raise BadDataError(f"{xml_path}: malformed XML ({error})") from error
    size = None
    if root.find("size") is not None:
        try:
            size = (int(root.findtext("size/width")), int(root.findtext("size/height")))
        except (TypeError, ValueError) as error:
            raise BadDataError(f"{xml_path}: malformed XML (<size> is not two integers)") from error
    objects = []
    for index, element in enumerate(root.findall("object")):
        name = (element.findtext("name") or "").strip()
        if not name:
            raise BadDataError(f"{xml_path}: malformed XML (object {index} has no <name>)")
        try:
            box = tuple(
                float(element.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax")
            )
            if not all(map(math.isfinite, box)):  # 'nan' and 'inf' parse as floats
                raise ValueError(box)
        except (TypeError, ValueError) as error:
            raise BadDataError(
                f"{xml_path}: malformed XML (object {index} '{name}' lacks a finite numeric "
                "<bndbox> xmin/ymin/xmax/ymax)"
            ) from error
        flags = (_flag(xml_path, element, tag) for tag in ("difficult", "truncated"))
        objects.append(_Object(name, box, *flags))
    filename = root.findtext("filename")
    return _Annotation(filename.strip() if filename else None, size, objects)


def _is_voc_layout(folder: str) -> bool:
    return os.path.isdir(os.path.join(folder, "Annotations"))


def _xml_path(folder: str, image_id: str) -> str:
    """The XML file of ``image_id``: ``Annotations/<id>.xml``, or ``<id>.xml`` where the XML
    lies beside its image (the id then includes a split folder: ``train/a``)."""
    annotations = os.path.join(folder, "Annotations") if _is_voc_layout(folder) else folder
    return os.path.join(annotations, image_id + ".xml")


def _find_image(folder: str, image_id: str, annotation: _Annotation) -> str:
    if _is_voc_layout(folder):
        images, stem = os.path.join(folder, "JPEGImages"), image_id
    else:  # beside its XML
        images, stem = os.path.split(os.path.join(folder, image_id))
    candidates = [
        os.path.join(images, f"{stem}.{spelling}")
        for ext in _IMAGE_EXTENSIONS
        for spelling in (ext, ext.upper(), ext.title())
    ]
    if annotation.filename:
        candidates.append(os.path.join(images, annotation.filename))
    for path in candidates:
        if os.path.isfile(path):
            return path
    where = os.path.relpath(images, folder)
    first, *others, last = (f".{ext}" for ext in _IMAGE_EXTENSIONS)
    named = f", and its <filename> {annotation.filename}" if annotation.filename else ""
    raise BadDataError(
        f"{_xml_path(folder, image_id)}: image not found (looked for "
        f"{os.path.join(where, stem) if where != '.' else stem}{first}, {', '.join(others)} "
        f"or {last}, in lower, upper or title case{named})"
    )


def _read_image(path: str) -> tuple[bytes, int, int]:
    """Returns the file's bytes and its (width, height), decoding it fully to catch corruption."""
    with open(path, "rb") as file:
        encoded = file.read()
    try:
        with Image.open(io.BytesIO(encoded)) as image:
            image.load()
            image_format, mode = image.format, image.mode
            width, height = image.width, image.height
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
    return encoded, width, height


def _check_object(xml_path: str, obj: _Object, width: int, height: int, class_names) -> None:
    xmin, ymin, xmax, ymax = obj.box
    where = f"{xml_path}: object '{obj.name}' box (xmin={xmin:g}, ymin={ymin:g}, xmax={xmax:g}, "
    where += f"ymax={ymax:g})"
    if obj.name not in class_names:
        raise BadDataError(f"{xml_path}: unknown class '{obj.name}' (known: {list(class_names)})")
    if xmax <= xmin or ymax <= ymin:
        raise BadDataError(f"{where} has zero area")
    if xmin < 0 or ymin < 0 or xmax > width or ymax > height:
        raise BadDataError(f"{where} lies outside the {width}x{height} image")


def _example(folder: str, image_id: str, class_names: tuple[str, ...]) -> dict:
    """Builds one TFDS example; raises BadDataError for any problem with its files."""
    xml_path = _xml_path(folder, image_id)
    try:
        image_id.encode("utf-8")
    except UnicodeEncodeError:
        # TFDS stores names as UTF-8 text; !a (ascii) keeps the message printable.
        raise BadDataError(f"{xml_path!a}: file name is not valid UTF-8") from None
    if not os.path.isfile(xml_path):
        raise BadDataError(f"{xml_path}: annotation file not found")
    annotation = parse_annotation(xml_path)
    image_path = _find_image(folder, image_id, annotation)
    encoded, width, height = _read_image(image_path)
    if annotation.size is not None and annotation.size != (width, height):
        raise BadDataError(
            f"{xml_path}: <size> says {annotation.size[0]}x{annotation.size[1]} but "
            f"{image_path} is {width}x{height}"
        )
    for obj in annotation.objects:
        _check_object(xml_path, obj, width, height, class_names)
    # VOC (xmin, ymin, xmax, ymax) pixels -> normalized (ymin, xmin, ymax, xmax).
    pixels = np.array([obj.box for obj in annotation.objects], np.float64).reshape(-1, 4)
    boxes = box_ops.pixel_xyxy_to_normalized_yxyx(pixels, height, width).astype(np.float32)
    return {
        "image": encoded,
        "image/filename": os.path.basename(image_path),
        "objects": {
            "label": [class_names.index(obj.name) for obj in annotation.objects],
            "bbox": boxes,
            "is_difficult": np.array([obj.difficult for obj in annotation.objects], dtype=bool),
            "is_truncated": np.array([obj.truncated for obj in annotation.objects], dtype=bool),
        },
    }


def _xml_stems(directory: str) -> list[str]:
    return sorted(name[: -len(".xml")] for name in os.listdir(directory) if name.endswith(".xml"))


def _split_folders(folder: str) -> dict[str, str]:
    """Split folder name → split, for the XML-beside-image layout's split folders present."""
    return {
        name: split
        for name, split in _SPLIT_FOLDER_NAMES.items()
        if os.path.isdir(os.path.join(folder, name))
    }


def _split_folder_ids(folder: str) -> dict[str, list[str]]:
    """Split → ids (``<split folder>/<stem>``) of the split folders' XML files."""
    splits = {}
    for name, split in _split_folders(folder).items():
        splits.setdefault(split, []).extend(
            f"{name}/{stem}" for stem in _xml_stems(os.path.join(folder, name))
        )
    return {split: ids for split, ids in splits.items() if ids}


def _annotation_ids(folder: str) -> list[str]:
    if _is_voc_layout(folder):
        return _xml_stems(os.path.join(folder, "Annotations"))
    ids = _xml_stems(folder) + sorted(
        id_ for ids in _split_folder_ids(folder).values() for id_ in ids
    )
    if not ids:
        raise ValueError(
            f"config.data.folder={folder!r} has neither an Annotations/ directory (PASCAL VOC "
            "layout) nor .xml files beside its images, in it or in train/, valid/ and test/ "
            "folders (Roboflow's Pascal VOC export)"
        )
    return ids


def _random_split(folder: str, ids: list[str], split_seed: int) -> dict[str, list[str]]:
    """'train' and 'validation' ids, 90:10 by a seeded random permutation of ``ids``."""
    if len(ids) < 2:
        raise ValueError(
            f"config.data.folder={folder!r}: need at least 2 annotated images, got {len(ids)}"
        )
    order = np.random.default_rng(split_seed).permutation(len(ids))
    num_validation = max(1, round(_VALIDATION_FRACTION * len(ids)))
    return {
        "train": sorted(ids[i] for i in order[num_validation:]),
        "validation": sorted(ids[i] for i in order[:num_validation]),
    }


def _split_folder_splits(folder: str, split_seed: int) -> dict[str, list[str]] | None:
    """The split folders' splits (None without any); a train/ alone is split 90:10, so that
    there is something to evaluate on."""
    splits = _split_folder_ids(folder)
    if not splits:
        return None
    stray = _xml_stems(folder)
    if stray:  # they would be in no split
        raise ValueError(
            f"config.data.folder={folder!r} has .xml files both in split folders and beside them "
            f"({', '.join(stray[:3])}{', ...' if len(stray) > 3 else ''}.xml): move those into "
            "train/, valid/ or test/"
        )
    if set(splits) == {"train"}:
        empty = [name for name in _split_folders(folder) if name != "train"]
        if empty:  # an export's valid/ or test/ that lost its files, say
            _logger.warning(
                "%s: %s hold%s no .xml files: %.0f%% of train/ is held out for validation instead.",
                folder,
                " and ".join(f"{name}/" for name in empty),
                "s" * (len(empty) == 1),
                100 * _VALIDATION_FRACTION,
            )
        return _random_split(folder, splits["train"], split_seed)
    return splits


def folder_splits(folder: str, split_seed: int = 0) -> dict[str, list[str]]:
    """Split name -> image ids: from ImageSets/Main/*.txt, else from split folders (train/,
    valid/, test/), else a seeded 90:10 random split."""
    main = os.path.join(folder, "ImageSets", "Main")
    splits = {}
    for file_name, split in _SPLIT_FILE_NAMES.items():
        path = os.path.join(main, file_name + ".txt")
        if os.path.isfile(path):
            # surrogateescape: ids that are not UTF-8 stay equal to os.listdir's names.
            with open(path, encoding="utf-8", errors="surrogateescape") as file:
                splits[split] = [line.split()[0] for line in file if line.strip()]
    if splits:
        _check_split_files(main, splits)
        _warn_of_unlisted_images(folder, splits)
        return splits
    if not _is_voc_layout(folder):
        from_folders = _split_folder_splits(folder, split_seed)
        if from_folders is not None:
            return from_folders
    return _random_split(folder, _annotation_ids(folder), split_seed)


def _check_split_files(main: str, splits: dict[str, list[str]]) -> None:
    """Refuses an empty split file (TFDS failed on one with a traceback); warns of images
    both trained on and evaluated on."""
    files = {split: f"{file_name}.txt" for file_name, split in _SPLIT_FILE_NAMES.items()}
    for split, ids in splits.items():
        if not ids:
            raise ValueError(
                f"{os.path.join(main, files[split])} lists no image: list the split's image "
                "ids in it, one a line, or delete it."
            )
    # (VOC's trainval.txt is train.txt and val.txt together: that pair is meant to overlap.)
    for trained, evaluated in (("train", "validation"), ("train", "test"), ("trainval", "test")):
        both = sorted(set(splits.get(trained, ())) & set(splits.get(evaluated, ())))
        if both:
            _logger.warning(
                "%s: %d image%s in both %s and %s (%s%s): evaluated on %s after training "
                "on %s, the mAP measures images the model was trained on.",
                main,
                len(both),
                " is" if len(both) == 1 else "s are",
                files[trained],
                files[evaluated],
                ", ".join(both[:3]),
                ", ..." if len(both) > 3 else "",
                evaluated,
                trained,
            )


def _warn_of_unlisted_images(folder: str, splits: dict[str, list[str]]) -> None:
    """Warns of annotated images that no split file lists: images added to Annotations/ and
    JPEGImages/ but not to train.txt were left out without a word. (VOC2012's Annotations/
    also holds its other tasks' images, which Main/'s files rightly leave out.)"""
    if not _is_voc_layout(folder):
        return
    listed = set().union(*splits.values())
    annotated = _xml_stems(os.path.join(folder, "Annotations"))
    unlisted = [image_id for image_id in annotated if image_id not in listed]
    if unlisted:
        _logger.warning(
            "%s: %d of the %d images in Annotations/ are in no split file of ImageSets/Main "
            "(%s%s): they are not used. To train or evaluate on them, add their ids to "
            "train.txt or another split's file.",
            folder,
            len(unlisted),
            len(annotated),
            ", ".join(unlisted[:3]),
            ", ..." if len(unlisted) > 3 else "",
        )


def _folder_state(folder: str) -> str:
    """Hash of the folder's file names, sizes and times: another on any change."""
    digest = hashlib.sha256()
    subs = ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main"))
    if not _is_voc_layout(folder):  # split files apply to this layout too
        subs = (".", *_split_folders(folder), os.path.join("ImageSets", "Main"))
    for sub in subs:
        directory = os.path.join(folder, sub)
        if os.path.isdir(directory):
            for entry in sorted(os.scandir(directory), key=lambda entry: entry.name):
                stat = entry.stat()
                # fsencode: a name that is not UTF-8 still hashes (it is bad data later).
                digest.update(os.fsencode(f"{sub}/{entry.name}:{stat.st_size}:{stat.st_mtime_ns};"))
    return digest.hexdigest()[:16]


def _with_skip_hint(error: BadDataError) -> BadDataError:
    """``error`` with what to do about it when the file cannot be fixed."""
    return BadDataError(f"{error}\n(--config.data.on_bad_data=skip leaves such images out.)")


def scan_class_names(folder: str, on_bad_data: str = "error") -> tuple[str, ...]:
    """Sorted names of every object class in the folder's XML files."""
    counts = collections.Counter()
    for image_id in _annotation_ids(folder):
        try:
            annotation = parse_annotation(_xml_path(folder, image_id))
        except BadDataError as error:
            if on_bad_data == "error":
                raise _with_skip_hint(error) from None
            continue  # Counted and reported when the examples are generated.
        counts.update(obj.name for obj in annotation.objects)
    names = set(counts)
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
    _warn_of_misspelt_classes(folder, tuple(sorted(counts.items())))
    return tuple(sorted(names))


@functools.lru_cache(maxsize=16)
def _class_names_in(folder: str, on_bad_data: str, state: str) -> tuple[str, ...]:
    """:func:`scan_class_names` once per folder ``state`` (:func:`_folder_state`) and
    process: each split a run opens, and each of its evaluations, names the folder again,
    and parsing every .xml file anew took seconds for a VOC-sized folder."""
    del state  # the cache's key: the folder as it is now
    return scan_class_names(folder, on_bad_data)


@functools.cache  # once per folder and process: a run reads its class names several times
def _warn_of_misspelt_classes(folder: str, counts: tuple[tuple[str, int], ...]) -> None:
    """Warns of a class of a few objects named almost as a class of many ('redbx' beside
    'redbox'): most likely a typo, which makes a class the model can hardly learn."""
    objects = dict(counts)
    for name, count in counts:
        common = [other for other in objects if objects[other] >= max(5 * count, 5)]
        for like in difflib.get_close_matches(name, common, n=1, cutoff=0.8):
            if not _likely_typo(name, like):
                continue
            _logger.warning(
                "voc_folder: class %r of %s (%d object%s) is named almost as %r (%d objects): "
                "a typo in the .xml files? Fix it there, or give config.data.class_names, "
                "which refuses other names.",
                name,
                folder,
                count,
                "s" * (count != 1),
                like,
                objects[like],
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


def voc_folder_config(
    folder: str,
    *,
    class_names: tuple[str, ...] | None = None,
    on_bad_data: str = "error",
    split_seed: int = 0,
) -> VocFolderConfig:
    """Returns a config named after the folder and a fingerprint of its files and options."""
    if not folder or not os.path.isdir(folder):
        raise ValueError(f"config.data.folder must be an existing directory, got {folder!r}")
    check_choice("config.data.on_bad_data", on_bad_data, BAD_DATA_POLICIES)
    folder = os.path.abspath(folder)
    state = _folder_state(folder)
    if class_names is None:
        class_names = _class_names_in(folder, on_bad_data, state)
    if isinstance(class_names, str) or any("," in name for name in class_names):
        raise ValueError(
            f"config.data.class_names={class_names!r} holds one name with commas: give a list of "
            """names, on the command line --config.data.class_names="('mask','no-mask')"."""
        )
    class_names = tuple(class_names)
    if len(set(class_names)) != len(class_names) or not class_names:
        raise ValueError(
            f"config.data.class_names must be distinct and non-empty, got {class_names}"
        )
    stem = re.sub(r"[^A-Za-z0-9_]", "_", os.path.basename(folder.rstrip(os.sep)))[:40]
    parts = (folder, class_names, on_bad_data, split_seed, state)
    fingerprint = hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
    return VocFolderConfig(
        name=f"{stem}_{fingerprint}",
        description=f"VOC-format folder {folder}",
        folder=folder,
        class_names=class_names,
        on_bad_data=on_bad_data,
        split_seed=split_seed,
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
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(),
                    "image/filename": tfds.features.Text(),
                    "objects": tfds.features.Sequence(
                        {
                            "label": tfds.features.ClassLabel(
                                names=self.builder_config.class_names
                            ),
                            "bbox": tfds.features.BBoxFeature(),
                            "is_difficult": np.bool_,
                            "is_truncated": np.bool_,
                        }
                    ),
                }
            ),
            # Lists the images left out for bad data, reloaded with the prepared dataset.
            metadata=tfds.core.MetadataDict(skipped=[]),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Reads local files only.
        config = self.builder_config
        return {
            split: self._generate_examples(split, ids)
            for split, ids in folder_splits(config.folder, config.split_seed).items()
        }

    def _generate_examples(self, split: str, image_ids: list[str]):
        config = self.builder_config
        problems, labels_seen = [], set()
        for image_id in image_ids:
            try:
                example = _example(config.folder, image_id, config.class_names)
            except BadDataError as error:
                if config.on_bad_data == "error":
                    raise _with_skip_hint(error) from None
                problems.append(str(error))
                continue
            labels_seen.update(example["objects"]["label"])
            yield image_id, example
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
                "\n  ".join(problems[:_MAX_REPORTED_PROBLEMS]),
            )
