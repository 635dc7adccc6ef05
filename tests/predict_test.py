"""``python -m yolojax.predict`` as a user runs it: bad inputs, same-named inputs, no config.

The command runs in-process (``predict.main(argv)``) on a workdir holding a freshly
initialised checkpoint of tests/tiny.py's model: predict needs a restorable checkpoint and
config.json, not a trained model. The workdir's detector is restored once for the module.
"""

import errno
import io
import json
import os
import re
import shutil
import threading
import time
import unicodedata
import warnings

import jax
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageDraw

from configs import folder, shapes, voc
from tests import tiny
from yolojax import checkpoints, drawings, errors, get_model, predict, train_lib
from yolojax.atomic_files import atomic_write_text
from yolojax.config import default_config, load_run_config
from yolojax.data import synthetic_shapes
from yolojax.detector import Detector, ImageDetections
from yolojax.workdir import CLASSES_FILE, CONFIG_FILE, config_changes, load_class_names

_UNCACHED_FROM_WORKDIR = Detector.from_workdir.__func__  # before the fixture's stand-in


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    config = tiny.tiny_config(str(workdir / "tfds"))  # no data is read
    _, state, _ = train_lib.initial_state(config, config.train.batch_size)
    tiny.save_checkpoint(config, state, workdir)
    atomic_write_text(workdir / CONFIG_FILE, config.to_json_best_effort(indent=2))

    # Restoring takes ~10 s on two cores: each (workdir, settings) is restored once here.
    restore, restored = Detector.from_workdir.__func__, {}

    def from_workdir(cls, workdir, **settings):
        if "config" in settings:  # a ConfigDict is no key (and a test's own config: no reuse)
            return restore(cls, workdir, **settings)
        key = (str(workdir), tuple(sorted(settings.items())))
        if key not in restored:
            restored[key] = restore(cls, workdir, **settings)
        return restored[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Detector, "from_workdir", classmethod(from_workdir))
        yield workdir


