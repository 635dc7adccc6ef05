"""Detections drawn on images, and the drawing files of `python -m yolojax.predict`.

A drawing keeps a JPEG photo's format and is a PNG otherwise. Each is marked as this
command's drawing of its name in its folder (a PNG text chunk, a JPEG comment): a later call
into that folder may replace it, and a file without the mark (an input image, a file of the
user's, a drawing copied elsewhere) is never written over.
"""

import colorsys
import functools
import io
import json
import threading
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

if TYPE_CHECKING:  # imported when used: it loads TensorFlow
    from yolojax.detector import ImageDetections

# The mark of a drawing as this command's, naming the drawing and its output folder
# (:func:`_mark_of`), in a PNG's text chunk or a JPEG's comment: a later call into that folder may
# replace it; a file without it, or a drawing copied to another folder or name, is never
# written over.
DRAWING_MARK = "yolojax.predict drawing {name} in {folder}"
PNG_MARK_KEY = "Software"
# A drawing keeps a JPEG photo's format: Pillow encodes a 640×480 drawing as a JPEG in
# 2.5 ms, as a PNG (zlib level 1) in 20-30 ms, which was the largest part of predict's time
# a photo, for a file twice as large. Other inputs (PNG, BMP, ...) get lossless PNGs.
_JPEG_SUFFIXES = (".jpg", ".jpeg", ".jfif")
_DRAWING_SUFFIXES = (".jpg", ".png")


def class_color(label: int) -> tuple[int, int, int]:
    """A distinct, stable colour per class id (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((label * 0.618034) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def drawing_scale(width: int, height: int) -> int:
    """How many times thicker the boxes and larger the labels are drawn on a ``width ×
    height`` image than on a 640×480 photo (1 below 960 pixels a side): a 12-megapixel
    photo's drawing is seen shrunk to a screen, where 2-pixel lines and 10-pixel labels
    vanish."""
    return max(1, round(max(width, height) / 640))


def draw_detections(image: np.ndarray, detections: "ImageDetections") -> Image.Image:
    """``(H, W, 3)`` uint8 image → a PIL image with each box and "class score" drawn, the
    best last: on top where boxes overlap (NMS is per class, so one object may be found as
    two classes, with the same box). Lines are 2 pixels wide and labels 10 pixels high,
    times :func:`drawing_scale` on large images."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    scale = drawing_scale(canvas.width, canvas.height)
    best_last = zip(
        detections.boxes, detections.scores, detections.labels, detections.class_names, strict=True
    )
    for box, score, label, name in sorted(best_last, key=lambda detection: detection[1]):
        color = class_color(int(label))
        # Continuous pixels: the box covers columns x0 .. x1 - 1, and Pillow's corners are
        # pixels, both drawn (its x1 was a line one pixel outside, off a whole-image box).
        x0, y0, x1, y1 = (float(v) for v in box)
        corners = [x0, y0, max(x1 - 1, x0), max(y1 - 1, y0)]
        draw.rectangle(corners, outline=color, width=2 * scale)
        tile, (left, top, right, _) = _label(f"{name} {score:.2f}", color, 10 * scale)
        # Above the box, at whole pixels; a box at the right edge: the label moves in.
        x, y = round(float(box[0])), max(round(float(box[1])) - 12 * scale, 0)
        if x + right > canvas.width:
            x = max(canvas.width - right, 0)
        canvas.paste(tile, (x + left, y + top))
    return canvas


@functools.lru_cache(maxsize=4096)
def _label(
    text: str, color: tuple[int, int, int], size: int
) -> tuple[Image.Image, tuple[int, ...]]:
    """``text`` in black on ``color``, as Pillow's default font of ``size`` pixels draws it
    at (0, 0): the tile,
    and its box there (left, top, right, bottom; the tile covers both ends). Rendering the
    text was 12 of the 17 ms that drawing 100 labels took; a photo's labels repeat (a score
    has 101 values), and the tile is the same pixels as drawing the label in place at the
    same whole-pixel position (labels are put at whole pixels)."""
    font = _default_font(size)
    with _FONT_LOCK:  # one FreeType face, shared by the drawing threads: one user at a time
        left, top, right, bottom = font.getbbox(text)
        tile = Image.new("RGB", (right - left + 1, bottom - top + 1), color)
        ImageDraw.Draw(tile).text((-left, -top), text, fill=(0, 0, 0), font=font)
    return tile, (left, top, right, bottom)


