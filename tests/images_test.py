"""Images as the model reads them: EXIF orientation, other layouts, the pipeline's decoder."""

import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from yolojax import images
from yolojax.data import decoding, pipeline


def test_a_photo_stored_sideways_reads_upright(tmp_path):
    stored = np.random.default_rng(0).integers(0, 256, (2, 3, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the viewer turns it 90° clockwise
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    np.testing.assert_array_equal(images.read_image(tmp_path / "phone.png"), np.rot90(stored, k=-1))


def test_a_damaged_exif_block_reads_the_image_as_stored(tmp_path, monkeypatch):
    # Pillow's exif_transpose raised struct.error on one, which stopped a whole predict run.
    stored = np.random.default_rng(0).integers(0, 256, (2, 3, 3), np.uint8)
    Image.fromarray(stored).save(tmp_path / "a.png")

    def damaged(image):
        raise struct.error("required argument is not a float")

    monkeypatch.setattr(Image.Image, "getexif", damaged)
    np.testing.assert_array_equal(images.read_image(tmp_path / "a.png"), stored)


def test_jpeg_rgba_and_greyscale_read_as_the_pipeline_decodes_them(tmp_path):
    rng = np.random.default_rng(1)
    smooth = np.linspace(0, 255, 48 * 64 * 3).reshape(48, 64, 3)  # JPEG's DCT has work to do
    photo = (smooth + rng.normal(0, 20, smooth.shape)).clip(0, 255).astype(np.uint8)
    for name, pixels in (
        ("photo.jpg", photo),
        ("rgba.png", rng.integers(0, 256, (4, 5, 4), np.uint8)),
        ("grey.png", rng.integers(0, 256, (4, 5), np.uint8)),
    ):
        Image.fromarray(pixels).save(tmp_path / name)
        decoded = decoding.decode_image(tf.constant((tmp_path / name).read_bytes())).numpy()
        np.testing.assert_array_equal(images.read_image(tmp_path / name), decoded)
        if name.endswith(".png"):  # lossless: the array itself
            np.testing.assert_array_equal(images.to_rgb(pixels), decoded)


@pytest.mark.parametrize("mode, colour", [("RGBa", (100, 50, 10, 128)), ("La", (100, 128))])
def test_premultiplied_alpha_reads_as_the_colour_it_stands_for(mode, colour):
    # 'La' stopped with Pillow's "conversion from La to L not supported". A channel c with
    # alpha a stands for c * 255 / a: 100 at 128 is 199 (rounded down, as Pillow does).
    expected = [value * 255 // colour[-1] for value in colour[:-1]]
    expected = expected * 3 if mode == "La" else expected
    pixels = images.to_rgb(Image.new(mode, (4, 3), colour))
    assert pixels.shape == (3, 4, 3) and (pixels == expected).all(), pixels[0, 0]


def test_an_array_of_another_layout_is_refused_by_shape():
    with pytest.raises(ValueError, match=r"got an array of shape \(4, 5, 2\)"):
        images.to_rgb(np.zeros((4, 5, 2), np.uint8))
    with pytest.raises(ValueError, match=r"got an array of shape \(\)"):
        images.to_rgb(np.asarray("photo.jpg"))
    # A batch, or a list of paths, is not one image: the message says to call per image.
    with pytest.raises(ValueError, match=r"\(2, 4, 5, 3\)\. One image per call"):
        images.to_rgb(np.zeros((2, 4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(1,\)\. One image per call"):
        images.to_rgb(["photo.jpg"])


def test_floating_point_pixels_are_refused_not_read_as_black(tmp_path):
    # Pillow's convert('RGB') clips mode 'F' pixels: a [0, 1] image read as all black, so
    # the detector found nothing, without an error.
    pixels = np.random.default_rng(2).uniform(0.2, 1.0, (6, 7)).astype(np.float32)
    with pytest.raises(images.FloatPixelsError, match=r"mode 'F'.*\(pixels \* 255\)\.round"):
        images.to_rgb(Image.fromarray(pixels))
    Image.fromarray(pixels).save(tmp_path / "float.tif")
    with pytest.raises(images.UnreadableImageError) as error:
        images.read_image(tmp_path / "float.tif")
    assert error.value.path == tmp_path / "float.tif"
    assert "floating point" in error.value.reason and "8 bits a channel" in error.value.reason
    # The same pixels as an array get the same advice where the pipeline refuses them.
    with pytest.raises(ValueError, match=r"got float32: for values in \[0, 1\], pass \(image"):
        pipeline.preprocess_image(images.to_rgb(pixels), image_size=8, normalization="unit")


def test_an_image_files_bytes_and_file_object_read_as_its_path_does(tmp_path):
    # A service gets an upload's bytes: they were refused as "an array of shape ()", and a
    # PIL image of them is not turned upright.
    stored = np.random.default_rng(3).integers(0, 256, (2, 3, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the viewer turns it 90° clockwise
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    contents = (tmp_path / "phone.png").read_bytes()
    upright = np.rot90(stored, k=-1)
    with open(tmp_path / "phone.png", "rb") as file:
        for source in (contents, bytearray(contents), io.BytesIO(contents), file):
            np.testing.assert_array_equal(images.read_image(source), upright)
    with pytest.raises(images.UnreadableImageError, match=r"<12 bytes>: not an image file"):
        images.read_image(b"not an image")
    with pytest.raises(images.UnreadableImageError, match=r"<0 bytes>: no bytes"):
        images.read_image(b"")
    text_mode = pytest.raises(TypeError, match=r"phone\.png.* text mode: .*open\(path, 'rb'\)")
    with open(tmp_path / "phone.png", errors="replace") as text, text_mode:
        images.read_image(text)


def test_an_object_that_is_no_image_is_named_by_its_type():
    # None was "an array of shape (). One image per call: for a batch ...".
    with pytest.raises(ValueError, match=r"got NoneType\.$"):
        images.to_rgb(None)


def test_a_url_is_named_as_such_not_as_a_missing_file():
    # It read "Cannot read image https:/example.com/photo.jpg: no such file".
    with pytest.raises(images.UnreadableImageError) as error:
        images.read_image("https://example.com/photo.jpg")
    assert str(error.value) == (
        "Cannot read image https://example.com/photo.jpg: a URL, not a local file: download it "
        "first"
    )