def _image(path, width, height, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
    Image.fromarray(pixels).save(path)
    return str(path)


def _predict(workdir, out, *images):
    """Runs the command; its exit status (0 when it returns)."""
    argv = ["--workdir", str(workdir), "--out", str(out), "--score-threshold", "0", *images]
    try:
        predict.main(argv)
    except SystemExit as exit_request:
        return exit_request.code
    return 0


def _record(out):
    return json.loads((out / "detections.json").read_text())


def test_bad_inputs_are_skipped_named_and_make_the_command_fail(workdir, tmp_path, capsys):
    first = _image(tmp_path / "first.png", 40, 30)
    _image(tmp_path / "whole.jpg", 64, 64)
    whole = (tmp_path / "whole.jpg").read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(whole[: len(whole) // 2])
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not an image\n")
    missing = tmp_path / "missing.jpg"
    folder = tmp_path / "folder"
    folder.mkdir()
    last = _image(tmp_path / "last.jpg", 50, 20, seed=1)
    bad = [str(truncated), str(not_image), str(missing), str(folder)]
    out = tmp_path / "out"

    assert _predict(workdir, out, first, *bad, last) == 1

    # Every good image is drawn and recorded, those after the bad ones too.
    assert Image.open(out / "first.png").size == (40, 30)
    assert Image.open(out / "last.jpg").size == (50, 20)  # a JPEG photo's drawing is a JPEG
    record = _record(out)
    assert list(record) == [first, last]
    assert [record[p]["drawing"] for p in (first, last)] == ["first.png", "last.jpg"]
    assert all(isinstance(record[p]["detections"], list) for p in (first, last))

    # One line per bad input, naming it and why, then the summary.
    lines = capsys.readouterr().err.strip().splitlines()
    skipped = [line for line in lines if line.startswith("Skipping ")]
    assert [line.split(": ")[0] for line in skipped] == [f"Skipping {p}" for p in bad]
    reasons = dict(zip(bad, (line.split(": ", 1)[1] for line in skipped), strict=True))
    assert "corrupt or unreadable image" in reasons[str(truncated)]
    assert "not an image" in reasons[str(not_image)]
    assert "no such file" in reasons[str(missing)]
    assert reasons[str(folder)].startswith("a folder without image files (.jpg, .jpeg")
    assert lines[-1].startswith("4 inputs could not be read (2 images were): ")
    assert all(p in lines[-1] for p in bad)
    assert "Traceback" not in "\n".join(lines)


def test_no_readable_input_still_fails_with_the_summary(workdir, tmp_path, capsys):
    out = tmp_path / "out"
    missing = [str(tmp_path / "a.jpg"), str(tmp_path / "b.png")]
    assert _predict(workdir, out, *missing) == 1
    assert _record(out) == {}
    err = capsys.readouterr().err
    assert err.count("Skipping ") == 2
    assert "2 inputs could not be read (0 images were)" in err


def test_same_named_inputs_get_distinct_drawings(workdir, tmp_path, capsys):
    a = _image(tmp_path / "a" / "x.jpg", 40, 30)
    b = _image(tmp_path / "b" / "x.jpg", 50, 20, seed=1)
    c = _image(tmp_path / "c" / "X.jpeg", 30, 30, seed=2)  # X.jpg: x.jpg on macOS/Windows
    d = _image(tmp_path / "d" / "x.png", 20, 20, seed=3)  # another format: another name
    out = tmp_path / "out"

    assert _predict(workdir, out, a, b, c, d) == 0

    record = _record(out)
    assert {p: record[p]["drawing"] for p in record} == {
        a: "x.jpg",
        b: "x_1.jpg",
        c: "X_2.jpg",
        d: "x.png",
    }
    # Each drawing is of its own input.
    assert Image.open(out / "x.jpg").size == (40, 30)
    assert Image.open(out / "x_1.jpg").size == (50, 20)
    assert Image.open(out / "X_2.jpg").size == (30, 30)
    assert Image.open(out / "x.png").size == (20, 20)
    assert "Skipping" not in capsys.readouterr().err


def test_a_reused_output_folder_holds_only_the_latest_calls_drawings(workdir, tmp_path):
    a = _image(tmp_path / "a.jpg", 40, 30)
    b = _image(tmp_path / "b.jpg", 50, 20, seed=1)
    c = _image(tmp_path / "c.jpg", 30, 30, seed=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "mine.jpg").write_bytes(b"mine")
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"mine")
    # A detections.json naming a file outside the folder: that file is not removed.
    (out / "detections.json").write_text(json.dumps({"x": {"drawing": "../outside.png"}}))
    assert _predict(workdir, out, a, b) == 0
    assert outside.read_bytes() == b"mine"

    assert _predict(workdir, out, b, c) == 0

    drawn = sorted(p.name for p in out.iterdir())
    assert drawn == ["b.jpg", "c.jpg", "detections.json", "mine.jpg", "notes.txt"]
    assert {_record(out)[p]["drawing"] for p in (b, c)} == {"b.jpg", "c.jpg"}
    assert (out / "notes.txt").read_text() == "mine"
    # A call that reads nothing leaves nothing of the earlier ones to mistake for its own.
    assert _predict(workdir, out, str(tmp_path / "missing.jpg")) == 1
    assert sorted(p.name for p in out.iterdir()) == ["detections.json", "mine.jpg", "notes.txt"]


def test_files_already_in_the_output_folder_are_never_overwritten(workdir, tmp_path):
    out = tmp_path / "out"
    photo = _image(out / "photo.png", 40, 30)  # an input in the output folder itself
    (out / "other.jpg").write_bytes(b"the user's")  # a file an input's drawing would be named
    other = _image(tmp_path / "elsewhere" / "other.jpg", 50, 20, seed=1)
    before = (out / "photo.png").read_bytes()

    for _ in range(2):  # the second call replaces the first call's drawings, nothing else
        assert _predict(workdir, out, photo, other) == 0
        record = _record(out)
        assert record[photo]["drawing"] == "photo_1.png"
        assert record[other]["drawing"] == "other_1.jpg"
        assert (out / "photo.png").read_bytes() == before
        assert (out / "other.jpg").read_bytes() == b"the user's"
        assert Image.open(out / "photo_1.png").size == (40, 30)
        assert Image.open(out / "other_1.jpg").size == (50, 20)
    assert sorted(p.name for p in out.iterdir()) == [
        "detections.json",
        "other.jpg",
        "other_1.jpg",
        "photo.png",
        "photo_1.png",
    ]


def test_a_photo_too_large_for_pillow_in_the_output_folder_is_left_alone(
    workdir, tmp_path, monkeypatch
):
    # Looking for earlier drawings opened it, and Pillow's decompression-bomb error stopped
    # the command before anything was detected.
    out = tmp_path / "out"
    panorama = _image(out / "panorama.jpg", 300, 300)
    before = (out / "panorama.jpg").read_bytes()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # 300 × 300 is then a "bomb"
    assert _predict(workdir, out, _image(tmp_path / "a.jpg", 40, 30)) == 0
    assert (out / "panorama.jpg").read_bytes() == before
    assert _record(out)[str(tmp_path / "a.jpg")]["drawing"] == "a.jpg"
    assert panorama not in _record(out)


def test_drawings_of_a_call_stopped_before_its_record_are_still_replaced(workdir, tmp_path):
    a = _image(tmp_path / "a.jpg", 40, 30)
    b = _image(tmp_path / "b.jpg", 50, 20, seed=1)
    out = tmp_path / "out"
    assert _predict(workdir, out, a) == 0
    (out / "detections.json").unlink()  # as a call stopped after drawing a.jpg leaves it
    assert _predict(workdir, out, a) == 0
    assert _record(out)[a]["drawing"] == "a.jpg"  # its own name again, not a_1.jpg
    (out / "detections.json").unlink()
    assert _predict(workdir, out, b) == 0
    assert sorted(p.name for p in out.iterdir()) == ["b.jpg", "detections.json"]


def test_the_output_folder_as_input_and_a_drawing_copied_from_elsewhere(workdir, tmp_path):
    folder = tmp_path / "photos"
    photo = _image(folder / "a.png", 40, 30)
    for _ in range(3):  # its own drawings are not inputs the next time
        assert _predict(workdir, folder, str(folder)) == 0
        assert list(_record(folder)) == [photo]
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "a_1.png", "detections.json"]

    # A drawing copied into another output folder is the user's file there: kept, and not
    # written over by the drawing that would take its name.
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(folder / "a_1.png", other / "a.png")
    copied = (other / "a.png").read_bytes()
    assert _predict(workdir, other, photo) == 0
    assert _record(other)[photo]["drawing"] == "a_1.png"
    assert (other / "a.png").read_bytes() == copied
    assert not [p for p in other.iterdir() if p.name.endswith(".tmp")]
    # So is one copied under another name in the same folder: the next call keeps it.
    shutil.copy(other / "a_1.png", other / "mine.png")
    assert _predict(workdir, other, photo) == 0
    assert (other / "mine.png").exists() and (other / "a.png").read_bytes() == copied


def test_a_drawing_whose_name_the_file_system_respells_is_still_recognised(workdir, tmp_path):
    # macOS's HFS+ gives names back in decomposed Unicode; a case-insensitive file system
    # keeps an earlier file's case: our drawing there must not become the user's file.
    composed = "caf\u00e9"  # é as one code point
    photo = _image(tmp_path / "in" / f"{composed}.png", 40, 30)
    out = tmp_path / "out"
    assert _predict(workdir, out, photo) == 0
    respelled = unicodedata.normalize("NFD", composed).upper() + ".png"
    (out / f"{composed}.png").rename(out / respelled)
    (out / "detections.json").unlink()  # as a call stopped before writing it leaves them
    assert _predict(workdir, out, photo) == 0
    assert sorted(p.name for p in out.iterdir()) == [f"{composed}.png", "detections.json"]


def _uniform_output_run(
    tmp_path, box_size: float = 1.0, kernel_scale: float = 0.0, confidence: float = 1.0
):
    """A run whose checkpoint's output layer gives every cell of the 4×4 grid the same
    output: box 0 centred on its cell, ``box_size`` cells wide and tall, with ``confidence``;
    box 1 with confidence 0; the five classes scoring 0.3, 0.6, 0.1, 0.2 and 0.9. With a
    ``kernel_scale``, the layer's random kernel times it adds what the image holds."""
    workdir = tmp_path / "run"
    config = tiny.tiny_config(str(tmp_path / "tfds"))
    _, state, _ = train_lib.initial_state(config, config.train.batch_size)
    class_scores = [0.3, 0.6, 0.1, 0.2, 0.9]
    box = [confidence, 0.5, 0.5, box_size, box_size]
    bias = np.array(class_scores + box + [0.0] * 5, np.float32)
    out_layer = state.params["head"]["out"]
    params = jax.tree.map(lambda x: x, state.params)  # a copy to edit
    kernel = np.asarray(out_layer["kernel"]) * kernel_scale
    params["head"]["out"] = {"kernel": kernel, "bias": bias}
    tiny.save_checkpoint(config, state.replace(params=params), workdir)
    atomic_write_text(workdir / CONFIG_FILE, config.to_json_best_effort(indent=2))
    atomic_write_text(workdir / CLASSES_FILE, json.dumps(synthetic_shapes.CLASS_NAMES))
    return workdir


def test_the_command_writes_the_boxes_above_its_score_threshold_in_pixels(
    tmp_path, capsys, monkeypatch
):
    workdir = _uniform_output_run(tmp_path)  # each cell's box is the cell itself
    image = _image(tmp_path / "street.png", 80, 48)  # cells of 20 × 12 pixels
    cells = [[c * 20, r * 12, c * 20 + 20, r * 12 + 12] for r in range(4) for c in range(4)]

    def detections(threshold: str) -> list[dict]:
        argv = ["--workdir", str(workdir), "--out", str(tmp_path / threshold)]
        predict.main([*argv, "--score-threshold", threshold, image])
        return _record(tmp_path / threshold)[image]["detections"]

    found = detections("0.5")  # the rectangle (0.6) and the cross (0.9) in every cell
    assert sorted((d["class"], d["box"]) for d in found) == sorted(
        (name, box) for name in ("rectangle", "cross") for box in cells
    )
    expected = {"rectangle": (1, pytest.approx(0.6)), "cross": (4, pytest.approx(0.9))}
    assert all((d["label"], d["score"]) == expected[d["class"]] for d in found)
    assert len(detections("0.25")) == 3 * 16  # the ellipse (0.3) too
    assert detections("0.95") == []
    assert "0 detections in 1 image, by the checkpoint of step 0 →" in capsys.readouterr().out
    # --drawing-threads reaches predict_files (None, its own default, when not given).
    predict_files, given = predict.predict_files, []

    def noted(*args, drawing_threads, **kwargs):
        given.append(drawing_threads)
        return predict_files(*args, drawing_threads=drawing_threads, **kwargs)

    monkeypatch.setattr(predict, "predict_files", noted)
    argv = ["--workdir", str(workdir), "--out", str(tmp_path / "in_turn"), image]
    predict.main([*argv, "--drawing-threads", "0"])
    predict.main(argv)
    assert given == [0, None]
    assert _record(tmp_path / "in_turn")[image]["detections"] == detections("0.25")


def test_a_jpeg_photos_drawing_is_a_sharp_jpeg_and_any_other_images_a_lossless_png(tmp_path):
    detector = Detector.from_workdir(_uniform_output_run(tmp_path), score_threshold=0.5)
    y, x = np.mgrid[0:96, 0:160]  # a smooth photo: JPEG's own error is small on it
    smooth = np.stack([x * 1.5, y * 2.5, (x + y) % 256], axis=-1).astype(np.uint8)
    for name in ("photo.jpg", "scan.png"):
        Image.fromarray(smooth).save(tmp_path / name)
    paths = [str(tmp_path / name) for name in ("photo.jpg", "scan.png")]
    record, _ = predict.predict_files(detector, paths, tmp_path / "out")
    assert [record[path]["drawing"] for path in paths] == ["photo.jpg", "scan.png"]
    for path, fmt in zip(paths, ("JPEG", "PNG"), strict=True):
        image = predict.read_image(path)
        expected = np.asarray(drawings.draw_detections(image, detector(image)), np.float32)
        with Image.open(tmp_path / "out" / record[path]["drawing"]) as written:
            assert written.format == fmt
            error = np.abs(np.asarray(written, np.float32) - expected)
        if fmt == "PNG":
            assert error.max() == 0
        else:  # sharp: 2.3 and 2.9 levels; with colour subsampling 11 and 15; quality 75: 8, 10
            lines = np.any(expected != np.asarray(image, np.float32), axis=-1)
            assert lines.mean() > 0.1  # 32 boxes and their labels are drawn
            assert error.mean() < 4 and error[lines].mean() < 5, (error.mean(), error[lines].mean())


def _cells(width: int, height: int, grid: int = 4) -> list[list[float]]:
    """The pixel boxes of a ``grid``×``grid`` image's cells, row by row."""
    w, h = width / grid, height / grid
    return [[c * w, r * h, (c + 1) * w, (r + 1) * h] for r in range(grid) for c in range(grid)]


def test_images_detected_in_batches_each_get_their_own_pixels(tmp_path):
    workdir = _uniform_output_run(tmp_path)  # each cell's box is the cell itself
    sizes = [(80, 48), (40, 24), (64, 64), (20, 100), (48, 80)]
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (h, w, 3), np.uint8) for w, h in sizes]
    detector = Detector.from_workdir(workdir, score_threshold=0.85)  # the cross alone
    # Batches of 2, 2 and 1; one batch of 5, padded to 8; one image at a time.
    for found in (
        detector.detect_batch(pixels, batch_size=2),
        detector.detect_batch(pixels),
        [detector(image) for image in pixels],
    ):
        assert len(found) == len(sizes)
        for detections, (width, height) in zip(found, sizes, strict=True):
            assert set(detections.class_names) == {"cross"}
            np.testing.assert_allclose(
                sorted(detections.boxes.tolist()), sorted(_cells(width, height)), atol=1e-3
            )
    for one_image in (pixels[0], pixels[0][..., 0], Image.fromarray(pixels[0]), "a.jpg"):
        with pytest.raises(ValueError, match=r"a list of images; for one image, call the detector"):
            detector.detect_batch(one_image)
    # Any iterable, or an (N, H, W) stack of greyscale images; a bad one is named by index.
    same_size = [image[:24, :20] for image in pixels]
    from_generator = detector.detect_batch(image for image in same_size)
    from_stack = detector.detect_batch(np.stack(same_size)[..., 0])
    assert len(from_generator) == len(from_stack) == len(sizes)
    with pytest.raises(ValueError, match=r"^images\[1\]: image must be .*shape \(24, 20, 2\)\.$"):
        detector.detect_batch([same_size[0], same_size[1][..., :2]])
    with pytest.raises(ValueError, match=r"batch_size must be .*got 0"):
        detector.detect_batch(pixels, batch_size=0)


