"""Benchmark: training input pipeline throughput (images/s) with full augmentation.

    python -m benchmarks.input_pipeline                  # from the repository root
    python -m benchmarks.input_pipeline --cores 2 --image-size 448 --batches 30

Two sources, both through `make_train_iterator` exactly as training uses it (decode, random
scale/translate/flip, resize to the model input, colour jitter, normalize, blur, pad, batch,
NumPy out):

* `voc`: VOC-like JPEGs written by this script (500x375 and 375x500, quality 90, about
  76 KB each, VOC2007's being about 90 KB; 1-6 boxes) into a VOCdevkit, prepared as TFDS
  `voc/2007` with the real builder (`prepare_voc_offline`);
* `synthetic_shapes`: the embedded dataset (128x128 JPEGs), upscaled to the model input.

`--cores N` pins the process to N CPU cores (`os.sched_setaffinity`, like `taskset`). Each
run warms up, then times `--batches` batches (train, full augmentation) or all but two
warm-up batches of the test split (eval, no augmentation). Besides wall-clock images/s the
table gives the CPU time per image summed over all threads, and cores / that time: the rate
on otherwise idle cores, since other processes may share them (the load average is printed).
The train iterator is dropped before the eval one is timed: its prefetching would count.

Is training input-bound? Give `--step-images-per-s` the train step's images/s at the same
image size and batch (`python -m benchmarks.train_step`, its "JAX img/s"): the table adds how
many times that each train pipeline delivers (below 1: the step waits for its input).
"""

import contextlib
import gc
import itertools
import os
import sys
import tempfile
import time

import numpy as np
from PIL import Image

from benchmarks import common
from yolojax import cli

cli.import_tensorflow()  # before the imports below load it: without its start-up notices
import tensorflow_datasets as tfds

from yolojax.data import default_data_config, make_eval_iterator, make_train_iterator
from yolojax.data.config import COLOR_SPACES
from yolojax.data.testing import VocImage, VocObject, write_voc_folder
from yolojax.data.voc_offline import prepare_voc_offline

EVAL_WARMUP = 2  # untimed batches of the test split before its timed ones
_VOC_CLASSES = ("aeroplane", "bicycle", "bird", "car", "cat", "dog", "person", "train")