# FreeType's FT_Face is not thread-safe; the GIL serializes Pillow's calls into it, but a
# free-threaded Python before Pillow 12.2 does not (python-pillow/Pillow#9497).
_FONT_LOCK = threading.Lock()


@functools.cache
def _default_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's default font at ``size`` pixels (10 is ImageDraw's own), which ImageDraw
    would decode again for each new drawing."""
    return ImageFont.load_default(size)


def encode_drawing(image: np.ndarray, detections: "ImageDetections", path: Path) -> bytes:
    """The file of ``image`` with ``detections`` drawn (:func:`draw_detections`), to be
    written at ``path`` (a .jpg or .png name), marked as this command's drawing there."""
    mark = _mark_of(path)
    encoded = io.BytesIO()
    canvas = draw_detections(image, detections)
    if path.suffix == ".jpg":
        # Colour at full resolution (4:4:4): JPEG's default halving blurs the boxes' thin
        # coloured lines into the photo (a mean error of 13 levels against 3).
        canvas.save(encoded, format="JPEG", quality=95, subsampling=0, comment=mark)
    else:
        text = PngImagePlugin.PngInfo()
        text.add_text(PNG_MARK_KEY, mark)
        # zlib's fastest level: PNG's default (6) took 53 of the 86 ms predict spent on a
        # 640×480 photo, level 1 takes 20 ms for a file 13% larger (BENCHMARKS.md).
        canvas.save(encoded, format="PNG", pnginfo=text, compress_level=1)
    return encoded.getvalue()


def drawing_name(path: Path, taken: set[str]) -> str:
    """``<stem>.jpg`` for a JPEG input, else ``<stem>.png``; or ``<stem>_<k>`` with that
    suffix and the smallest k not yet ``taken`` (compared case-insensitively, for
    case-insensitive file systems)."""
    suffix = ".jpg" if path.suffix.lower() in _JPEG_SUFFIXES else ".png"
    name, k = f"{path.stem}{suffix}", 0
    while name.casefold() in taken:
        k += 1
        name = f"{path.stem}_{k}{suffix}"
    taken.add(name.casefold())
    return name


def listed_drawings(record_path: Path) -> set[str]:
    """The drawing names in an earlier detections.json: plain ``.jpg`` and ``.png`` names
    (nothing that could point outside the folder); none if there is no such file or it is
    not one of ours."""
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return set()
    if not isinstance(record, dict):
        return set()
    names = {entry.get("drawing") for entry in record.values() if isinstance(entry, dict)}
    return {
        name
        for name in names
        if isinstance(name, str) and name.endswith(_DRAWING_SUFFIXES) and name == Path(name).name
    }


def _mark_of(drawing: Path) -> str:
    """The mark of the drawing at ``drawing``: its name and folder, so that a copy, in
    another folder or under another name, is the user's file. The name as a file system
    may give it back: case-insensitive ones keep an earlier file's case, and macOS's HFS+
    stores decomposed Unicode."""
    drawing = Path(drawing)
    name = unicodedata.normalize("NFC", drawing.name).casefold()
    return DRAWING_MARK.format(name=name, folder=drawing.parent.resolve())


def marked_drawings(folder: Path) -> set[str]:
    """The names of the .jpg and .png files in ``folder`` marked as this command's drawing
    there."""
    marked = set()
    for path in folder.iterdir():
        if not path.name.endswith(_DRAWING_SUFFIXES):
            continue
        try:
            with Image.open(path) as drawing:  # reads the headers before the pixels only
                mark = drawing.info.get("comment" if drawing.format == "JPEG" else PNG_MARK_KEY)
        # Not an image Pillow can open, or one too large to (a panorama): not ours.
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        if isinstance(mark, bytes):  # a JPEG comment
            mark = mark.decode("utf-8", errors="replace")
        if mark == _mark_of(path):
            marked.add(path.name)
    return marked