def test_batched_detections_are_each_images_own_in_its_order(tmp_path):
    # Each image's detections depend on its content, so a mix-up of rows, or of a row with
    # the padding, shows.
    workdir = _uniform_output_run(tmp_path, kernel_scale=0.2, confidence=0.5)
    detector = Detector.from_workdir(workdir, score_threshold=0.0)
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (24 + 8 * i, 40 - 4 * i, 3), np.uint8) for i in range(5)]
    one_by_one = [detector(image) for image in images]
    assert len({tuple(d.scores[:3].round(4)) for d in one_by_one}) == len(images)  # distinct
    assert all(d.scores[9] < 0.99 for d in one_by_one)  # no ties at the clip to 1
    for batch_size in (2, 3, 16):  # batches padded to 2 and 4, or one padded to 8
        batched = detector.detect_batch(images, batch_size=batch_size)
        for alone, together in zip(one_by_one, batched, strict=True):
            # The best ten: further down, scores within float rounding may swap places.
            np.testing.assert_allclose(together.scores[:10], alone.scores[:10], atol=1e-5)
            np.testing.assert_allclose(together.boxes[:10], alone.boxes[:10], atol=1e-3)
            assert together.class_names[:10] == alone.class_names[:10]


@pytest.mark.usefixtures("workdir")  # its stand-in restores the run once for the three calls
def test_the_command_gives_the_same_record_whatever_its_batch_size(tmp_path):
    workdir = _uniform_output_run(tmp_path)
    images = [_image(tmp_path / f"in/{i}.png", 20 + 12 * i, 60 - 8 * i, seed=i) for i in range(5)]
    (tmp_path / "in/2.png").write_bytes(b"not an image")  # a failure inside a batch
    records = {}
    for batch_size in ("1", "2", "8"):
        out = tmp_path / f"out{batch_size}"
        argv = ["--workdir", str(workdir), "--out", str(out), "--batch-size", batch_size]
        with pytest.raises(SystemExit):
            predict.main([*argv, "--score-threshold", "0.85", *images])
        records[batch_size] = _record(out)
        assert sorted(p.name for p in out.glob("*.png")) == ["0.png", "1.png", "3.png", "4.png"]
    for record in (records["2"], records["8"]):  # the same, to float rounding
        assert record.keys() == records["1"].keys()
        for key, entry in record.items():
            assert entry["drawing"] == records["1"][key]["drawing"]
            found, alone = entry["detections"], records["1"][key]["detections"]
            assert [d["class"] for d in found] == [d["class"] for d in alone]
            np.testing.assert_allclose(
                [d["box"] + [d["score"]] for d in found],
                [d["box"] + [d["score"]] for d in alone],
                atol=1e-3,
            )
    assert list(records["1"]) == [images[i] for i in (0, 1, 3, 4)]
    # In Python, one folder given alone is one path, not its characters. (The settings the
    # command passes: the fixture's stand-in has that detector already.)
    nms = {"iou_threshold": None, "max_detections": None}
    detector = Detector.from_workdir(workdir, checkpoint="latest", score_threshold=0.85, **nms)
    alone = predict.predict_files(detector, str(tmp_path / "in"), tmp_path / "alone")
    assert list(alone.images) == list(records["1"]) and list(alone.failed) == [images[2]]
    for i in (0, 1, 3, 4):
        boxes = [d["box"] for d in records["1"][images[i]]["detections"]]
        np.testing.assert_allclose(
            sorted(boxes), sorted(_cells(20 + 12 * i, 60 - 8 * i)), atol=1e-3
        )


@pytest.mark.usefixtures("workdir")  # its stand-in restores the run once for both calls
def test_drawings_made_on_threads_are_those_made_in_turn_in_input_order(tmp_path):
    # 32 boxes an image, of two classes: each cell's, as in the tests above.
    detector = Detector.from_workdir(_uniform_output_run(tmp_path), score_threshold=0.5)
    # Named against their input order, of other sizes: what finishes first is no guide.
    names = ["f", "a", "e", "b", "d", "c"]
    images = [
        _image(tmp_path / f"in/{name}.png", 64 - 6 * i, 24 + 6 * i, seed=i)
        for i, name in enumerate(names)
    ]
    runs = {}
    for threads in (0, 3):
        out = tmp_path / f"threads{threads}"
        runs[threads] = predict.predict_files(
            detector, images, out, batch_size=4, drawing_threads=threads
        )
        assert list(runs[threads].images) == images
        assert list(_record(out)) == images
    assert runs[3].images == runs[0].images
    for image, entry in runs[0].images.items():
        in_turn = np.asarray(Image.open(tmp_path / "threads0" / entry["drawing"]))
        threaded = np.asarray(Image.open(tmp_path / "threads3" / entry["drawing"]))
        np.testing.assert_array_equal(threaded, in_turn)
        assert (in_turn != np.asarray(Image.open(image))).any()


