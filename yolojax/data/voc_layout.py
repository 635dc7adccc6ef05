"""Where a VOC-format folder's files lie, and which images make up each split.

The layouts (docs/data.md): PASCAL VOC's own (Annotations/, JPEGImages/, ImageSets/Main/),
or each XML beside its image, in the folder itself or in split folders (train/, valid/,
test/). Splits come from ImageSets/Main/*.txt, else from the split folders, else from a
seeded split of the annotated images, about 90:10, that keeps each image's split when
images are added.
"""

import collections
import contextlib
import hashlib
import logging
import os

from yolojax import errors
from yolojax.data.voc_xml import BadDataError, ParsedAnnotation, parse_annotation
from yolojax.images import IMAGE_EXTENSIONS

# The extensions an XML's image is looked for with by its stem, in lower, upper and title
# case (a.jpg, a.JPG, a.Jpg): the formats voc_folder reads (its _DECODABLE_FORMATS; .jfif is
# a JPEG), and TIFF, found to be named as a file to convert rather than as one not found.
_IMAGE_EXTENSIONS = tuple(extension.lstrip(".") for extension in IMAGE_EXTENSIONS)
# An annotation's file name ends so (a.xml, a.XML: one of the spellings cameras and Windows
# tools write).
_XML_SPELLINGS = (".xml", ".XML", ".Xml")
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

_logger = logging.getLogger(__name__)


def _is_voc_layout(folder: str) -> bool:
    return os.path.isdir(os.path.join(folder, "Annotations"))


def xml_path_of(folder: str, image_id: str) -> str:
    """The XML file of ``image_id``: ``Annotations/<id>.xml``, or ``<id>.xml`` where the XML
    lies beside its image (the id then includes a split folder: ``train/a``); ``.XML`` where
    only that file is there."""
    annotations = os.path.join(folder, "Annotations") if _is_voc_layout(folder) else folder
    return _xml_file(annotations, image_id)


def _xml_file(directory: str, stem: str) -> str:
    """``directory/<stem>.xml`` in the spelling that is there (``.xml`` if none is)."""
    base = os.path.join(directory, stem)
    for suffix in _XML_SPELLINGS:
        if os.path.isfile(base + suffix):
            return base + suffix
    return base + ".xml"  # for the message that it is missing


def find_image(folder: str, image_id: str, annotation: ParsedAnnotation) -> str:
    """The path of ``image_id``'s image: its stem with any image extension, in any case, or
    the XML's ``<filename>``; raises BadDataError naming what was looked for."""
    if _is_voc_layout(folder):
        images, stem = os.path.join(folder, "JPEGImages"), image_id
        if not os.path.isdir(images):  # one error, not "image not found" for each image
            raise ValueError(_without_jpeg_images(folder))
    else:  # beside its XML
        images, stem = os.path.split(os.path.join(folder, image_id))
    candidates = [
        os.path.join(images, f"{stem}.{spelling}")
        for ext in _IMAGE_EXTENSIONS
        for spelling in (ext, ext.upper(), ext.title())
    ]
    named_file = os.path.join(images, annotation.filename) if annotation.filename else ""
    if named_file:
        candidates.append(named_file)
    for path in candidates:
        if os.path.isfile(path):
            # samefile: on a case-blind file system a.JPG is the <filename> a.jpg.
            if named_file and os.path.isfile(named_file) and not os.path.samefile(path, named_file):
                # Both there: the stem's is taken (VOC's rule), but the boxes may be the other's.
                _logger.warning(
                    "%s: its <filename> %s is another image than %s, which is used: if the "
                    "boxes were drawn on %s, rename the files.",
                    xml_path_of(folder, image_id),
                    annotation.filename,
                    os.path.basename(path),
                    annotation.filename,
                )
            return path
    where = os.path.relpath(images, folder)
    first, *others, last = (f".{ext}" for ext in _IMAGE_EXTENSIONS)
    named = f", and its <filename> {annotation.filename}" if annotation.filename else ""
    raise BadDataError(
        f"{xml_path_of(folder, image_id)}: image not found (looked for "
        f"{os.path.join(where, stem) if where != '.' else stem}{first}, {', '.join(others)} "
        f"or {last}, in lower, upper or title case{named})"
    )


