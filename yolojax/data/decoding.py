"""Image files to pixels, as the input pipeline decodes them (and a VOC-format folder's
preparation checks them)."""

from yolojax.data import quiet_tensorflow  # noqa: F401 (first: see its docstring)

# isort: split
import tensorflow as tf


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """An encoded image file (JPEG, PNG, BMP, GIF, WebP without transparency; a scalar
    string tensor) as (H, W, 3) uint8 RGB: greyscale repeated, a PNG's alpha dropped.

    JPEGs are decoded with the accurate integer DCT, as Pillow (libjpeg's default) decodes
    them, so that :class:`yolojax.detector.Detector`, which reads files with Pillow, sees the
    pixels training and evaluation saw. TensorFlow's default, the fast DCT, is off by up to
    5 levels on most pixels, and no faster here (libjpeg-turbo's SIMD: 0.93 ms for a
    500×375 JPEG either way).
    """
    return tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: tf.io.decode_jpeg(encoded, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(encoded, channels=3, expand_animations=False),
    )
