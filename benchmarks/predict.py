"""End-to-end speed of `python -m yolojax.predict` (`predict_files`) on a folder of photos:
reading the JPEGs, detecting them in batches, drawing the boxes and writing the drawings
(JPEGs, as the photos are), with several counts of drawing threads side by side, against
reading and detecting alone.

    python -m benchmarks.predict                                   # darknet_tiny at 224, 32 photos
    python -m benchmarks.predict --threads 0,2 --photos 64 --batch 16

The photos are 640×480 JPEGs of smooth random colour fields (they compress as photos do,
unlike noise); the model (configs/shapes.py's for darknet_tiny) has random weights, its
output bias raised so that every box scores, and a score threshold of 0, so each photo gets
its full 100 boxes drawn, the most the default NMS keeps. The settings take turns within
each round, and each row is the median over the rounds.
"""

import argparse
import functools
import os
import statistics
import tempfile
from pathlib import Path

import flax
import jax
import numpy as np
from PIL import Image

from benchmarks import common
from benchmarks.inference import PHOTO_SIZE, default_head, make_detector, random_model
from yolojax import cli, models, predict
from yolojax.images import read_image
from yolojax.models import yolo


def write_photos(folder: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` 640×480 JPEGs of smooth colour fields (low-resolution noise, upsampled)."""
    rng = np.random.default_rng(seed)
    height, width = PHOTO_SIZE
    paths = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (height // 40, width // 40, 3), np.uint8))
        photo = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC))
        grain = rng.integers(-8, 9, photo.shape)  # a camera's noise
        path = folder / f"photo_{i:04d}.jpg"
        Image.fromarray(np.clip(photo + grain, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def _scoring_every_box(variables: dict, head: str) -> dict:
    """``variables`` with the output layer's bias raised by 0.5: every box and class scores,
    so each photo gets its 100 boxes drawn (a random initialization's outputs are small,
    and a box scores only where its size, confidence and class outputs are all positive)."""
    variables = flax.core.unfreeze(variables)
    layer = functools.reduce(dict.__getitem__, yolo.output_layer(head), variables["params"])
    layer["bias"] = layer["bias"] + 0.5
    return variables


def _read_and_detect(detector, paths: list[Path], batch: int) -> None:
    """predict's work without the drawings: each batch read, then detected."""
    for start in range(0, len(paths), batch):
        images = [read_image(path) for path in paths[start : start + batch]]
        # Padded as predict_files pads: a short last batch would compile a shape of its own.
        detector.detect_batch(images, batch_size=batch, pad_to_batch_size=True)


def _predict_row(threads: int) -> str:
    return f"predict_files, {threads} drawing thread{'s' * (threads != 1)}"


def _thread_counts(text: str) -> list[int]:
    """``'0,2'`` → ``[0, 2]``: drawing thread counts, each 0 or more."""
    try:
        counts = [int(count) for count in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"wants counts such as 0,2; got {text!r}") from None
    if min(counts) < 0:
        raise argparse.ArgumentTypeError(f"counts must be 0 or more, got {text!r}")
    return counts


def main() -> None:
    parser = common.argument_parser(__doc__, "benchmarks.predict")
    parser.add_argument(
        "--backbone", default="darknet_tiny", choices=models.BACKBONES, help="random weights"
    )
    parser.add_argument(
        "--image-size", type=common.positive_int, default=224, help="input side, pixels"
    )
    parser.add_argument(
        "--batch", type=common.positive_int, default=8, help="predict's --batch-size"
    )
    parser.add_argument("--photos", type=common.positive_int, default=32, help="640×480 JPEGs")
    parser.add_argument(
        "--threads",
        type=_thread_counts,
        default="0,1,2,4",
        help="comma-separated drawing thread counts (predict's --drawing-threads); the first "
        "is the baseline",
    )
    parser.add_argument(
        "--rounds", type=common.positive_int, default=3, help="rounds in turns (median)"
    )
    args = parser.parse_args()
    thread_counts = args.threads
    busy = common.busy_machine_warning() if jax.default_backend() == "cpu" else None

    head = default_head(args.backbone)
    model, variables, model_config = random_model(args.backbone, head, args.image_size, "float32")
    variables = _scoring_every_box(variables, head)
    detector = make_detector(model, variables, model_config, args.image_size, score_threshold=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        photos_dir = Path(tmp, "photos")
        photos_dir.mkdir()
        photos = write_photos(photos_dir, args.photos)
        runs = {
            "read": lambda: [read_image(p) for p in photos],
            "read + detect_batch": lambda: _read_and_detect(detector, photos, args.batch),
        }
        for threads in thread_counts:
            runs[_predict_row(threads)] = functools.partial(
                predict.predict_files,
                detector,
                photos_dir,
                Path(tmp, f"out{threads}"),
                batch_size=args.batch,
                drawing_threads=threads,
            )
        drawn = runs[_predict_row(thread_counts[0])]()  # compiles
        seconds = common.time_alternating(runs, rounds=args.rounds, steps_per_round=1)
    boxes = statistics.mean(len(image["detections"]) for image in drawn.images.values())
    print(
        f"{jax.devices()[0].device_kind} ({common.cpu_model()}, {os.cpu_count()} CPUs), "
        f"load {common.load_average()}; {common.versions(['jax', 'pillow'])}"
    )
    print(
        f"{args.photos} photos of {PHOTO_SIZE[1]}×{PHOTO_SIZE[0]}, {args.backbone} at "
        f"{args.image_size}, batch {args.batch}, {boxes:.0f} boxes drawn a photo, "
        f"median of {args.rounds} rounds"
    )
    if busy:
        print(busy)
    baseline = common.median(seconds[_predict_row(thread_counts[0])])
    rows = []
    for name, times in seconds.items():
        run = common.median(times)
        row = {"work": name, "ms": f"{run / args.photos * 1e3:.1f}"}
        row["rate"] = f"{args.photos / run:.1f}"
        if name.startswith("predict_files"):
            row["speedup"] = f"{baseline / run:.2f}x"
        rows.append(row)
    columns = [("work", "work"), ("ms", "ms a photo"), ("rate", "photos/s")]
    speedup = ("speedup", f"vs {_predict_row(thread_counts[0]).removeprefix('predict_files, ')}")
    print(common.markdown_table(rows, [*columns, speedup]))


if __name__ == "__main__":
    with cli.ends_at_once_when_it_fails():  # `| head` ends quietly, a Ctrl-C at once
        main()
