"""Images as the model reads them: ``(H, W, 3)`` uint8 RGB arrays, from image files, PIL
images or arrays of other layouts, decoded as the input pipeline decodes its images
(:func:`yolojax.data.decoding.decode_image`: the same pixels, JPEGs included), except that a
file is turned upright as its EXIF orientation says (the pipeline's training images are used
as stored)."""

import io
import os
import re
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

# Image files by extension (matched case-insensitively), for folders given as input and the
# images of a VOC-format folder (looked for in this order).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
_ORIENTATION_TAG = 0x0112
_URL = re.compile(r"[a-z][a-z0-9+.-]*://", re.IGNORECASE)  # a scheme: https://, s3://, ...
# EXIF orientation → the transpose that makes the image upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class UnreadableImageError(ValueError):
    """An input image file that is missing, not an image, or damaged."""

    def __init__(self, path, reason: str):
        super().__init__(f"Cannot read image {path}: {reason}")
        self.path = path
        self.reason = reason


class FloatPixelsError(ValueError):
    """A PIL image of floating-point pixels (mode ``F``), whose range no 8-bit reading can
    tell."""


def uint8_advice(pixels: np.ndarray, name: str = "image") -> str:
    """How to turn ``pixels`` (called ``name``), an array of a dtype other than uint8, into
    the uint8 one asked for."""
    if pixels.dtype == np.uint16:
        return f"for 16 bits a channel, pass ({name} >> 8).astype(np.uint8)."
    if pixels.dtype == bool:
        return f"pass {name}.astype(np.uint8) * 255."
    if pixels.dtype.kind == "f":
        if not np.isfinite(pixels).all():  # no conversion brings such pixels back
            return "it holds NaN or infinite values: check how the image was made."
        if pixels.min() >= 0 and pixels.max() <= 1:
            return f"for values in [0, 1], pass ({name} * 255).round().astype(np.uint8)."
        if pixels.min() >= -1 and pixels.max() <= 1:
            return f"for values in [-1, 1], pass (({name} + 1) * 127.5).round().astype(np.uint8)."
    return f"for values in [0, 255], pass np.clip({name}, 0, 255).round().astype(np.uint8)."


def to_rgb(image) -> np.ndarray:
    """A PIL image or an array as ``(H, W, 3)`` RGB.

    Arrays may be ``(H, W, 3)`` RGB, ``(H, W, 4)`` RGBA (the alpha channel is dropped, as
    the pipeline's decoder drops it), or ``(H, W)`` / ``(H, W, 1)`` greyscale (repeated).
    A PIL image of any mode but ``F`` is converted; 16-bit greyscale (modes ``I;16``, ``I``)
    keeps its high byte, as the pipeline's decoder does, where Pillow's ``convert('RGB')``
    would clip every value above 255 to white.

    Raises:
      FloatPixelsError: a PIL image of floating-point pixels (mode ``F``, such as a float
        TIFF's): Pillow's conversion would clip them, an image in [0, 1] to black.
      ValueError: an array of another shape.
    """
    if isinstance(image, Image.Image):
        if image.mode == "F":
            raise FloatPixelsError(
                "a PIL image of floating-point pixels (mode 'F') has no fixed range to read as "
                "8-bit RGB. Pass its pixels as uint8: with pixels = np.asarray(image), "
                + uint8_advice(np.asarray(image), name="pixels")
            )
        if image.mode.startswith("I"):
            grey = (np.asarray(image).astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
            return np.repeat(grey[..., None], 3, axis=-1)
        if image.mode == "La":  # premultiplied: Pillow converts it to LA only
            image = image.convert("LA")
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim == 3 and array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return array[..., :3]
    # A batch, or a list of paths or images; not one object of another kind (None, say).
    several = array.ndim == 4 or (array.ndim == 1 and array.dtype.kind in "OU")
    got = (
        f"an array of shape {array.shape}"
        if array.ndim or isinstance(image, np.ndarray)
        else type(image).__name__
    )
    raise ValueError(
        "image must be (H, W, 3) RGB, (H, W, 4) RGBA or (H, W) greyscale, a PIL image, or an "
        f"image file's path or contents (bytes, a binary file object); got {got}."
        + (
            " One image per call: for a batch or a list of images, Detector.detect_batch(images)."
            if several
            else ""
        )
    )


def exif_orientation(image: Image.Image) -> int:
    """The image's EXIF orientation, 1 to 8 (1: upright as stored), 1 without the tag or
    with a damaged EXIF block (the image as stored, as other readers show it). Only the tag
    is read (Pillow's ``exif_transpose`` also rewrites the whole EXIF block, and raises on a
    damaged one)."""
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:
        return 1
    return orientation if orientation in range(1, 9) else 1


def _upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation says."""
    method = _UPRIGHT.get(exif_orientation(image))
    return image.transpose(method) if method is not None else image


def read_image(source: str | os.PathLike | bytes | BinaryIO) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB, turned upright as its EXIF orientation says
    (as a photo viewer shows it: a phone's portrait photo is stored sideways).

    Args:
      source: the file's path (``str`` or ``os.PathLike``), or its contents: ``bytes`` (an
        upload's body, say) or a binary file object (``open(path, 'rb')``, ``io.BytesIO``).

    Raises:
      UnreadableImageError: the file is missing, empty, a folder, a URL, not an image,
        damaged, or of floating-point pixels; its ``reason`` says which, its ``path`` is the
        path given (``<N bytes>`` for bytes, the file object's ``name`` if it has one).
      TypeError: a file object opened in text mode.
    """
    if isinstance(source, bytes | bytearray):
        path = f"<{len(source)} bytes>"
        if not source:
            raise UnreadableImageError(path, "no bytes")
        source = io.BytesIO(source)
    elif hasattr(source, "read"):  # a file object, as Pillow takes it
        if isinstance(source, io.TextIOBase):  # Pillow's error would be a UnicodeDecodeError
            raise TypeError(
                f"the file object {getattr(source, 'name', source)!r} is open in text mode: "
                "open the image with open(path, 'rb')."
            )
        path = getattr(source, "name", f"<{type(source).__name__}>")
    elif isinstance(source, str) and _URL.match(source):  # Path() would make https:/ of it
        raise UnreadableImageError(source, "a URL, not a local file: download it first")
    else:
        source = path = Path(source)
        if not path.exists():
            broken_link = path.is_symlink()
            raise UnreadableImageError(
                path, "a link to a missing file" if broken_link else "no such file"
            )
        if path.is_dir():
            raise UnreadableImageError(path, "a folder, not an image file")
        if path.stat().st_size == 0:
            raise UnreadableImageError(path, "an empty file")
    try:
        with Image.open(source) as image:
            return to_rgb(_upright(image))
    except FloatPixelsError:
        raise UnreadableImageError(
            path,
            "its pixels are floating point (Pillow mode 'F', as in a 32-bit float TIFF), with "
            "no fixed range to read as 8-bit RGB: save it with 8 bits a channel",
        ) from None
    except UnidentifiedImageError:
        raise UnreadableImageError(path, "not an image file Pillow can read") from None
    except OSError as error:
        if error.strerror:  # a system error: "Permission denied", ...
            raise UnreadableImageError(path, error.strerror) from error
        raise UnreadableImageError(path, f"corrupt or unreadable image ({error})") from error
    except (SyntaxError, ValueError, Image.DecompressionBombError) as error:
        reason = str(error) or type(error).__name__
        raise UnreadableImageError(path, f"corrupt or unreadable image ({reason})") from error
