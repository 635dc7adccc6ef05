"""Benchmark: `VOCEvaluator` against the devkit-style per-detection loop, VOC07-test-sized.

    python -m benchmarks.evaluator            # from the repository root

Synthetic data of the size of VOC2007 test: 4,952 images of 300-500 pixels a side, 20
classes, about 3 objects per image (one in five difficult, so about 12,000 positives; the real
set has 14,976 objects and 12,032 positives), and 100 detections per image: jittered copies
of the objects (duplicates and some with the wrong class) plus random boxes, with scores
rounded to 3 decimals so that ties occur. Integer pixel ground truth and `plus_one=True`, as
for VOC.

The process pins itself to one CPU core (`os.sched_setaffinity`, like `taskset -c 0`), so
every thread NumPy might start shares that core. Ours is timed end to end (4,952 `add` calls
and `compute`), median of `--repeats` runs; the reference loop once. Prints a Markdown table.
"""

import os
import statistics
import time

import numpy as np

from benchmarks import common
from benchmarks.voc_reference import voc_eval_all
from yolojax import cli
from yolojax.evaluation import VOCEvaluator

NUM_IMAGES = 4952
NUM_CLASSES = 20
DETECTIONS_PER_IMAGE = 100


def synthetic_voc_test(seed: int) -> list[tuple[np.ndarray, ...]]:
    """Per-image (gt_boxes, gt_labels, gt_difficult, pred_boxes, pred_scores, pred_labels)."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(NUM_IMAGES):
        height, width = rng.integers(300, 501, size=2)
        num_gt = 1 + rng.poisson(2.0)
        size = rng.uniform(0.1, 0.7, (num_gt, 2)) * (width, height)
        corner = rng.uniform(0.0, 1.0, (num_gt, 2)) * ((width, height) - size)
        gt_boxes = np.round(np.concatenate([corner, corner + size], axis=1))
        gt_labels = rng.integers(0, NUM_CLASSES, num_gt)
        gt_difficult = rng.random(num_gt) < 0.2

        # Near-object detections: a few jittered copies per object, mostly the right class.
        source = np.repeat(np.arange(num_gt), 1 + rng.poisson(3.0, num_gt))
        source = source[:DETECTIONS_PER_IMAGE]
        jitter = rng.normal(0.0, 0.12, (len(source), 4)) * np.tile(size[source], 2)
        near_boxes = gt_boxes[source] + jitter
        near_labels = np.where(
            rng.random(len(source)) < 0.85,
            gt_labels[source],
            rng.integers(0, NUM_CLASSES, len(source)),
        )
        near_scores = rng.beta(4.0, 2.0, len(source))
        # The rest: random boxes and classes, mostly low scores.
        num_random = DETECTIONS_PER_IMAGE - len(source)
        random_size = rng.uniform(0.05, 0.6, (num_random, 2)) * (width, height)
        random_corner = rng.uniform(0.0, 1.0, (num_random, 2)) * ((width, height) - random_size)
        random_boxes = np.concatenate([random_corner, random_corner + random_size], axis=1)

        pred_boxes = np.concatenate([near_boxes, random_boxes])
        pred_boxes[:, 2:] = np.maximum(pred_boxes[:, 2:], pred_boxes[:, :2] + 1.0)
        pred_scores = np.round(
            np.concatenate([near_scores, rng.beta(1.0, 4.0, num_random)]), decimals=3
        )
        pred_labels = np.concatenate([near_labels, rng.integers(0, NUM_CLASSES, num_random)])
        images.append((gt_boxes, gt_labels, gt_difficult, pred_boxes, pred_scores, pred_labels))
    return images


def evaluate_ours(images):
    evaluator = VOCEvaluator(NUM_CLASSES, plus_one=True)
    for image in images:
        evaluator.add(*image)
    return evaluator.compute()


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def main():
    parser = common.argument_parser(__doc__, "benchmarks.evaluator")
    parser.add_argument("--seed", type=int, default=0, help="of the synthetic data")
    parser.add_argument(
        "--repeats", type=common.positive_int, default=5, help="VOCEvaluator runs (median)"
    )
    parser.add_argument("--cpu", type=int, default=0, help="the one core to run on")
    args = parser.parse_args()
    allowed = sorted(os.sched_getaffinity(0))
    if args.cpu not in allowed:
        parser.error(f"--cpu {args.cpu} is not a core this process may run on: {allowed}")
    os.sched_setaffinity(0, {args.cpu})

    images = synthetic_voc_test(args.seed)
    num_gt = sum(len(image[0]) for image in images)
    num_positives = sum(int(np.sum(~image[2])) for image in images)
    num_detections = sum(len(image[3]) for image in images)

    runs = [timed(evaluate_ours, images) for _ in range(args.repeats)]
    ours_seconds = statistics.median(seconds for seconds, _ in runs)
    ours = runs[0][1]
    reference_seconds, (reference_11point, reference_area) = timed(
        voc_eval_all, images, NUM_CLASSES, 0.5, True
    )
    agree = np.array_equal(ours["AP_11point"], reference_11point, equal_nan=True) and (
        np.array_equal(ours["AP_area"], reference_area, equal_nan=True)
    )

    print(
        f"{len(images):,} images, {num_gt:,} objects ({num_positives:,} positives), "
        f"{num_detections:,} detections, {NUM_CLASSES} classes; one core (cpu {args.cpu})\n"
    )
    print("| | ours (VOCEvaluator) | devkit-style loop | ratio |")
    print("|---|---|---|---|")
    print(
        f"| seconds | {ours_seconds:.3f} (median of {args.repeats}) | "
        f"{reference_seconds:.2f} | {reference_seconds / ours_seconds:.1f}x faster |"
    )
    print(
        f"| mAP VOC07 11-point | {ours['mAP_11point']:.6f} | "
        f"{np.nanmean(reference_11point):.6f} | |"
    )
    print(f"| mAP area | {ours['mAP_area']:.6f} | {np.nanmean(reference_area):.6f} | |")
    print(f"\nPer-class AP, both metrics, bit-for-bit equal: {'yes' if agree else 'NO'}")


if __name__ == "__main__":
    with cli.ends_at_once_when_it_fails():  # `| head` ends quietly, a Ctrl-C at once
        main()
