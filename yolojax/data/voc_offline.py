"""Build TFDS `voc/2007` and `voc/2012` from an already downloaded VOCdevkit, offline.

TFDS's `voc` builder downloads two tar files per year and extracts them. With the original
tars at hand, `DownloadConfig(manual_dir=...)` is enough (see docs/data.md). With only the
extracted `VOCdevkit/VOC<year>` folder, `prepare_voc_offline` registers that folder in the
TFDS download cache as the extraction of both tars (the layout of TFDS 4.9: a cached download
is a file plus a `.INFO` file named after the URL and registered checksum, and its extraction
is `extracted/TAR.<that name>`), then runs the unmodified builder, which reads the folder.

    prepare_voc_offline('/data/VOCdevkit', '2007', data_dir='/data/tfds')
    prepare_voc_offline('/data/VOCdevkit', '2012', data_dir='/data/tfds')
"""

import logging
import os
from xml.etree import ElementTree

from yolojax.data import quiet_tensorflow  # noqa: F401 (first: see its docstring)

# isort: split
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core.download import resource as resource_lib

from yolojax.data.voc_xml import read_flag

# Files read from VOC<year>/ImageSets/Main by the builder's 'train', 'validation', 'test' splits.
_SET_FILES = {"trainval": ("train", "val"), "test": ("test",)}
_BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")

_logger = logging.getLogger(__name__)


def _register_extraction(
    builder: tfds.core.DatasetBuilder, download_dir: str, archive: str, year_dir: str
) -> None:
    """Makes TFDS find `archive` downloaded, and extracted to VOCdevkit/VOC<year> = year_dir."""
    url = next(url for url in builder.url_infos if url.endswith("/" + archive))
    url_info = builder.url_infos[url]
    cached = (
        epath.Path(download_dir) / builder.name / resource_lib.get_dl_fname(url, url_info.checksum)
    )
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.touch()  # A placeholder: the registered checksum is trusted when the .INFO exists.
    resource_lib.write_info_file(
        url=url, path=cached, dataset_name=builder.name, original_fname=archive, url_info=url_info
    )
    devkit = os.path.join(download_dir, "extracted", f"TAR.{cached.name}", "VOCdevkit")
    os.makedirs(devkit, exist_ok=True)
    link = os.path.join(devkit, f"VOC{builder.builder_config.year}")
    if os.path.islink(link):
        os.remove(link)
    os.symlink(os.path.abspath(year_dir), link)


def _annotation_problem(xml_path: str, labels: dict[str, tuple[str, ...]]) -> str | None:
    """What TFDS's `voc` builder would fail on in one annotation file (None if nothing).

    The builder reads each object's lowercased `name` and `pose` as labels (``labels``:
    the names each may take), its `truncated` and `difficult` tags, and its box divided by
    the `<size>` in pixels, which has to land in [0, 1]; any other value stops the whole
    preparation with an error that names a copy of the file inside the TFDS cache.
    """
    try:
        root = ElementTree.parse(xml_path).getroot()
        width = float(root.findtext("size/width"))
        height = float(root.findtext("size/height"))
    except (OSError, ElementTree.ParseError) as error:
        return f"cannot be read as XML ({error})"
    except (TypeError, ValueError):
        return "has no numeric <size> <width> and <height>"
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").lower()
        if name not in labels["label"]:
            return f"object {name!r} is not one of VOC's 20 classes {list(labels['label'])}"
        for tag in ("truncated", "difficult"):
            if obj.find(tag) is None:
                return f"object {name!r} lacks <{tag}>"
            # The builder takes the text '1' for set and any other for unset: a 'true' (or a
            # ' 1') would be stored as not difficult, where voc_folder (voc_xml) reads it as
            # difficult, and a '2' as well, which voc_folder refuses.
            text = obj.findtext(tag)
            if read_flag(text) is not (text == "1"):
                return (
                    f"object {name!r} has <{tag}> {text!r}, which TFDS's voc builder reads as "
                    "unset (it takes '1' alone for set): write 1 or 0"
                )
        pose = (obj.findtext("pose") or "").lower()
        if pose not in labels["pose"]:
            return f"object {name!r} has <pose> {pose!r}, not one of {list(labels['pose'])}"
        try:
            box = {tag: float(obj.findtext(f"bndbox/{tag}")) for tag in _BOX_TAGS}
        except (TypeError, ValueError):
            return f"object {name!r} lacks a numeric <bndbox> {'/'.join(_BOX_TAGS)}"
        if not (
            0 <= box["xmin"] <= box["xmax"] <= width and 0 <= box["ymin"] <= box["ymax"] <= height
        ):
            return f"object {name!r} box {box} lies outside the {width:g}x{height:g} <size>"
    return None


