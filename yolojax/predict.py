"""Draws a trained model's detections on images and writes them with a JSON of the boxes.

    python -m yolojax.predict --workdir runs/shapes images/*.jpg --out out/
    python -m yolojax.predict --workdir runs/shapes images/ --out out/ --batch-size 16

A folder stands for the image files in it (by extension: .jpg, .png, ...; not its
subfolders), in name order; the output folder given as an input stands for its images
without this command's drawings. For each input image ``name.ext`` it writes the drawing
``out/name.jpg`` (a JPEG photo, ``.jpg``, ``.jpeg`` or ``.jfif``, at quality 95) or ``out/name.png``
(any other image) with labelled boxes, drawn larger on large photos (``name_1.jpg``,
``name_2.jpg``, ... for later inputs of the same name, in input order, and where the folder
already holds a file of that name that is not an earlier call's drawing: an input image,
say), and
``out/detections.json``: ``{image path: {"drawing": "name.jpg", "detections": [{"box":
[xmin, ymin, xmax, ymax] (pixels), "score": s, "label": id, "class": name}, ...]}}``, with
the image paths as given.

Images are read upright, as their EXIF orientation says (a phone's portrait photo is stored
sideways); the boxes are in the pixels of the upright image.

An input that cannot be read (missing, a folder without images, not an image, truncated or
corrupt) does not stop the others: it is reported on stderr as ``Skipping <path>:
<reason>`` and left out of detections.json. The command then ends with ``N inputs could
not be read (M images were): ...`` on stderr and exit status 1 (also when no input could
be read; detections.json is then written as ``{}``, so that it never lists a previous
run's images). Otherwise it exits 0.

An output folder used before keeps only this call's results: earlier calls' drawings (those
the previous detections.json lists, and any file marked as this command's drawing of that
name in this folder, as a call that stopped before writing detections.json leaves them;
each is written whole or not at all) are removed once the new detections.json is written;
no other file is touched. A call that stops early (a full disk, Ctrl-C) leaves the previous
detections.json as it was, but the drawings it wrote already replace those of the same name.
"""

import argparse
import collections
import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from yolojax import cli, command_flags

if __name__ == "__main__":
    cli.launch()  # first, before JAX is imported: the huge-pages restart, and Ctrl-C exits

import numpy as np
from PIL import Image
from tqdm import tqdm

from yolojax import drawings, errors
from yolojax.atomic_files import (
    atomic_write_bytes,
    atomic_write_text,
    to_json,
    unwritable_reason,
)
from yolojax.checkpoints import parse_which
from yolojax.cpus import usable_cpus
from yolojax.images import IMAGE_EXTENSIONS, UnreadableImageError, read_image
from yolojax.postprocess import NonFiniteOutputsError
from yolojax.validation import check_positive_int

if TYPE_CHECKING:  # imported when used: it loads TensorFlow
    from yolojax.detector import Detector, ImageDetections

DETECTIONS_FILE = "detections.json"


class Predictions(NamedTuple):
    """What :func:`predict_files` did.

    Attributes:
      images: the record written to detections.json: ``{image path: {"drawing": file name
        in the output folder, "detections": [...]}}`` for each image read, in input order.
      failed: ``{image path: reason}`` for each input that could not be read.
    """

    images: dict[str, dict]
    failed: dict[str, str]


def _folder_images(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, by name; none if it cannot be listed (then
    :func:`read_image` reports the folder). Hidden files (macOS ``._x.jpg``) are left out;
    a link whose target is gone stays, for :func:`read_image` to report."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [
        p
        for p in entries
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not p.name.startswith(".")
        and (p.is_file() or (p.is_symlink() and not p.exists()))
    ]


def _image_files(paths: Iterable) -> list[str]:
    """``paths`` with each folder replaced by its image files (a folder without any stays,
    for :func:`read_image` to report), each file once however it is named (``ph`` and
    ``./ph/a.jpg``): the first name given is kept."""
    files = {}
    for path in map(str, paths):
        folder = Path(path)
        images = _folder_images(folder) if folder.is_dir() else []
        for name in [str(p) for p in images] or [path]:
            files.setdefault(os.path.realpath(name), name)
    return list(files.values())


