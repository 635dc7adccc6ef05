"""Exact VOC evaluation of a model: detection on every device, host-side VOC mAP.

Every example of the evaluation split is seen exactly once: the pipeline pads the last
batch and marks padding with ``valid``; with several processes, each evaluates its shard and
the results are gathered so every process computes the same mAP over the whole set.
"""

import functools
import time
import warnings
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec
from tqdm import tqdm

from yolojax import distributed, plots, postprocess, train_lib
from yolojax.config import resolve_num_classes, validate_config
from yolojax.data import pipeline
from yolojax.evaluation import VOCEvaluator
from yolojax.workdir import EVAL_FOLDER, atomic_write_text, to_json


def eval_batch_size(config) -> int:
    """The global evaluation batch (``config.eval.batch_size``, 0 = the train batch size),
    checked to split over every device of the job."""
    if config.eval.batch_size:
        distributed.check_batch_size(config.eval.batch_size, "config.eval.batch_size")
        return config.eval.batch_size
    distributed.check_batch_size(config.train.batch_size, "config.train.batch_size")
    return config.train.batch_size


def eval_step(state, images, *, model, config) -> postprocess.Detections:
    """Detections for one per-device batch: ``images (B, H, W, 3)`` → ``(B, K)`` detections."""
    outputs = model.apply(train_lib.model_variables(state), images, train=False)
    return postprocess.detect_with_config(outputs, config)


def make_eval_step(model, config, mesh):
    """:func:`eval_step` compiled over every device of ``mesh``
    (:func:`yolojax.distributed.mesh`).

    Returns:
      ``detect(state, images) -> Detections``: ``state`` from
      :func:`yolojax.distributed.replicate` on ``mesh``, ``images`` this process's NumPy
      batch ``(local_devices, per_device, H, W, 3)``; the detections of those images as
      NumPy arrays ``(local_devices * per_device, K, ...)``.
    """
    sharded = jax.shard_map(
        functools.partial(eval_step, model=model, config=config),
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(distributed.AXIS)),
        out_specs=PartitionSpec(distributed.AXIS),
    )
    compiled = jax.jit(sharded)

    def detect(state, images: np.ndarray) -> postprocess.Detections:
        images = distributed.shard_batch({"image": images}, mesh)["image"]
        return distributed.local_rows(compiled(state, images), mesh)

    return detect


def _gather(arrays: dict) -> dict:
    """Concatenates every process's arrays along the batch axis (a no-op on one process)."""
    if jax.process_count() == 1:
        return arrays
    return multihost_utils.process_allgather(arrays, tiled=True)


def evaluate(
    detect, state, batches, config, class_names=None, *, progress: str = "", total: int = 0
) -> dict:
    """Runs detection over ``batches`` and computes VOC mAP.

    Args:
      detect: from :func:`make_eval_step`.
      state: the train state on the devices (:func:`yolojax.distributed.replicate`).
      batches: an iterable of eval batches (``yolojax.data.pipeline.make_eval_iterator``).
      config: the run config.
      class_names: names for the per-class table; default: the class ids.
      progress: a progress bar's label, shown by process 0 on a terminal ('' for none).
      total: the number of images the batches hold, for the progress bar.

    Returns:
      ``{'mAP', 'mAP_area', 'AP', 'AP_area', 'num_positives', 'num_images',
      'num_detections', 'images_per_second', 'table'}``: VOC07 11-point mAP and area mAP
      (NaN classes left out), per-class APs and non-difficult ground-truth counts as lists,
      the number of images and of detections evaluated (over every process), the detection
      throughput, a printable table, and per class the 'precision' and 'recall' arrays
      after each counted detection (:meth:`yolojax.evaluation.VOCEvaluator.compute`).
    """
    evaluator = VOCEvaluator(
        config.model.num_classes,
        use_07_metric=True,
        plus_one=config.eval.plus_one,
        class_names=class_names,
    )
    start, num_images, num_detections = time.perf_counter(), 0, 0
    bar = tqdm(
        total=total or None,
        desc=progress,
        unit="image",
        leave=False,  # the result line that follows says it all
        disable=None if progress and jax.process_index() == 0 else True,
    )
    for batch in batches:
        detections = detect(state, batch["image"])
        # Flatten [devices, per_device] so the gather concatenates whole examples.
        examples = {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}
        arrays = {
            "gt_boxes": examples["boxes"],
            "gt_labels": examples["labels"],
            "gt_difficult": examples["difficult"],
            "gt_mask": examples["mask"],
            "pred_boxes": detections.boxes,
            "pred_scores": detections.scores,
            "pred_labels": detections.labels,
            "pred_valid": detections.valid,
            "image_size": examples["image_size"],
            "valid": examples["valid"],
        }
        arrays = _gather(arrays)
        num_images += int(np.sum(arrays["valid"]))
        num_detections += int(np.sum(arrays["pred_valid"] & arrays["valid"][:, None]))
        evaluator.add_normalized_batch(**arrays)
        bar.update(int(np.sum(arrays["valid"])))
    bar.close()
    elapsed = time.perf_counter() - start
    results = evaluator.compute()
    return {
        "mAP": float(results["mAP"]),
        "mAP_area": float(results["mAP_area"]),
        "AP": [float(v) for v in results["AP"]],
        "AP_area": [float(v) for v in results["AP_area"]],
        "num_positives": [int(n) for n in results["num_positives"]],
        "num_images": num_images,
        "num_detections": num_detections,
        "images_per_second": num_images / max(elapsed, 1e-9),
        "table": evaluator.summary(results),
        "precision": results["precision"],
        "recall": results["recall"],
    }