def _natural_looking_pixels(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth colour regions plus texture and noise: JPEG size and decode cost like a photo."""
    coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float32)
    detail = rng.uniform(0, 255, (height // 4, width // 4, 3)).astype(np.uint8)
    detail = np.asarray(Image.fromarray(detail).resize((width, height), Image.BILINEAR))
    pixels = 0.7 * base + 0.3 * detail + rng.normal(0, 9, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_voc_like_devkit(root: str, num_images: int, seed: int = 0) -> tuple[str, float]:
    """Writes VOCdevkit/VOC2007 (train/val/test sets); returns its path and mean JPEG bytes."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(num_images):
        width, height = (500, 375) if rng.random() < 0.7 else (375, 500)
        objects = []
        for _ in range(rng.integers(1, 7)):
            # VOC pixel coordinates: 1-based, inclusive.
            xmin, xmax = np.sort(rng.choice(np.arange(1, width + 1), 2, replace=False))
            ymin, ymax = np.sort(rng.choice(np.arange(1, height + 1), 2, replace=False))
            objects.append(
                VocObject(
                    str(rng.choice(_VOC_CLASSES)), (xmin, ymin, xmax, ymax), rng.random() < 0.1
                )
            )
        pixels = _natural_looking_pixels(rng, width, height)
        images.append(VocImage(f"{index:06d}", width, height, objects, pixels))
    ids = [image.image_id for image in images]
    year_dir = os.path.join(root, "VOCdevkit", "VOC2007")
    write_voc_folder(
        year_dir, images, image_sets={"train": ids[::2], "val": ids[1::2], "test": ids}
    )
    jpegs = os.path.join(year_dir, "JPEGImages")
    mean_bytes = np.mean([os.path.getsize(os.path.join(jpegs, name)) for name in os.listdir(jpegs)])
    return os.path.join(root, "VOCdevkit"), float(mean_bytes)


def throughput(iterator, batch_size: int, warmup: int, batches: int | None) -> tuple[float, float]:
    """(images per wall-clock second, CPU milliseconds per image over all threads).

    Times `batches` batches after `warmup` ones, or with batches=None all the remaining ones.
    An eval batch counts its real images (`valid`), not the padding of the split's last.
    """
    for _ in range(warmup):
        next(iterator)
    wall, cpu = time.perf_counter(), time.process_time()
    images = sum(
        int(np.sum(batch["valid"])) if "valid" in batch else batch_size
        for batch in itertools.islice(iterator, batches)
    )
    return images / (time.perf_counter() - wall), (time.process_time() - cpu) * 1e3 / images


def main() -> None:
    parser = common.argument_parser(__doc__, "benchmarks.input_pipeline")
    parser.add_argument("--cores", type=int, default=0, help="pin to this many cores (0: all)")
    parser.add_argument(
        "--image-size", type=common.positive_int, default=448, help="model input side, pixels"
    )
    parser.add_argument("--batch-size", type=common.positive_int, default=32, help="batch")
    parser.add_argument(
        "--batches", type=common.positive_int, default=30, help="timed train batches"
    )
    parser.add_argument(
        "--warmup", type=common.nonnegative_int, default=5, help="untimed train batches first"
    )
    parser.add_argument(
        "--voc-images",
        type=common.positive_int,
        default=256,
        help="VOC-like JPEGs written (the train and the test split)",
    )
    parser.add_argument(
        "--color-space",
        default=default_data_config().augment.color_space,  # what training uses: 'hsv'
        choices=COLOR_SPACES,
        help="of the colour jitter",
    )
    parser.add_argument(
        "--step-images-per-s",
        type=float,
        help="the train step's images/s at this image size and batch "
        "(python -m benchmarks.train_step): adds how many times that the pipeline delivers",
    )
    args = parser.parse_args()
    available = len(os.sched_getaffinity(0))
    if not 0 <= args.cores <= available:
        parser.error(f"--cores must be in [0, {available}] (0: all), got {args.cores}")
    eval_images = (EVAL_WARMUP + 1) * args.batch_size  # for one timed evaluation batch
    if args.voc_images < eval_images:
        parser.error(
            f"--voc-images {args.voc_images}: the evaluation times the test split's batches "
            f"after {EVAL_WARMUP} untimed ones; give at least {eval_images} for --batch-size "
            f"{args.batch_size}"
        )
    if args.cores:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.cores]))
    cores = len(os.sched_getaffinity(0))

    # The datasets' preparation talks (TFDS's lines, the synthetic set's, TFDS's progress
    # bars): on stderr and without the bars, so that the output is the table.
    tfds.disable_progress_bar()
    with tempfile.TemporaryDirectory() as workdir, contextlib.redirect_stdout(sys.stderr):
        devkit, mean_bytes = write_voc_like_devkit(workdir, args.voc_images)
        prepare_voc_offline(devkit, "2007", data_dir=os.path.join(workdir, "tfds"))
        rows = []
        for source in ("voc", "synthetic_shapes"):
            config = default_data_config()
            config.source = source
            config.tfds_data_dir = os.path.join(workdir, "tfds")
            config.image_size = args.image_size
            config.augment.color_space = args.color_space
            config.train_split = "voc/2007:train+validation" if source == "voc" else None
            config.synthetic.num_train = config.synthetic.num_test = max(512, eval_images)
            train = make_train_iterator(config, global_batch_size=args.batch_size, seed=0)
            rows.append(
                (source, "train", *throughput(train, args.batch_size, args.warmup, args.batches))
            )
            # Its prefetching threads would still run, and count, while eval is timed.
            del train
            gc.collect()
            evaluation = make_eval_iterator(config, global_batch_size=args.batch_size)
            rows.append(
                (source, "eval", *throughput(evaluation, args.batch_size, EVAL_WARMUP, None))
            )

    print(
        f"\n{cores} cores, image size {args.image_size}, batch {args.batch_size}, colour "
        f"{args.color_space}, VOC-like JPEG {mean_bytes / 1e3:.0f} KB, load average "
        f"{os.getloadavg()[0]:.1f}\n"
    )
    table = []
    for source, kind, rate, cpu_ms in rows:
        row = {"source": source, "kind": kind, "rate": f"{rate:.0f}", "cpu_ms": f"{cpu_ms:.1f}"}
        row["idle_rate"] = f"{cores * 1e3 / cpu_ms:.0f}"
        if args.step_images_per_s and kind == "train":
            times = rate / args.step_images_per_s
            row["demand"] = f"{times:.2f}× ({'not ' if times >= 1 else ''}input-bound)"
        table.append(row)
    columns = [
        ("source", "source"),
        ("kind", "iterator"),
        ("rate", "images/s (wall)"),
        ("cpu_ms", "CPU ms / image"),
        ("idle_rate", "images/s if the cores were idle"),
    ]
    if args.step_images_per_s:
        columns.append(("demand", f"× the step's {args.step_images_per_s:g} images/s"))
    print(common.markdown_table(table, columns))


if __name__ == "__main__":
    with cli.ends_at_once_when_it_fails():  # `| head` ends quietly, a Ctrl-C at once
        main()