@pytest.mark.parametrize("threads", [0, 3])
def test_a_drawing_that_cannot_be_written_stops_the_call_and_its_threads(
    workdir, tmp_path, monkeypatch, threads
):
    detector = Detector.from_workdir(workdir, score_threshold=0.0)
    images = [_image(tmp_path / f"in/{i}.png", 32, 32, seed=i) for i in range(10)]
    out = tmp_path / "out"
    earlier = predict.predict_files(detector, images[:2], out).images
    write, writes = predict.atomic_write_bytes, []

    def disk_full_at_the_third(path, data):
        writes.append(path)
        if len(writes) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        time.sleep(0.05)  # a write still running when the call raised would land later
        write(path, data)

    monkeypatch.setattr(predict, "atomic_write_bytes", disk_full_at_the_third)
    with pytest.raises(errors.MachineError, match=r"Cannot write into the output folder .*out"):
        predict.predict_files(detector, images, out, batch_size=2, drawing_threads=threads)
    files = sorted(os.listdir(out))
    time.sleep(0.3)
    assert sorted(os.listdir(out)) == files  # no drawing is written after the call
    assert len(writes) < len(images)  # the drawings not yet started were cancelled
    if not threads:
        assert len(writes) == 3  # in turn: nothing drawn after the failed write
    assert _record(out) == earlier  # the earlier call's results are left as they were
    assert all((out / entry["drawing"]).is_file() for entry in earlier.values())


def test_the_main_thread_waits_for_slow_drawings_holding_a_bounded_number(
    workdir, tmp_path, monkeypatch
):
    # A folder of photos is not read into memory while the drawings lag behind.
    detector = Detector.from_workdir(workdir, score_threshold=0.0)
    images = [_image(tmp_path / f"in/{i}.png", 32, 32, seed=i) for i in range(40)]
    detect, detected, go = detector.detect_batch, [], threading.Event()

    def counted(batch, **kwargs):
        detected.extend(batch)
        return detect(batch, **kwargs)

    write = predict._write_drawing

    def held(*args):
        go.wait(10)
        return write(*args)

    monkeypatch.setattr(detector, "detect_batch", counted)
    monkeypatch.setattr(predict, "_write_drawing", held)
    call = threading.Thread(
        target=predict.predict_files,
        args=(detector, images, tmp_path / "out"),
        kwargs={"batch_size": 4, "drawing_threads": 2},
    )
    call.start()
    most = 4 + 2 * 2 + 4  # a batch and two a thread waiting, and the batch that overflowed
    deadline = time.monotonic() + 60
    while len(detected) < most and time.monotonic() < deadline:  # the first batch compiles
        time.sleep(0.05)
    time.sleep(1.0)  # time for a few batches more, were the main thread not waiting
    assert len(detected) == most
    go.set()
    call.join()
    assert len(detected) == len(images)


def test_the_next_batch_is_read_while_one_is_detected(workdir, tmp_path, monkeypatch):
    detector = Detector.from_workdir(workdir, score_threshold=0.0)
    images = [_image(tmp_path / f"in/{i}.png", 32, 32, seed=i) for i in range(4)]
    read_input, second_batch_read = predict._read_input, threading.Event()

    def noted(path):
        image = read_input(path)
        if os.fspath(path) == images[2]:
            second_batch_read.set()
        return image

    detect, read_during_detection = detector.detect_batch, []

    def detect_waiting(batch, **kwargs):
        # The second batch's first image is read during the first detection.
        read_during_detection.append(second_batch_read.wait(10))
        return detect(batch, **kwargs)

    monkeypatch.setattr(predict, "_read_input", noted)
    monkeypatch.setattr(detector, "detect_batch", detect_waiting)
    run = predict.predict_files(detector, images, tmp_path / "out", batch_size=2, drawing_threads=1)
    assert read_during_detection[0]  # the first detection: the second batch read meanwhile
    assert list(run.images) == images


def test_the_command_takes_nms_settings_of_its_own(tmp_path):
    # Boxes of 2 × 2 cells: a box and its row's or column's neighbour overlap by IoU 1/3
    # (0.4 where the image's edge clips one), under the run's NMS threshold of 0.45.
    workdir = _uniform_output_run(tmp_path, box_size=2.0)
    image = _image(tmp_path / "street.png", 80, 48)

    def classes_found(*flags: str) -> list[str]:
        out = tmp_path / "_".join(flags)
        argv = ["--workdir", str(workdir), "--out", str(out), "--score-threshold", "0.5"]
        predict.main([*argv, *flags, image])
        return [d["class"] for d in _record(out)[image]["detections"]]

    assert sorted(classes_found()) == ["cross"] * 16 + ["rectangle"] * 16
    suppressed = classes_found("--iou-threshold", "0.2")
    assert 0 < suppressed.count("cross") < 16 and len(suppressed) < 32
    assert classes_found("--max-detections", "5") == ["cross"] * 5  # the best five


def test_a_workdir_without_config_json_gets_advice_that_applies(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("YOLOJAX_TRACEBACK", raising=False)
    image = _image(tmp_path / "x.png", 8, 8)
    (tmp_path / "run").mkdir()
    assert _predict(tmp_path / "run", tmp_path / "out", image) == 1
    assert f"{tmp_path / 'run'} is not a training run's folder" in capsys.readouterr().err
    (tmp_path / "run" / "checkpoints").mkdir()  # a run's checkpoints, without their config
    assert _predict(tmp_path / "run", tmp_path / "out", image) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'run' / 'config.json'} does not exist" in err
    assert "Detector.from_workdir(workdir, config=...)" in err
    assert "--config" not in err  # predict has no such flag


@pytest.mark.parametrize(
    "config_file, arg",
    [
        (shapes, None),
        (voc, None),
        (voc, "vgg16"),
        (voc, "darknet,report"),
        (folder, "resnet50"),
        (folder, "tiny"),
    ],
)
def test_every_shipped_config_comes_back_from_config_json_unchanged(tmp_path, config_file, arg):
    config = config_file.get_config(arg)
    if config_file is folder:  # as a run of it has them
        config.data.folder = "/data/masks"
        config.data.class_names = ("mask", "no-mask")
    atomic_write_text(tmp_path / CONFIG_FILE, config.to_json_best_effort(indent=2))
    loaded = load_run_config(tmp_path)
    assert json.loads(loaded.to_json_best_effort()) == json.loads(config.to_json_best_effort())
    with pytest.raises(AttributeError):  # locked, like a config loaded from its file
        loaded.train.bach_size = 8


@pytest.mark.parametrize(
    "text, named",
    [
        ("{broken", "Expecting property name"),
        ('{"eval": {"every_epochs": "7"}}', "7"),
        ('{"model": {"backbone": "darknet", "neck": "fpn"}}', "model.neck is not a field"),
        ('{"model": {"grid_size": null}}', "config.model.grid_size must be a positive integer"),
        ('{"model": {"head_channels": null}, "eval": {"score_threshold": 2}}', "must be in"),
        ('{"train": 3}', "train should be a JSON object"),
    ],
)
def test_a_config_json_that_does_not_fit_names_the_file(tmp_path, text, named):
    (tmp_path / CONFIG_FILE).write_text(text)
    with pytest.raises(ValueError, match=f"{tmp_path / CONFIG_FILE} is not a config") as error:
        load_run_config(tmp_path)
    assert named in str(error.value) and "edited by hand" in str(error.value)