def _is_image_name(name: str) -> bool:
    return name.rpartition(".")[2].lower() in _IMAGE_EXTENSIONS


def _is_annotation_name(name: str) -> bool:
    return name.endswith(_XML_SPELLINGS) and not name.startswith(".")


def _visible_files(directory: str) -> list[str]:
    """The names in ``directory`` but hidden ones: macOS's ``._a.xml`` beside ``a.xml`` (the
    AppleDouble file a copy to another file system, or a zip, makes) is no annotation."""
    return [name for name in os.listdir(directory) if not name.startswith(".")]


def _subfolders(folder: str) -> list[str]:
    """The names of the folders in ``folder``, sorted, but hidden ones."""
    return sorted(
        name for name in _visible_files(folder) if os.path.isdir(os.path.join(folder, name))
    )


def _image_folders(folder: str) -> list[str]:
    """The folders in ``folder`` that hold image files."""
    return [
        name
        for name in _subfolders(folder)
        if any(_is_image_name(file) for file in _visible_files(os.path.join(folder, name)))
    ]


def _without_jpeg_images(folder: str) -> str:
    """What to do about a folder of Annotations/ without JPEGImages/ (Label Studio's export
    names it images/)."""
    found = [name for name in _image_folders(folder) if name != "Annotations"]
    where = f"; its images are in {found[0]}/? Rename that JPEGImages/" if len(found) == 1 else ""
    return (
        f"config.data.folder={folder!r} has Annotations/ but no JPEGImages/, where PASCAL VOC's "
        f"layout keeps the images{where} (docs/data.md, 'A VOC-format folder')."
    )


def _layout_hint(folder: str) -> str:
    """For a folder in no layout read: the likely mistake (a VOCdevkit's parent, an
    annotations/ folder spelt otherwise), or ''."""
    names = _subfolders(folder)
    years = [name for name in names if _is_voc_layout(os.path.join(folder, name))]
    if years:
        return f" It holds {', '.join(f'{name}/' for name in years)}: pass that folder."
    spelt = [name for name in names if name.lower() == "annotations"]
    if spelt:
        return f" Its {spelt[0]}/ is read only as Annotations/ (with the images in JPEGImages/)."
    return ""


def _xml_stems(directory: str) -> list[str]:
    return sorted(
        name[: -len(".xml")] for name in os.listdir(directory) if _is_annotation_name(name)
    )


def _split_folders(folder: str) -> dict[str, str]:
    """Split folder name → split, for the XML-beside-image layout's split folders present."""
    return {
        name: split
        for name, split in _SPLIT_FOLDER_NAMES.items()
        if os.path.isdir(os.path.join(folder, name))
    }


def _beside_image_places(folder: str) -> list[str]:
    """The folders the XML-beside-image layout reads: ``folder`` and its split folders."""
    return [folder, *(os.path.join(folder, name) for name in _split_folders(folder))]


def _split_folder_ids(folder: str) -> dict[str, list[str]]:
    """Split → ids (``<split folder>/<stem>``) of the split folders' XML files."""
    splits = {}
    for name, split in _split_folders(folder).items():
        splits.setdefault(split, []).extend(
            f"{name}/{stem}" for stem in _xml_stems(os.path.join(folder, name))
        )
    return {split: ids for split, ids in splits.items() if ids}


def annotation_ids(folder: str) -> list[str]:
    if _is_voc_layout(folder):
        return _xml_stems(os.path.join(folder, "Annotations"))
    ids = _xml_stems(folder) + sorted(
        id_ for ids in _split_folder_ids(folder).values() for id_ in ids
    )
    if not ids:
        raise ValueError(
            f"config.data.folder={folder!r} has neither an Annotations/ directory (PASCAL VOC "
            "layout) nor .xml files beside its images, in it or in train/, valid/ and test/ "
            "folders (Roboflow's Pascal VOC export): pass the folder that holds them, or "
            "arrange the files in one of these layouts (docs/data.md, 'A VOC-format folder')."
            + _layout_hint(folder)
        )
    return ids


