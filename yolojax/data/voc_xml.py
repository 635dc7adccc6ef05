"""One PASCAL VOC XML annotation file, read and checked.

    annotation = parse_annotation('folder/Annotations/a.xml')
    annotation.size      # (width, height) from <size>, or None
    annotation.objects   # [ParsedObject(name, box, difficult, truncated)], box: pixel xyxy

Anything unparseable raises `BadDataError` naming the file and the problem.
"""

import math
import xml.etree.ElementTree as ElementTree
from typing import NamedTuple


class BadDataError(ValueError):
    """A file of a VOC-format folder is unusable; the message names the file and the problem."""


class ParsedObject(NamedTuple):
    name: str
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in pixels
    difficult: bool
    truncated: bool


class ParsedAnnotation(NamedTuple):
    filename: str | None  # the <filename> element, if any
    size: tuple[int, int] | None  # (width, height) from <size>, if any
    objects: list[ParsedObject]


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


def read_flag(text: str | None) -> bool | None:
    """A ``<difficult>`` or ``<truncated>`` text: 1/true/yes or 0/false/no (any case, spaces
    around; no text is 0), None for anything else."""
    text = (text or "").strip().lower()
    return text in _TRUE if text in _TRUE + _FALSE else None


def _flag(xml_path: str, element: ElementTree.Element, tag: str) -> bool:
    """``<difficult>`` or ``<truncated>`` (:func:`read_flag`); anything else is bad data."""
    text = element.findtext(tag)
    flag = read_flag(text)
    if flag is None:
        raise BadDataError(
            f"{xml_path}: malformed XML (<{tag}> is {(text or '').strip()!r}, not 0 or 1)"
        )
    return flag


def parse_annotation(xml_path: str) -> ParsedAnnotation:
    """Reads one VOC XML file; raises BadDataError for anything unparseable."""
    try:
        root = ElementTree.parse(xml_path).getroot()
    # ValueError, LookupError: an encoding the parser does not read (GBK), or an unknown one.
    except (ElementTree.ParseError, OSError, ValueError, LookupError) as error:
        raise BadDataError(f"{xml_path}: malformed XML ({error})") from error
    size = None
    if root.find("size") is not None:
        try:
            # Some tools write '320.0'; a whole number either way.
            width, height = (float(root.findtext(f"size/{tag}")) for tag in ("width", "height"))
            if not (width.is_integer() and height.is_integer()):
                raise ValueError((width, height))
        except (TypeError, ValueError) as error:
            raise BadDataError(f"{xml_path}: malformed XML (<size> is not two integers)") from error
        # 0 × 0: an exporter that did not record the size: as if there were no <size>.
        size = (int(width), int(height)) if (width, height) != (0, 0) else None
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
        objects.append(ParsedObject(name, box, *flags))
    filename = root.findtext("filename")
    return ParsedAnnotation(filename.strip() if filename else None, size, objects)