def test_a_config_json_with_a_field_yolojax_retired_still_loads(tmp_path):
    # eval.plus_one: configs/voc.py runs saved True until VOC's boxes became continuous.
    (tmp_path / CONFIG_FILE).write_text('{"eval": {"plus_one": true, "score_threshold": 0.1}}')
    loaded = load_run_config(tmp_path)
    assert loaded.eval.score_threshold == 0.1 and "plus_one" not in loaded.eval
    # Nor does a resume of that run count it as a change of its config.
    changes = config_changes(tmp_path, '{"eval": {"score_threshold": 0.2}}')
    assert changes == ["eval.score_threshold: 0.1 -> 0.2"]


def test_a_workdir_that_is_no_run_folder_says_which_folder_to_give(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"The workdir {tmp_path / 'run'} does not exist"):
        load_run_config(tmp_path / "run")
    (tmp_path / "run").write_text("")
    with pytest.raises(FileNotFoundError, match=f"The workdir {tmp_path / 'run'} is a file"):
        load_run_config(tmp_path / "run")
    (tmp_path / "run").unlink()
    run = tmp_path / "run"
    run.mkdir()  # an empty folder: no run's, and none to give the config of
    with pytest.raises(
        FileNotFoundError,
        match=rf"^{run} is not a training run's folder: it has neither config\.json nor "
        r"checkpoints/\. Give the folder train\.py wrote \(its --workdir\)\.$",
    ):
        load_run_config(run)
    (run / "checkpoints").mkdir()  # a run's checkpoints without its config: give it
    with pytest.raises(
        FileNotFoundError,
        match=rf"^{run}/config\.json does not exist, beside the run's checkpoints in {run}: "
        r"train\.py writes the run's config there; for a run without it, use the config",
    ):
        load_run_config(run)
    (run / "config.json").write_text(default_config().to_json_best_effort())
    # Where the user's --workdir was a folder of the run, or the folder of its runs.
    with pytest.raises(
        FileNotFoundError,
        match=rf"^{run}/checkpoints/config\.json does not exist: {run}/checkpoints is a folder "
        rf"inside the training run {run}; give the run's folder, {run}\.$",
    ):
        load_run_config(run / "checkpoints")
    (run / "checkpoints" / "100").mkdir()  # a step's folder: the run two levels up
    with pytest.raises(FileNotFoundError, match=rf"inside the training run {run}; give the"):
        load_run_config(run / "checkpoints" / "100")
    (tmp_path / "bert").mkdir()  # another tool's config.json: no run
    (tmp_path / "bert" / "config.json").write_text('{"hidden_size": 768}')
    with pytest.raises(
        FileNotFoundError,
        match=rf"^{tmp_path}/config\.json does not exist: {tmp_path} holds the training runs "
        rf"run; give one of those folders, such as {run}\.$",
    ):
        load_run_config(tmp_path)
    # A run's checkpoints without their config, in a project with a config.json of its own.
    (run / "config.json").unlink()
    (tmp_path / "config.json").write_text('{"project": "masks"}')
    with pytest.raises(FileNotFoundError, match=r"does not exist, beside the run's checkpoints"):
        load_run_config(run)


def test_a_folder_stands_for_its_image_files_in_name_order(workdir, tmp_path, capsys):
    folder = tmp_path / "photos"
    b = _image(folder / "b.PNG", 30, 20)
    a = _image(folder / "a.jpg", 40, 30, seed=1)
    c = _image(folder / "c.jfif", 20, 10, seed=2)  # a JPEG too, as some browsers save them
    (folder / "notes.txt").write_text("not an image\n")  # not an image extension: left out
    (folder / "._a.jpg").write_bytes(b"\0\5\26\7")  # macOS metadata, hidden: left out
    _image(folder / "nested" / "c.jpg", 8, 8)  # subfolders are not read
    out = tmp_path / "out"

    # The folder's a.jpg named again another way is still one image.
    assert _predict(workdir, out, str(folder), str(folder / "." / "a.jpg")) == 0

    record = _record(out)
    assert list(record) == [a, b, c]
    assert [record[p]["drawing"] for p in (a, b, c)] == ["a.jpg", "b.png", "c.jpg"]
    assert Image.open(out / "b.png").size == (30, 20)
    assert "Skipping" not in capsys.readouterr().err


def test_a_link_in_a_folder_whose_photo_is_gone_is_named_as_such(workdir, tmp_path, capsys):
    folder = tmp_path / "photos"
    a = _image(folder / "a.jpg", 40, 30)
    gone = folder / "gone.jpg"
    gone.symlink_to(tmp_path / "moved_away.jpg")
    (tmp_path / "album").mkdir()
    (folder / "album.jpg").symlink_to(tmp_path / "album")  # a folder, as a real one: left out
    out = tmp_path / "out"

    assert _predict(workdir, out, str(folder)) == 1

    assert list(_record(out)) == [a]
    err = capsys.readouterr().err
    assert f"Skipping {gone}: a link to a missing file" in err and "album" not in err


def test_a_saved_none_that_the_field_allows_loads(tmp_path):
    config = shapes.get_config()
    config.model.head_channels = None  # documented as "0 or None"
    atomic_write_text(tmp_path / CONFIG_FILE, config.to_json_best_effort(indent=2))
    assert load_run_config(tmp_path).model.head_channels is None


def test_a_16_bit_greyscale_png_reads_as_the_pipeline_decodes_it(tmp_path):
    pixels = np.array([[0, 255, 256, 40000], [65535, 1000, 30000, 12345]], np.uint16)
    Image.fromarray(pixels).save(tmp_path / "depth.png")
    decoded = tf.io.decode_image((tmp_path / "depth.png").read_bytes(), channels=3)
    np.testing.assert_array_equal(predict.read_image(tmp_path / "depth.png"), decoded.numpy())


def test_the_detector_reads_paths_pil_images_rgba_and_greyscale_as_their_rgb(workdir, tmp_path):
    detector = Detector.from_workdir(workdir, score_threshold=0.0)
    rgb = np.random.default_rng(1).integers(0, 256, (24, 40, 3), np.uint8)
    expected = detector(rgb)
    assert len(expected.boxes) > 0
    Image.fromarray(rgb).save(tmp_path / "a.png")
    (tmp_path / "folder").mkdir()
    rgba = np.concatenate([rgb, np.full((24, 40, 1), 7, np.uint8)], axis=-1)
    for image in (
        tmp_path / "a.png",
        str(tmp_path / "a.png"),
        Image.fromarray(rgb),
        rgba,  # the alpha channel is dropped, as the input pipeline's decoder drops it
    ):
        np.testing.assert_array_equal(detector(image).boxes, expected.boxes)
    grey = rgb[..., 0]
    np.testing.assert_array_equal(
        detector(grey).boxes, detector(np.repeat(grey[..., None], 3, axis=-1)).boxes
    )
    with pytest.raises(ValueError, match=r"got an array of shape \(24, 40, 2\)"):
        detector(rgb[..., :2])
    with pytest.raises(ValueError, match=r"folder.*: a folder, not an image file"):
        detector(tmp_path / "folder")