def _random_split(folder: str, ids: list[str], split_seed: int) -> dict[str, list[str]]:
    """'train' and 'validation' ids, about 90:10: an id is for validation if a hash of
    ``(split_seed, id)`` falls in the first tenth of its range, so each image keeps its
    split when others are added or removed (but for a few ids where none or all do: then
    the one whose hash is least is held out, which more ids may change). A permutation of
    the ids reshuffled them all: a folder grown by 2% put two-thirds of its new validation
    images among those a run had trained on, and that run's evaluation counted them."""
    if len(ids) < 2:
        raise ValueError(
            f"config.data.folder={folder!r}: need at least 2 annotated images, got {len(ids)}"
        )

    def draw(image_id: str) -> float:  # uniform in [0, 1), fixed by the seed and the id
        # surrogateescape: an id that is no UTF-8 (a Latin-1 file name) is hashed as its bytes.
        digest = hashlib.sha256(f"{split_seed}:{image_id}".encode("utf-8", "surrogateescape"))
        digest = digest.digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    draws = {image_id: draw(image_id) for image_id in ids}
    validation = {image_id for image_id in ids if draws[image_id] < _VALIDATION_FRACTION}
    if len(validation) in (0, len(ids)):  # something to evaluate on, and to train on
        validation = {min(ids, key=draws.get)}
    return {
        "train": sorted(set(ids) - validation),
        "validation": sorted(validation),
    }


def _split_folder_splits(folder: str, split_seed: int) -> dict[str, list[str]] | None:
    """The split folders' splits (None without any); a train/ alone is split about 90:10, so
    that there is something to evaluate on."""
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
                "%s: %s hold%s no .xml files: about %.0f%% of train/ is held out for "
                "validation instead.",
                folder,
                " and ".join(f"{name}/" for name in empty),
                "s" * (len(empty) == 1),
                100 * _VALIDATION_FRACTION,
            )
        return _random_split(folder, splits["train"], split_seed)
    return splits


def folder_splits(folder: str, split_seed: int = 0) -> dict[str, list[str]]:
    """Split name -> image ids: from ImageSets/Main/*.txt, else from split folders (train/,
    valid/, test/), else a seeded split, about 90:10 (:func:`_random_split`)."""
    main = os.path.join(folder, "ImageSets", "Main")
    splits = {}
    for file_name, split in _SPLIT_FILE_NAMES.items():
        path = os.path.join(main, file_name + ".txt")
        if os.path.isfile(path):
            # surrogateescape: ids that are not UTF-8 stay equal to os.listdir's names. A
            # line is one id, whole: "IMG 0001" (a photo's name with a space) was "IMG".
            with open(path, encoding="utf-8", errors="surrogateescape") as file:
                splits[split] = _listed_once(path, [line.strip() for line in file if line.strip()])
    if splits:
        _check_split_files(main, splits)
        _warn_of_unlisted_images(folder, splits)
        return splits
    _warn_of_unannotated_images(folder)
    if not _is_voc_layout(folder):
        _warn_of_nested_annotations(folder)
        from_folders = _split_folder_splits(folder, split_seed)
        if from_folders is not None:
            return from_folders
    return _random_split(folder, annotation_ids(folder), split_seed)


def _listed_once(path: str, ids: list[str]) -> list[str]:
    """``ids``, a split file's, each once, in order; warns of those listed more than once
    (TFDS stopped on them with a page of its own log and a traceback)."""
    unique = list(dict.fromkeys(ids))
    if len(unique) < len(ids):
        repeated = [image_id for image_id, count in collections.Counter(ids).items() if count > 1]
        _logger.warning(
            "%s lists %d id%s more than once (%s): each is taken once.",
            path,
            len(repeated),
            "s" * (len(repeated) != 1),
            errors.first_few(repeated),
        )
    return unique