def _check_annotations(year_dir: str, set_names: list[str], labels: dict[str, tuple[str, ...]]):
    """Raises ValueError naming every annotation of the listed images that TFDS's builder
    would fail on (at most 10 shown), before anything is prepared."""
    problems = []
    for set_name in set_names:
        with open(os.path.join(year_dir, "ImageSets", "Main", set_name + ".txt")) as file:
            image_ids = [line.split()[0] for line in file if line.strip()]
        for image_id in image_ids:
            xml_path = os.path.join(year_dir, "Annotations", image_id + ".xml")
            if not os.path.isfile(xml_path):
                problems.append(f"{xml_path}: not found (listed in {set_name}.txt)")
            elif (problem := _annotation_problem(xml_path, labels)) is not None:
                problems.append(f"{xml_path}: {problem}")
    if problems:
        shown = problems[:10] + (
            [f"... and {len(problems) - 10} more"] if len(problems) > 10 else []
        )
        raise ValueError(
            f"{len(problems)} annotation file(s) of {year_dir} cannot be read as VOC: fix or "
            "remove them (and their lines in ImageSets/Main/*.txt), then rerun:\n  "
            + "\n  ".join(shown)
        )


def _placeholder_test_set(download_dir: str, year_dir: str) -> str:
    """A VOC<year> folder whose test set is one trainval image, for a missing VOC2012test.

    VOC2012's test annotations are not public, so its 'test' split is unusable for detection;
    TFDS still needs the archive and refuses an empty split.
    """
    placeholder = os.path.join(download_dir, "yolojax_voc2012_test_placeholder")
    os.makedirs(os.path.join(placeholder, "ImageSets", "Main"), exist_ok=True)
    with open(os.path.join(year_dir, "ImageSets", "Main", "train.txt")) as file:
        first_id = file.readline().strip()
    with open(os.path.join(placeholder, "ImageSets", "Main", "test.txt"), "w") as file:
        file.write(first_id + "\n")
    images = os.path.join(placeholder, "JPEGImages")
    if os.path.islink(images):
        os.remove(images)
    os.symlink(os.path.abspath(os.path.join(year_dir, "JPEGImages")), images)
    return placeholder


def prepare_voc_offline(
    devkit_dir: str, year: str, data_dir: str | None = None
) -> tfds.core.DatasetBuilder:
    """Prepares TFDS `voc/<year>` from `devkit_dir/VOC<year>` without network access.

    Args:
      devkit_dir: the extracted `VOCdevkit` folder, holding `VOC2007/` and/or `VOC2012/` with
        `Annotations/`, `JPEGImages/` and `ImageSets/Main/{train,val,test}.txt`.
      year: '2007' or '2012'.
      data_dir: TFDS data directory; None = the TFDS default.

    Returns:
      The prepared builder (ArrayRecord files, as the yolojax pipeline reads them). One
      already prepared in `data_dir` is returned as it is: edits to the folder since are
      not read (prepare into another `data_dir` to take them).

    Raises:
      ValueError: a folder that is not a VOCdevkit (or a year's folder given for one), a
        missing set file, or annotation files the builder cannot read (every one named).
    """
    year = str(year)
    if year not in ("2007", "2012"):
        raise ValueError(f"year must be '2007' or '2012', got {year!r}")
    if not os.path.isdir(devkit_dir):
        raise ValueError(f"devkit_dir={devkit_dir!r} does not exist or is not a folder")
    year_dir = os.path.join(devkit_dir, f"VOC{year}")
    if not os.path.isdir(year_dir) and os.path.isdir(os.path.join(devkit_dir, "Annotations")):
        raise ValueError(
            f"devkit_dir={devkit_dir!r} is a year's folder: pass the VOCdevkit folder that "
            f"holds VOC{year}/ ({os.path.dirname(os.path.abspath(devkit_dir))!r}?)"
        )
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        if not os.path.isdir(os.path.join(year_dir, sub)):
            raise ValueError(f"devkit_dir={devkit_dir!r}: {os.path.join(year_dir, sub)} not found")
    builder = tfds.builder(f"voc/{year}", data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return builder
    download_dir = os.path.join(builder.data_dir_root, "downloads")
    main = os.path.join(year_dir, "ImageSets", "Main")
    objects = builder.info.features["objects"]
    labels = {key: tuple(objects[key].names) for key in ("label", "pose")}
    # VOC2012's test annotations are not public: the builder reads none for that split.
    annotated = {**_SET_FILES}
    if not builder.builder_config.has_test_annotations:
        del annotated["test"]
    set_names = [name for names in annotated.values() for name in names]
    _check_annotations(
        year_dir,
        [name for name in set_names if os.path.isfile(os.path.join(main, name + ".txt"))],
        labels,
    )
    for archive_kind, archive in builder.builder_config.filenames.items():
        missing = [
            name + ".txt"
            for name in _SET_FILES[archive_kind]
            if not os.path.isfile(os.path.join(main, name + ".txt"))
        ]
        archive_dir = year_dir
        if missing and (year, archive_kind) == ("2012", "test"):
            _logger.warning("%s has no test.txt: voc/2012 'test' will be a placeholder", main)
            archive_dir = _placeholder_test_set(download_dir, year_dir)
        elif missing:
            raise ValueError(f"{main} lacks {missing}: extract {archive} into {devkit_dir}")
        _register_extraction(builder, download_dir, archive, archive_dir)
    builder.download_and_prepare(download_dir=download_dir)
    return builder