def test_the_detector_reads_an_image_files_bytes_and_file_object_upright(workdir, tmp_path):
    # A service's upload: its bytes were refused as "an array of shape ()".
    detector = Detector.from_workdir(workdir, score_threshold=0.0)
    stored = np.random.default_rng(2).integers(0, 256, (40, 24, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone's portrait photo, stored on its side
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    contents = (tmp_path / "phone.png").read_bytes()
    expected = detector(np.rot90(stored, k=-1))  # upright: 40 wide, 24 high
    assert len(expected.boxes) > 0
    for image in (contents, io.BytesIO(contents)):
        np.testing.assert_array_equal(detector(image).boxes, expected.boxes)
    with open(tmp_path / "phone.png", "rb") as file:
        for found in detector.detect_batch([contents, file]):
            np.testing.assert_allclose(found.boxes, expected.boxes, atol=1e-3)
    with pytest.raises(ValueError, match=r"images\[1\]: Cannot read image <3 bytes>: not an"):
        detector.detect_batch([contents, b"abc"])
    with pytest.raises(ValueError, match="detect_batch takes a list of images"):
        detector.detect_batch(contents)
    with pytest.raises(ValueError, match=r"contents \(bytes, a binary file object\); got NoneType"):
        detector(None)


def test_the_detectors_nms_settings_take_numpy_numbers(workdir):
    detector = Detector.from_workdir(workdir, iou_threshold=np.float32(0.25))
    assert detector.config.eval.iou_threshold == pytest.approx(0.25)
    assert load_run_config(workdir).eval.iou_threshold == 0.45  # the run's own is unchanged


def test_a_detectors_settings_stay_those_it_was_built_with(workdir):
    # Compiled per batch shape, a setting changed afterwards applied to some shapes only.
    config = load_run_config(workdir)
    model, state, _ = train_lib.restore_trained_state(config, workdir)
    names = [f"shape{i}" for i in range(config.model.num_classes)]
    detector = Detector(model, train_lib.model_variables(state), config, names, score_threshold=0)
    image = np.random.default_rng(0).integers(0, 256, (24, 40, 3), np.uint8)
    found = len(detector(image).boxes)
    assert found > 1
    config.eval.max_detections = 1  # the caller's config, edited afterwards
    assert [len(d.boxes) for d in detector.detect_batch([image] * 3)] == [found] * 3
    detector.config.eval.max_detections = 1  # a copy
    assert [len(d.boxes) for d in detector.detect_batch([image] * 2)] == [found] * 2
    with pytest.raises(AttributeError):
        detector.score_threshold = 0.5
    with pytest.raises(TypeError, match="class_names must be a list of names, not one string"):
        Detector(model, train_lib.model_variables(state), config, "abcde")
    with pytest.raises(TypeError, match=r"got a TrainState\. For a train state, pass yolojax\."):
        Detector(model, state, config, ["a", "b", "c", "d", "e"])


def test_the_detector_copies_its_weights_to_the_device_once(workdir):
    detector = Detector.from_workdir(workdir, score_threshold=0.0)
    image = np.zeros((24, 40, 3), np.uint8)
    expected = detector(image)
    # Only the image goes to the device per call (explicitly); the weights are there already.
    with jax.transfer_guard_host_to_device("disallow"):
        np.testing.assert_array_equal(detector(image).boxes, expected.boxes)


def test_a_step_given_as_text_is_a_step(workdir):
    from_workdir = Detector.from_workdir.__func__  # the module's stand-in caches by settings
    detector = from_workdir(Detector, workdir, checkpoint="0")
    assert detector.score_threshold == 0.25 and detector.step == 0  # the step restored
    with pytest.raises(checkpoints.NoCheckpointError, match=r"step 5 .*available steps: \[0\]"):
        from_workdir(Detector, workdir, checkpoint="5")


def test_a_config_counting_the_datasets_classes_takes_the_runs_class_names(workdir, tmp_path):
    # configs/folder.py's num_classes=0: "as many as the dataset has", here the run's count.
    config = load_run_config(workdir)
    config.model.num_classes = 0
    from_workdir = _UNCACHED_FROM_WORKDIR  # a config is no key for the stand-in's cache
    with pytest.raises(ValueError, match=r"has no classes\.json to count them"):
        from_workdir(Detector, workdir, config=config)
    run = tmp_path / "run"
    shutil.copytree(workdir, run)
    names = [f"shape{i}" for i in range(load_run_config(workdir).model.num_classes)]
    (run / "classes.json").write_text(json.dumps(names))
    detector = from_workdir(Detector, run, config=config)
    assert detector.class_names == names
    assert detector.config.model.num_classes == len(names) and config.model.num_classes == 0


def test_the_constructor_names_a_config_that_is_none_and_variables_of_another_model(workdir):
    detector = Detector.from_workdir(workdir)
    config, names = detector.config, detector.class_names
    model, state, _ = train_lib.restore_trained_state(config, workdir)
    variables = train_lib.model_variables(state)
    for not_a_config in (config.to_dict(), "configs/shapes.py"):
        with pytest.raises(TypeError, match=r"config must be an ml_collections\.ConfigDict"):
            Detector(model, variables, not_a_config, names)
        with pytest.raises(TypeError, match="load_run_config"):
            _UNCACHED_FROM_WORKDIR(Detector, workdir, config=not_a_config)
    # A config counting the dataset's classes takes the names given, also a frozen one.
    counting = config.copy_and_resolve_references()
    counting.model.num_classes = 0
    for given in (counting, ml_collections.FrozenConfigDict(counting)):
        assert Detector(model, variables, given, names).config.model.num_classes == len(names)
        assert given.model.num_classes == 0  # the caller's stays as it was, a frozen one's
        assert ml_collections.ConfigDict(given).model.num_classes == 0  # copies too
    with pytest.raises(ValueError, match="class_names must name the model's classes"):
        Detector(model, variables, counting, [])
    # Names as a NumPy array (np.loadtxt, a dataset's metadata): taken as the list's.
    from_array = Detector(model, variables, config, np.array(names))
    assert from_array.class_names == names and all(type(n) is str for n in from_array.class_names)
    assert from_array.step is None  # built by hand: no checkpoint's step
    with pytest.raises(ValueError) as error:  # one name short
        Detector(model, variables, config, names[:-1])
    assert str(error.value) == (
        f"config.model.num_classes={len(names)} but class_names has {len(names) - 1} classes "
        f"{tuple(names[:-1])}: pass the model's {len(names)} class names, in label order."
    )
    # Variables of another model, or params without their batch statistics: named as such
    # at the first call, with what to pass instead (were flax's scope errors).
    other = config.copy_and_resolve_references()
    other.model.num_classes = len(names) + 2
    _, other_state, _ = train_lib.initial_state(other, other.train.batch_size)
    image = np.zeros((24, 40, 3), np.uint8)
    wrong = [train_lib.model_variables(other_state), {"params": variables["params"]}]
    for variables_of_another_model in wrong:
        detector = Detector(model, variables_of_another_model, config, names)
        with pytest.raises(ValueError, match=r"variables do not fit its model .*model_variables"):
            detector(image)
    # A model built from another config: named at once, with the field that differs.
    other_model, _, _ = train_lib.initial_state(other, other.train.batch_size)
    with pytest.raises(ValueError, match=rf"The model has num_classes={len(names) + 2} but"):
        Detector(other_model, variables, config, names)


def test_outputs_that_are_not_finite_are_named_not_taken_for_no_objects(workdir):
    # NaN outputs scored 0 once clipped: a diverged model detected nothing, without an error.
    config = load_run_config(workdir)
    model, state, _ = train_lib.restore_trained_state(config, workdir)
    variables = train_lib.model_variables(state)
    # A first kernel of 1e38s: a black image's activations stay finite (0 × 1e38), a white
    # one's overflow to infinity and, past the next layer's mixed signs, NaN.
    first = variables["params"]["backbone"]["conv_0"]["conv"]
    first["kernel"] = np.full_like(first["kernel"], 1e38)
    names = [f"shape{i}" for i in range(config.model.num_classes)]
    detector = Detector(model, variables, config, names, score_threshold=0)
    black, white = np.zeros((24, 40, 3), np.uint8), np.full((24, 40, 3), 255, np.uint8)
    assert isinstance(detector(black), ImageDetections)  # finite: detected as usual
    with pytest.raises(ValueError, match=r"NaN or infinite for image\(s\) \[0\], so nothing"):
        detector(white)
    # Counted across detect_batch's calls of the model (of two images each here): the call
    # of images 2 and 3 stops it.
    with pytest.raises(ValueError, match=r"for image\(s\) \[3\], so nothing can be"):
        detector.detect_batch([black, black, black, white, white], batch_size=2)


def test_the_command_names_the_files_whose_outputs_are_not_finite(tmp_path, capsys):
    # A run whose weights are NaN (a training that diverged): once, no image found anything.
    config = tiny.tiny_config(str(tmp_path / "tfds"))
    _, state, _ = train_lib.initial_state(config, config.train.batch_size)
    nan_state = state.replace(params=jax.tree.map(lambda p: np.full_like(p, np.nan), state.params))
    run = tmp_path / "nan-run"
    tiny.save_checkpoint(config, nan_state, run)
    atomic_write_text(run / CONFIG_FILE, config.to_json_best_effort(indent=2))
    first, second = _image(tmp_path / "a.png", 40, 30), _image(tmp_path / "b.jpg", 20, 20)
    assert _predict(run, tmp_path / "out", first, second) == 1
    error = capsys.readouterr().err
    assert f"NaN or infinite for image(s) [{first}, {second}], so nothing" in error
    assert not (tmp_path / "out" / "detections.json").exists()


def test_bad_arguments_are_refused_before_any_model_is_read(tmp_path, capsys):
    # The workdir does not exist: the arguments are checked before it is looked at (before
    # the seconds TensorFlow's import and the restore take).
    image, missing = _image(tmp_path / "a.jpg", 8, 8), tmp_path / "no-run"
    (tmp_path / "out").write_text("")
    assert _predict(missing, tmp_path / "out", image) == 2
    assert f"--out {tmp_path / 'out'} is a file: choose another" in capsys.readouterr().err
    for flags, message in (
        (["--score-threshold", "25"], "--score-threshold must be in [0, 1]; got 25.0"),
        (["--iou-threshold", "-1"], "--iou-threshold must be in [0, 1]; got -1.0"),
        (["--max-detections", "0"], "--max-detections must be at least 1; got 0"),
        (["--batch-size", "0"], "--batch-size must be at least 1; got 0"),
        (["--drawing-threads", "-1"], "--drawing-threads must be at least 0; got -1"),
        # "$OUT" unset: the drawings went into the current folder, replacing earlier ones.
        (["--out", ""], "argument --out: is empty: give a path"),
    ):
        with pytest.raises(SystemExit) as exit_request:
            predict.main(["--workdir", str(missing), *flags, image])
        assert exit_request.value.code == 2
        assert message in capsys.readouterr().err


def test_an_output_path_that_is_a_file_is_named(workdir, tmp_path):
    (tmp_path / "out").write_text("")
    detector = Detector.from_workdir(workdir)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=re.escape(f"{out} cannot be written: {out} is a file.")):
        predict.predict_files(detector, [], out)
    # One that cannot be made: here under a file, or under a link to a missing folder (the
    # error was mkdir's "File exists"), before anything is read.
    with pytest.raises(ValueError, match=re.escape(f"{out}/sub cannot be written: {out} is a")):
        predict.predict_files(detector, [], out / "sub")
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    with pytest.raises(
        ValueError, match=re.escape(f"link is a link to {tmp_path / 'missing'}, which does not")
    ):
        predict.predict_files(detector, [], tmp_path / "link")
    assert not (tmp_path / "missing").exists()


def test_a_boxs_outline_is_drawn_on_the_pixels_the_box_covers():
    # Continuous pixels: [14, 20, 30, 36] covers columns 14..29 and rows 20..35. The right
    # and bottom lines were drawn a pixel outside (and off the image for a box of all of it).
    image = np.zeros((60, 50, 3), np.uint8)
    for box in ([14.0, 20.0, 30.0, 36.0], [0.0, 0.0, 50.0, 60.0]):
        detections = ImageDetections(
            boxes=np.array([box], np.float32),
            scores=np.array([0.5], np.float32),
            labels=np.array([0]),
            class_names=["cat"],
        )
        drawn = np.asarray(drawings.draw_detections(image, detections)).any(axis=-1)
        drawn[: max(int(box[1]) - 1, 0)] = False  # leaves out the label above the box
        rows, cols = np.nonzero(drawn)
        assert [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1] == box


def test_a_label_at_the_right_edge_is_drawn_inside_the_image():
    detections = ImageDetections(
        boxes=np.array([[90.0, 14.0, 100.0, 20.0]], np.float32),
        scores=np.array([0.5], np.float32),
        labels=np.array([0]),
        class_names=["cat"],
    )
    canvas = drawings.draw_detections(np.zeros((20, 100, 3), np.uint8), detections)
    # The label's box ("cat 0.50", filled with the class colour) started at the box's left
    # edge, x = 90, and was cut off at 100; now it ends there.
    assert canvas.getpixel((99, 4)) == canvas.getpixel((70, 4)) == drawings.class_color(0)


def test_labels_are_the_pixels_pillow_draws_in_place():
    # The labels are pasted from tiles rendered once: they must be what drawing each one in
    # place, over the boxes drawn before it, gives (at whole pixels, where labels are put).
    rng = np.random.default_rng(0)
    corners = rng.integers(-5, 150, (30, 2))
    boxes = np.concatenate([corners, corners + rng.integers(5, 60, (30, 2))], axis=1)
    labels = rng.integers(0, 4, 30)
    detections = ImageDetections(
        boxes=boxes.astype(np.float32),  # some past each edge, many overlapping
        scores=np.sort(rng.uniform(0, 1, 30)).astype(np.float32)[::-1],
        labels=labels,
        class_names=[["cat", "dog", "traffic light", "x"][label] for label in labels],
    )
    image = rng.integers(0, 256, (120, 160, 3), np.uint8)
    in_place = Image.fromarray(image)
    draw = ImageDraw.Draw(in_place)
    for box, score, label, name in reversed(list(zip(*detections, strict=True))):
        color = drawings.class_color(int(label))
        x0, y0, x1, y1 = box.tolist()  # continuous: the last column and row are x1-1, y1-1
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], outline=color, width=2)
        left, top = box[0], max(box[1] - 12, 0)
        text_box = draw.textbbox((left, top), f"{name} {score:.2f}")
        if text_box[2] > in_place.width:  # the label moves in from the right edge
            left = max(left - (text_box[2] - in_place.width), 0)
            text_box = draw.textbbox((left, top), f"{name} {score:.2f}")
        draw.rectangle(text_box, fill=color)
        draw.text((left, top), f"{name} {score:.2f}", fill=(0, 0, 0))
    drawn = drawings.draw_detections(image, detections)
    for _ in range(2):  # the tiles rendered now, then reused
        np.testing.assert_array_equal(np.asarray(drawn), np.asarray(in_place))
        drawn = drawings.draw_detections(image, detections)