def evaluate_checkpoint(config, workdir, checkpoint: str | int = "latest") -> dict:
    """Restores a checkpoint of ``workdir`` and evaluates it on the eval split.

    Writes ``workdir/eval/metrics.json``:
    ``{"mAP", "mAP_area", "AP": {class: AP}, "AP_area": {...}, "step", "split",
    "num_images", "images_per_second", "checkpoint"}`` (``split``: the eval split's name,
    'test' or 'validation'; NaN APs, of classes without positives, as null),
    and each class's precision-recall curve as ``workdir/eval/pr_curves.png``.

    Args:
      config: the config the run was trained with.
      workdir: the run's folder.
      checkpoint: 'latest', 'best' or a step number.

    Returns:
      :func:`evaluate`'s results plus ``step``, ``split`` and ``saved``: the paths of the files
      written (on process 0; a file that cannot be written, in a read-only or full workdir,
      only warns).
    """
    validate_config(config)
    batch_size = eval_batch_size(config)
    info = pipeline.get_dataset_info(config.data, train=False)
    resolve_num_classes(config, info.class_names)
    model, state, step = train_lib.restore_trained_state(config, workdir, checkpoint)
    mesh = distributed.mesh()
    results = evaluate(
        make_eval_step(model, config, mesh),
        distributed.replicate(state, mesh),
        pipeline.make_eval_iterator(config.data, global_batch_size=batch_size),
        config,
        info.class_names,
        progress=f"Evaluating step {step}",
        total=info.num_eval_examples,
    )
    results["step"], results["split"] = step, info.eval_split_name
    if jax.process_index() == 0:
        record = {
            "mAP": results["mAP"],
            "mAP_area": results["mAP_area"],
            "AP": dict(zip(info.class_names, results["AP"], strict=True)),
            "AP_area": dict(zip(info.class_names, results["AP_area"], strict=True)),
            "step": step,
            "split": info.eval_split_name,
            "checkpoint": str(checkpoint),
            "num_images": results["num_images"],
            "images_per_second": results["images_per_second"],
        }
        eval_dir = Path(workdir) / EVAL_FOLDER
        writers = {
            eval_dir / "metrics.json": lambda path: atomic_write_text(path, to_json(record)),
            eval_dir / "pr_curves.png": lambda path: plots.plot_precision_recall(
                results, info.class_names, path, step=step
            ),
        }
        results["saved"] = []
        for path, write in writers.items():
            try:
                write(path)
                results["saved"].append(path)
            except OSError as error:  # a read-only or full workdir: the results still return
                warnings.warn(f"Could not save {path}: {error}", stacklevel=2)
    return results