@contextlib.contextmanager
def _output_errors(out_dir: Path):
    """A write into the output folder that fails (a read-only mount, a full disk) as one
    error naming the folder."""
    try:
        yield
    except OSError as error:
        raise errors.machine_error(
            f"write into the output folder {out_dir}", error, "output folder (--out)"
        ) from error


def _read_input(path: str) -> np.ndarray:
    """:func:`read_image`, for an input that :func:`_image_files` left as given: a folder
    there is one without image files."""
    if os.path.isdir(path):
        extensions = ", ".join(IMAGE_EXTENSIONS)
        raise UnreadableImageError(path, f"a folder without image files ({extensions})")
    return read_image(path)


def _read_batch(paths: list[str]) -> list[tuple[str, np.ndarray | UnreadableImageError]]:
    """Each of ``paths`` with its image (:func:`_read_input`), or the error that says why it
    could not be read."""
    batch = []
    for path in paths:
        try:
            batch.append((path, _read_input(path)))
        except UnreadableImageError as error:
            batch.append((path, error))
    return batch


def predict_files(
    detector: "Detector",
    paths: Iterable,
    out_dir,
    *,
    batch_size: int = 8,
    drawing_threads: int | None = None,
    on_skip: Callable[[str, str], None] | None = None,
) -> Predictions:
    """Runs ``detector`` on image files, writing a drawing of each and detections.json
    (see the module docstring) to ``out_dir``.

    ``paths`` are image files, or folders standing for the image files in them (one path:
    a str or ``os.PathLike`` alone). An input that
    cannot be read is skipped (``on_skip(path, reason)`` is called as it is) and the others
    are still processed; detections.json lists the images read (``{}`` if none), and the
    drawings an earlier detections.json in ``out_dir`` listed are removed. A path given
    twice is processed once. The images are read and detected ``batch_size`` at a time
    (:meth:`Detector.detect_batch`). While a batch is detected, a thread reads the next
    one and ``drawing_threads`` threads draw the detections and write the drawings (None:
    one a CPU, up to 4; 0: each in turn, in the calling thread). A progress bar shows on a
    terminal's stderr.
    """
    check_positive_int("batch_size", batch_size)
    if drawing_threads is None:
        drawing_threads = min(usable_cpus(), 4)
    elif drawing_threads != 0:
        check_positive_int("drawing_threads", drawing_threads)
    if isinstance(paths, str | os.PathLike):  # not its characters, one by one
        paths = [paths]
    out_dir = Path(out_dir)
    reason = unwritable_reason(out_dir)
    if reason is not None:
        raise ValueError(
            f"The output folder {out_dir} cannot be written: {reason}. Choose another (--out)."
        )
    with _output_errors(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    # Earlier calls' drawings: listed in detections.json, or marked (one a call stopped
    # before writing it). Any other file's name is taken: a drawing never replaces an input
    # image in the output folder, or a file of the user's.
    marked = drawings.marked_drawings(out_dir)
    earlier_drawings = drawings.listed_drawings(out_dir / DETECTIONS_FILE) | marked
    taken = {p.name.casefold() for p in out_dir.iterdir() if p.name not in earlier_drawings}
    images, failed = {}, {}
    # An output folder given as an input too: its drawings are not inputs.
    own_drawings = {os.path.realpath(out_dir / name) for name in marked}
    inputs = [path for path in _image_files(paths) if os.path.realpath(path) not in own_drawings]
    # The drawings being drawn and written, in input order: {path: its future record}. At
    # most a batch and two per thread wait (and the next batch, read ahead), so that a folder
    # of photos is not held in memory; none in turn: a drawing that cannot be written stops
    # the call at once.
    being_drawn = collections.OrderedDict()
    most_drawn_at_once = batch_size + 2 * drawing_threads if drawing_threads else 0

    def record_drawn(key: str, entry: Future) -> None:
        images[key] = entry.result()  # raises what the drawing or its writing raised
        progress.update(1)

    with (
        tqdm(total=len(inputs), desc="Detecting", unit="image", disable=None) as progress,
        _thread_pool(drawing_threads, "drawing") as submit_drawing,
        # Its own thread: behind a queue of drawings the next batch would not be read ahead.
        _thread_pool(min(drawing_threads, 1), "reading") as submit_reading,
    ):
        batches = [
            inputs[start : start + batch_size] for start in range(0, len(inputs), batch_size)
        ]
        next_batch = None  # the next batch being read, with threads
        for index, paths in enumerate(batches):
            batch = _read_batch(paths) if next_batch is None else next_batch.result()
            next_batch = None
            if drawing_threads and index + 1 < len(batches):  # read while this one is detected
                next_batch = submit_reading(_read_batch, batches[index + 1])
            read = {}  # the batch's inputs that could be read: {path: image}
            for key, image in batch:
                if isinstance(image, UnreadableImageError):
                    failed[key] = image.reason
                    if on_skip is not None:
                        on_skip(key, image.reason)
                    progress.update(1)
                else:
                    read[key] = image
            # A short batch (the last, or one with unreadable inputs) at the full batches'
            # size: compiled already, where its own would compile again.
            try:
                found = detector.detect_batch(
                    list(read.values()), batch_size=batch_size, pad_to_batch_size=len(batches) > 1
                )
            except NonFiniteOutputsError as error:  # named by file, not place in the batch
                raise NonFiniteOutputsError([list(read)[i] for i in error.images]) from None
            for (key, image), detections in zip(read.items(), found, strict=True):
                name = drawings.drawing_name(Path(key), taken)  # here: in input order
                being_drawn[key] = submit_drawing(_write_drawing, image, detections, out_dir, name)
                while len(being_drawn) > most_drawn_at_once:
                    record_drawn(*being_drawn.popitem(last=False))
        while being_drawn:
            record_drawn(*being_drawn.popitem(last=False))
    with _output_errors(out_dir):
        atomic_write_text(out_dir / DETECTIONS_FILE, to_json(images))
    # Only now: a call that stops early leaves the previous detections.json, and the earlier
    # drawings it did not write over (a drawing of the same name replaces one as it is written).
    # Compared case-insensitively, as drawings.drawing_name: on macOS an earlier X.jpg is a
    # new x.jpg.
    drawn = {image["drawing"].casefold() for image in images.values()}
    for name in earlier_drawings:
        if name.casefold() not in drawn:
            (out_dir / name).unlink(missing_ok=True)
    return Predictions(images, failed)


@contextlib.contextmanager
def _thread_pool(threads: int, work: str):
    """``submit(fn, *args) -> Future`` running ``fn`` on ``threads`` threads (named for
    their ``work``), or at once in the calling thread for 0. Leaving it cancels what has not
    started and waits for the rest: no drawing is written after :func:`predict_files`
    returns or raises."""
    if threads == 0:
        yield _run_now
        return
    # Pillow's drawing of many boxes holds the GIL, but its decoding, encoding and the files'
    # reading and writing release it: on two cores they overlap the batch's detection.
    pool = ThreadPoolExecutor(threads, thread_name_prefix=f"yolojax-predict-{work}")
    try:
        yield pool.submit
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_now(fn: Callable, *args) -> Future:
    """``fn(*args)`` as a future that is already done, holding its result or its error."""
    future = Future()
    try:
        future.set_result(fn(*args))
    except Exception as error:  # raised by .result(), as a pool's future raises it
        future.set_exception(error)
    return future


def _write_drawing(image: np.ndarray, detections: "ImageDetections", out_dir: Path, drawing: str):
    """Writes ``image`` with ``detections`` drawn to ``out_dir / drawing`` (a .jpg or .png
    name), marked as this command's; returns the image's detections.json entry."""
    encoded = drawings.encode_drawing(image, detections, out_dir / drawing)
    with _output_errors(out_dir):
        atomic_write_bytes(out_dir / drawing, encoded)  # never a half-written one
    return {
        "drawing": drawing,
        "detections": [
            {"box": box.tolist(), "score": float(score), "label": int(label), "class": name}
            for box, score, label, name in zip(*detections, strict=True)
        ],
    }


def _report_skip(path: str, reason: str) -> None:
    tqdm.write(f"Skipping {path}: {reason}", file=sys.stderr)  # above the progress bar


def main(argv=None) -> None:
    """The command; exits with status 1 (``SystemExit``) if any input could not be read."""
    parser = argparse.ArgumentParser(
        prog="python -m yolojax.predict",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "images",
        nargs="+",
        help="image files (jpg, png, ...) or folders of them (not their subfolders)",
    )
    # No default to show: SUPPRESS keeps the help from reading "(default: None)".
    parser.add_argument(
        "--workdir",
        required=True,
        default=argparse.SUPPRESS,
        type=command_flags.path_argument("--workdir"),
        help="the training run's folder",
    )
    parser.add_argument(
        "--out",
        default="predictions",
        type=command_flags.path_argument("--out"),
        help="output folder",
    )
    parser.add_argument("--checkpoint", default="latest", help="'latest', 'best' or a step")
    # Also spelled with underscores, as train.py's and evaluate.py's flags are.
    parser.add_argument(
        "--score-threshold",
        "--score_threshold",
        type=float,
        default=0.25,
        help="the lowest score (confidence x class probability) drawn, in [0, 1]",
    )
    parser.add_argument(
        "--iou-threshold",
        "--iou_threshold",
        type=float,
        default=argparse.SUPPRESS,
        help="NMS: a box overlapping a better one of its class by more is dropped, in [0, 1] "
        "(default: the run's config.eval.iou_threshold)",
    )
    parser.add_argument(
        "--max-detections",
        "--max_detections",
        type=int,
        default=argparse.SUPPRESS,
        help="the most detections kept per image (default: the run's config.eval.max_detections)",
    )
    parser.add_argument(
        "--batch-size",
        "--batch_size",
        type=int,
        default=8,
        help="images detected at once: more is faster on an accelerator, up to its memory",
    )
    parser.add_argument(
        "--drawing-threads",
        "--drawing_threads",
        type=int,
        default=argparse.SUPPRESS,
        help="threads that draw and write the drawings while the next batch is read and "
        "detected; 0: each in turn (default: one a CPU, up to 4)",
    )
    args = parser.parse_args(argv)
    nms = {key: getattr(args, key, None) for key in ("iou_threshold", "max_detections")}
    # Before the seconds TensorFlow's import and the restore take.
    for flag, value in (
        ("score-threshold", args.score_threshold),
        ("iou-threshold", nms["iou_threshold"]),
    ):
        if value is not None and not 0.0 <= value <= 1.0:
            parser.error(f"--{flag} must be in [0, 1]; got {value}")
    for flag, value in (("max-detections", nms["max_detections"]), ("batch-size", args.batch_size)):
        if value is not None and value < 1:
            parser.error(f"--{flag} must be at least 1; got {value}")
    drawing_threads = getattr(args, "drawing_threads", None)
    if drawing_threads is not None and drawing_threads < 0:
        parser.error(f"--drawing-threads must be at least 0; got {drawing_threads}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out} is a file: choose another output folder")
    with cli.command_errors():  # one paragraph, as evaluate.py says it; before TensorFlow
        checkpoint = parse_which(args.checkpoint)
    cli.import_tensorflow()  # here: --help and bad flags come before TensorFlow loads
    from yolojax.detector import Detector

    with cli.command_errors(), warnings.catch_warnings():
        # A panorama of 90-179 megapixels is read as any photo; Pillow's warning of a
        # "decompression bomb", for servers reading untrusted uploads, says nothing to do.
        # (Larger ones are refused by Pillow, and reported as unreadable.)
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        detector = Detector.from_workdir(
            args.workdir, checkpoint=checkpoint, score_threshold=args.score_threshold, **nms
        )
        cli.work_starts()
        images, failed = predict_files(
            detector,
            args.images,
            args.out,
            batch_size=args.batch_size,
            drawing_threads=drawing_threads,
            on_skip=_report_skip,
        )
    total = sum(len(image["detections"]) for image in images.values())
    print(  # the step: 'latest' moves while a run trains, and 'best' is any of its steps
        f"{errors.count(total, 'detection')} in {errors.count(len(images), 'image')}, by the "
        f"checkpoint of step {detector.step} → {Path(args.out) / DETECTIONS_FILE}"
    )
    if failed:
        listed = errors.first_few(failed, 5)
        print(
            f"{errors.count(len(failed), 'input')} could not be read ("
            f"{errors.count(len(images), 'image')} {'was' if len(images) == 1 else 'were'}): "
            f"{listed}",
            file=sys.stderr,
        )
        raise SystemExit(1)


if __name__ == "__main__":
    with cli.closed_stdout_ends_quietly(), cli.failures_exit_at_once():
        main()