def test_boxes_and_labels_are_drawn_larger_on_large_photos():
    # Seen shrunk to a screen, a 12-megapixel photo's 2-pixel lines and 10-pixel labels
    # were faint hairlines and dots.
    assert [drawings.drawing_scale(*size) for size in ((640, 480), (959, 959), (4000, 3000))] == [
        1,
        1,
        6,
    ]
    detections = ImageDetections(
        boxes=np.array([[400.0, 1000.0, 2000.0, 2000.0]], np.float32),
        scores=np.array([0.5], np.float32),
        labels=np.array([2]),
        class_names=["cat"],
    )
    for (height, width), scale in (((480, 640), 1), ((2400, 3200), 5)):
        boxes = detections.boxes * (1 if scale == 5 else 0.2)
        canvas = np.asarray(
            drawings.draw_detections(
                np.zeros((height, width, 3), np.uint8), detections._replace(boxes=boxes)
            )
        )
        left, top = int(boxes[0, 0]), int(boxes[0, 1])
        color = drawings.class_color(2)
        # The box's left edge: 2 pixels a scale wide (inside the box, as Pillow draws it).
        row = canvas[top + 50 * scale, left : left + 12 * scale]
        assert (row == color).all(axis=-1).sum() == 2 * scale, scale
        # The label above the box, its tile filled with the class colour: its rows.
        band = canvas[max(top - 14 * scale, 0) : top, left : left + 20 * scale]
        rows = (band == color).all(axis=-1).any(axis=-1).sum()
        assert 6 * scale <= rows <= 12 * scale, (scale, rows)