def _warn_of_nested_annotations(folder: str) -> None:
    """Warns of .xml files in folders below the ones the XML-beside-image layout reads (the
    folder itself and its split folders): such images were left out without a word."""
    places = _beside_image_places(folder)
    nested = []
    for place in places:
        for name in _subfolders(place):
            below = os.path.join(place, name)
            if below in places or name == "ImageSets":
                continue
            for root, directories, files in os.walk(below):
                directories[:] = sorted(d for d in directories if not d.startswith("."))
                nested += [
                    os.path.relpath(os.path.join(root, file), folder)
                    for file in sorted(files)
                    if _is_annotation_name(file)
                ]
    if nested:
        _logger.warning(
            "%s: %d .xml files lie in folders below the ones read (%s) and are left out: "
            "the images and their .xml files are read in the folder itself, or in its train/, "
            "valid/ and test/ folders; move them there to use them.",
            folder,
            len(nested),
            errors.first_few(nested),
        )


def split_file(folder: str, split: str) -> str:
    """The path of ``split``'s file in ``ImageSets/Main`` ('validation': val.txt)."""
    names = {split: file_name for file_name, split in _SPLIT_FILE_NAMES.items()}
    return os.path.join(folder, "ImageSets", "Main", f"{names[split]}.txt")


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
                "%s: %d image%s in both %s and %s (%s): evaluated on %s after training "
                "on %s, the mAP measures images the model was trained on.",
                main,
                len(both),
                " is" if len(both) == 1 else "s are",
                files[trained],
                files[evaluated],
                errors.first_few(both),
                evaluated,
                trained,
            )


def _warn_of_unannotated_images(folder: str) -> None:
    """Warns of images without an .xml file, which are left out: LabelImg writes none for an
    image without objects, and such background images vanished without a word. (Where split
    files list the images, unlisted ones are another matter: VOC2012's JPEGImages/ holds
    images of its other tasks.)"""
    if _is_voc_layout(folder):
        xml_places = {os.path.join(folder, "JPEGImages"): os.path.join(folder, "Annotations")}
    else:
        xml_places = {place: place for place in _beside_image_places(folder)}
    unannotated = []
    for place, xml_place in xml_places.items():
        if not os.path.isdir(place):
            continue
        stems = set(_xml_stems(xml_place))
        nameless = [
            name
            for name in sorted(_visible_files(place))
            if _is_image_name(name) and name.rpartition(".")[0] not in stems
        ]
        if nameless:  # an .xml file of another name may hold one as its <filename>
            named = _named_files(xml_place, stems)
            nameless = [name for name in nameless if name not in named]
        unannotated += [os.path.relpath(os.path.join(place, name), folder) for name in nameless]
    if unannotated:
        _logger.warning(
            "%s: %d images have no .xml file (%s) and are left out. An image without objects "
            "needs an .xml file without <object> (LabelImg writes none for it) to be trained "
            "on as background.",
            folder,
            len(unannotated),
            errors.first_few(unannotated),
        )


def _named_files(directory: str, stems) -> set[str]:
    """The ``<filename>`` of each ``<stem>.xml`` in ``directory``, where readable (a bad file
    is reported where the split is read)."""
    named = set()
    for stem in stems:
        with contextlib.suppress(BadDataError):
            named.add(parse_annotation(_xml_file(directory, stem)).filename)
    return named


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
            "(%s): they are not used. To train or evaluate on them, add their ids to "
            "train.txt or another split's file.",
            folder,
            len(unlisted),
            len(annotated),
            errors.first_few(unlisted),
        )


def folder_state(folder: str) -> str:
    """Hash of the folder's file names, sizes and times: another on any change."""
    digest = hashlib.sha256()
    subs = ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main"))
    if not _is_voc_layout(folder):  # split files apply to this layout too
        subs = (".", *_split_folders(folder), os.path.join("ImageSets", "Main"))
    for sub in subs:
        directory = os.path.join(folder, sub)
        if os.path.isdir(directory):
            for entry in sorted(os.scandir(directory), key=lambda entry: entry.name):
                try:
                    stat = entry.stat()
                except OSError:  # a broken link, or a loop: bad data if an image is it
                    stat = entry.stat(follow_symlinks=False)
                # fsencode: a name that is not UTF-8 still hashes (it is bad data later).
                digest.update(os.fsencode(f"{sub}/{entry.name}:{stat.st_size}:{stat.st_mtime_ns};"))
    return digest.hexdigest()[:16]