def test_of_two_classes_found_on_one_box_the_better_is_drawn_on_top():
    # NMS is per class: one object may come back as two classes with the same box.
    detections = ImageDetections(
        boxes=np.array([[10.0, 30.0, 90.0, 60.0]] * 2, np.float32),
        scores=np.array([0.4, 0.3], np.float32),  # best first, as the Detector gives them
        labels=np.array([3, 1]),
        class_names=["star", "rectangle"],
    )
    canvas = drawings.draw_detections(np.zeros((60, 100, 3), np.uint8), detections)
    # The label's box above the detection's top edge, and the edge itself.
    assert canvas.getpixel((12, 20)) == canvas.getpixel((50, 30)) == drawings.class_color(3)


def test_a_classes_json_that_is_no_list_of_names_is_named(tmp_path):
    path = tmp_path / CLASSES_FILE
    assert load_class_names(tmp_path) is None  # none saved
    path.write_text('["cat", "dog"]')
    assert load_class_names(tmp_path) == ["cat", "dog"]
    for text in ('{"cat": 0}', "[cat, dog", "[]", "[1, 2]"):
        path.write_text(text)
        with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} is not a list of class"):
            load_class_names(tmp_path)


def test_a_config_of_another_class_count_than_the_run_is_named_not_its_classes_json(tmp_path):
    workdir = tmp_path  # the run's classes.json (checked before any checkpoint is read)
    atomic_write_text(workdir / CLASSES_FILE, json.dumps(synthetic_shapes.CLASS_NAMES))
    config = tiny.tiny_config(str(tmp_path / "tfds"))
    config.model.num_classes = 3  # the run has 5
    with pytest.raises(ValueError) as error:
        Detector.from_workdir(workdir, config=config)
    assert str(error.value) == (
        f"The run in {workdir} has 5 classes (classes.json), but the config has "
        "config.model.num_classes=3: pass the config the run was trained with, or leave "
        "config out to use the run's own."
    )


def test_a_panorama_over_pillows_warning_size_is_drawn_without_its_warning(
    workdir, tmp_path, monkeypatch
):
    # Pillow warns of a "decompression bomb" from 89.5 megapixels (refusing from twice
    # that): a panorama's drawing came with that warning and a library path.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40 × 40 is 1.6 times the limit
    image = _image(tmp_path / "panorama.png", 40, 40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _predict(workdir, tmp_path / "out", image) == 0
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert list(_record(tmp_path / "out")) == [image]


class _CompileCounting:
    """A model that notes the batch size of each input it is traced for (under the
    Detector's ``jit``, each is a program compiled; a persistent cache's hit is traced too),
    and counts its runs."""

    def __init__(self, model):
        self.model, self.compiled_for, self.runs = model, [], 0

    def apply(self, variables, images, **kwargs):
        self.compiled_for.append(images.shape[0])
        jax.debug.callback(self._ran)
        return self.model.apply(variables, images, **kwargs)

    def _ran(self):
        self.runs += 1


def _compile_counting_detector(tmp_path):
    """A Detector of tests/tiny.py's model (zero weights: no checkpoint to restore) and its
    :class:`_CompileCounting` model."""
    config = tiny.tiny_config(str(tmp_path / "tfds"))  # no data is read
    model = get_model(config.model)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), jax.numpy.zeros((1, 64, 64, 3)), train=False)
    )
    variables = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
    counting = _CompileCounting(model)
    names = list(synthetic_shapes.CLASS_NAMES)
    return Detector(counting, variables, config, names, score_threshold=0.0), counting


def test_the_last_short_batch_of_several_compiles_nothing_new(tmp_path):
    detector, model = _compile_counting_detector(tmp_path)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (30 + 7 * i, 50 - 3 * i, 3), np.uint8) for i in range(9)]
    # 4 + 4 + 1 images: the last runs padded to 4, the program the others compiled.
    found = detector.detect_batch(images, batch_size=4)
    assert len(found) == len(images)
    assert model.compiled_for == [4]
    # A call of one batch still runs at its own power of two (a small call stays fast),
    found = detector.detect_batch(images[:1], batch_size=4)
    assert model.compiled_for == [4, 1]
    # and the last of several runs at it too, once it is compiled.
    detector.detect_batch(images, batch_size=4)
    detector.detect_batch(images[:2], batch_size=4, pad_to_batch_size=True)
    assert model.compiled_for == [4, 1]
    alone = detector(images[-1])
    np.testing.assert_allclose(found[0].scores, alone.scores, atol=1e-5)
    np.testing.assert_allclose(found[0].boxes, alone.boxes, atol=1e-3)


def test_a_folders_last_short_batch_compiles_nothing_new(tmp_path):
    detector, model = _compile_counting_detector(tmp_path)
    images = [_image(tmp_path / f"in/{i}.png", 24 + 4 * i, 40, seed=i) for i in range(7)]
    (tmp_path / "in/1.png").write_bytes(b"not an image")  # a first batch of 2 readable
    # Batches of 3, 3 and 1 paths: 2, 3 and 1 images, each padded to 3.
    run = predict.predict_files(detector, images, tmp_path / "out", batch_size=3)
    assert len(run.images) == 6 and list(run.failed) == [images[1]]
    assert model.compiled_for == [3]
    # One batch: its own power of two.
    predict.predict_files(detector, images[2:4], tmp_path / "out2", batch_size=3)
    assert model.compiled_for == [3, 2]


def test_a_warmed_up_detector_compiles_nothing_for_any_call_up_to_its_batch_size(tmp_path):
    # A service's first request of each batch shape waited seconds for its compilation.
    detector, model = _compile_counting_detector(tmp_path)
    detector.warm_up(batch_size=6)
    assert model.compiled_for == [1, 2, 4, 6]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20 + i, 30, 3), np.uint8) for i in range(13)]
    detector(images[0])
    for count in range(1, len(images) + 1):
        detector.detect_batch(images[:count], batch_size=6)
    assert model.compiled_for == [1, 2, 4, 6]
    with pytest.raises(ValueError, match="batch_size must be"):
        detector.warm_up(batch_size=0)


def test_detect_batch_reads_its_images_a_batch_at_a_time(tmp_path):
    # A long list of paths is not decoded into memory before the first batch is detected.
    detector, model = _compile_counting_detector(tmp_path)
    runs_when_taken = []

    def images():
        for _ in range(10):
            runs_when_taken.append(model.runs)
            yield np.zeros((20, 30, 3), np.uint8)

    assert len(detector.detect_batch(images(), batch_size=4)) == 10
    assert runs_when_taken == [0] * 4 + [1] * 4 + [2] * 2


def test_a_folder_run_of_a_yolojax_before_its_split_by_hash_is_warned_of(tmp_path):
    # A VOC-format folder run of a yolojax before 2026-12-05 saved no class names; its
    # folder, prepared then under another name and split by a seeded permutation, is
    # prepared again with today's split: evaluate.py counted images the run trained on.
    config = folder.get_config("tiny")
    config.data.folder = str(tmp_path / "masks")
    atomic_write_text(tmp_path / CONFIG_FILE, config.to_json_best_effort(indent=2))
    with pytest.warns(
        errors.Notice, match="trained by a yolojax before 2026-12-05.*/masks has no split"
    ):
        load_run_config(tmp_path)
    config.data.class_names = ("mask", "no-mask")  # as every run since records them
    atomic_write_text(tmp_path / CONFIG_FILE, config.to_json_best_effort(indent=2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_run_config(tmp_path)
