"""Exact VOC evaluation of a model: detection on every device, host-side VOC mAP.

Every example of the evaluation split is seen exactly once: the pipeline pads the last
batch and marks padding with ``valid``; with several processes, each evaluates its shard and
the results are gathered so every process computes the same mAP over the whole set.
"""

import functools
import time
from collections.abc import Mapping
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import PartitionSpec
from tqdm import tqdm

from yolojax import (
    checkpoints,
    distributed,
    errors,
    losses,
    plots,
    postprocess,
    train_lib,
    voc_results,
)
from yolojax.atomic_files import atomic_write_files, to_json, unwritable_reason
from yolojax.config import resolve_num_classes, validate_config
from yolojax.data import pipeline, sources
from yolojax.evaluation import VOCEvaluator
from yolojax.workdir import CLASSES_FILE, EVAL_FOLDER, load_class_names, run_config_flag


def eval_batch_size(config) -> int:
    """The global evaluation batch (``config.eval.batch_size``, 0 = the train batch size),
    checked to split over every device of the job."""
    if config.eval.batch_size:
        distributed.check_batch_size(config.eval.batch_size, "config.eval.batch_size")
        return config.eval.batch_size
    distributed.check_batch_size(config.train.batch_size, "config.train.batch_size")
    return config.train.batch_size


def image_losses(outputs, batch, config) -> dict:
    """Each image's YOLO loss, as training weighs it, but of the model in inference mode.

    Args:
      outputs: ``(B, S, S, C + 5B)`` the model's outputs for ``batch["image"]``.
      batch: ``boxes (B, M, 4)`` normalized yxyx, ``labels (B, M)``, ``mask (B, M)``,
        ``difficult (B, M)``: difficult objects count as training counts them
        (``config.data.train_on_difficult``).
      config: the run config (``config.model``'s grid and classes, ``config.loss``).

    Returns:
      ``{term: (B,)}`` for each of :data:`yolojax.losses.LOSS_TERMS`.
    """
    mask = batch["mask"] & pipeline.trained_objects(
        batch["difficult"], config.data.train_on_difficult
    )
    grid = train_lib.target_grids(batch["boxes"], batch["labels"], mask, config)

    def one_image(prediction, target):  # the loss averages over its batch: one image
        _, terms = train_lib.loss_with_config(prediction[None], target[None], config)
        return {term: terms[term] for term in losses.LOSS_TERMS}

    return jax.vmap(one_image)(outputs, grid)


def eval_step(state, batch, *, model, config) -> tuple[postprocess.Detections, dict, jax.Array]:
    """Detections and loss for one per-device batch: ``batch["image"] (B, H, W, 3)`` →
    ``(B, K)`` detections, each image's loss terms (:func:`image_losses`, which says
    what else ``batch`` holds) and ``(B,)`` whether its model outputs are all finite (NaN
    ones detect nothing, a diverged model passing for one that sees no objects).

    ``state``: a train state, or the model's variables as ``model.init`` gives them
    (``{'params': ..., 'batch_stats': ...}``; no ``'batch_stats'`` for GroupNorm models).
    """
    variables = state if isinstance(state, Mapping) else train_lib.model_variables(state)
    outputs = model.apply(variables, batch["image"], train=False)
    detections = postprocess.detect_with_config(outputs, config)
    return detections, image_losses(outputs, batch, config), postprocess.finite_outputs(outputs)


# What the eval step reads of a pipeline batch.
_STEP_INPUTS = ("image", "boxes", "labels", "mask", "difficult")


def make_eval_step(model, config, mesh):
    """:func:`eval_step` compiled over every device of ``mesh``
    (:func:`yolojax.distributed.mesh`).

    Returns:
      ``evaluate_batch(state, batch) -> (Detections, losses, finite)``: ``state`` (a train
      state or the model's variables, :func:`eval_step`) from
      :func:`yolojax.distributed.replicate`
      on ``mesh``, ``batch`` this process's eval batch from the pipeline (NumPy arrays
      ``(local_devices, per_device, ...)``); the detections, loss terms and finiteness of
      those images (:func:`eval_step`) as NumPy arrays ``(local_devices * per_device, ...)``.
    """
    sharded = jax.shard_map(
        functools.partial(eval_step, model=model, config=config),
        mesh=mesh,
        in_specs=(PartitionSpec(), PartitionSpec(distributed.AXIS)),
        out_specs=PartitionSpec(distributed.AXIS),
    )
    compiled = jax.jit(sharded)

    def evaluate_batch(state, batch: dict) -> tuple[postprocess.Detections, dict, np.ndarray]:
        inputs = distributed.shard_batch({key: batch[key] for key in _STEP_INPUTS}, mesh)
        return distributed.local_rows(compiled(state, inputs), mesh)

    return evaluate_batch


def _gather(arrays: dict) -> dict:
    """Concatenates every process's arrays along the batch axis (a no-op on one process)."""
    if jax.process_count() == 1:
        return arrays
    return multihost_utils.process_allgather(arrays, tiled=True)


def evaluate(
    evaluate_batch,
    state,
    batches,
    config,
    class_names=None,
    *,
    progress: str = "",
    total: int = 0,
    keep_detections: bool = False,
) -> dict:
    """Runs detection over ``batches`` and computes VOC mAP and the mean loss.

    Args:
      evaluate_batch: from :func:`make_eval_step`.
      state: the train state, or the model's variables (``{'params': ...,
        'batch_stats': ...}``), on the devices (:func:`yolojax.distributed.replicate`).
      batches: an iterable of eval batches (``yolojax.data.pipeline.make_eval_iterator``,
        ``EvalBatches``).
      config: the run config.
      class_names: names for the per-class table; default: the class ids.
      progress: a progress bar's label, shown by process 0 on a terminal ('' for none).
      total: the number of images the batches hold, for the progress bar.
      keep_detections: also return each image's detections, as ``'detections'``:
        ``{index in the split: (boxes (K, 4) pixel xyxy, scores (K,), labels (K,))}``.

    Returns:
      ``{'mAP', 'mAP_area', 'AP', 'AP_area', 'num_positives', 'loss', 'num_images',
      'num_detections', 'num_nonfinite', 'images_per_second', 'table'}``: VOC07 11-point mAP
      and area mAP (NaN classes left out), per-class APs and non-difficult ground-truth counts
      as lists, the mean loss per image and its terms (``{term: value}`` for each of
      :data:`yolojax.losses.LOSS_TERMS`, of the model in inference mode: :func:`image_losses`),
      the number of images, of detections and of images whose model outputs are NaN or
      infinite (which detect nothing) evaluated (over every process), the evaluation
      throughput (detection and loss), a printable table, and per class the 'precision' and
      'recall' arrays after each counted detection
      (:meth:`yolojax.evaluation.VOCEvaluator.compute`).
    """
    # The pipeline's boxes are continuous (VOC's moved there): the IoU without the devkit's
    # +1 pixel is the devkit's.
    evaluator = VOCEvaluator(config.model.num_classes, use_07_metric=True, class_names=class_names)
    start, num_detections, num_nonfinite, kept = time.perf_counter(), 0, 0, {}
    bar = tqdm(
        total=total or None,
        desc=progress,
        unit="image",
        leave=False,  # the result line that follows says it all
        disable=None if progress and jax.process_index() == 0 else True,
    )
    loss_sums = dict.fromkeys(losses.LOSS_TERMS, 0.0)
    for batch in batches:
        detections, image_loss, finite = evaluate_batch(state, batch)
        # Flatten [devices, per_device] so the gather concatenates whole examples.
        examples = {k: v.reshape(-1, *v.shape[2:]) for k, v in batch.items()}
        arrays = {
            **{f"loss_{term}": value for term, value in image_loss.items()},
            "gt_boxes": examples["boxes"],
            "gt_labels": examples["labels"],
            "gt_difficult": examples["difficult"],
            "gt_mask": examples["mask"],
            "pred_boxes": detections.boxes,
            "pred_scores": detections.scores,
            "pred_labels": detections.labels,
            "pred_valid": detections.valid,
            "finite": finite,
            "image_size": examples["image_size"],
            "valid": examples["valid"],
            "index": examples["index"],
        }
        arrays = _gather(arrays)
        index = arrays.pop("index")
        for term in losses.LOSS_TERMS:  # of the real examples, not the padding's
            loss_sums[term] += float(np.sum(arrays.pop(f"loss_{term}"), where=arrays["valid"]))
        if keep_detections:
            kept.update(_image_detections(arrays, index))
        num_detections += int(np.sum(arrays["pred_valid"] & arrays["valid"][:, None]))
        num_nonfinite += int(np.sum(~arrays.pop("finite") & arrays["valid"]))
        added = evaluator.num_images
        evaluator.add_normalized_batch(**arrays)
        bar.update(evaluator.num_images - added)
    bar.close()
    elapsed = time.perf_counter() - start
    results = evaluator.compute()
    return {
        "mAP": float(results["mAP"]),
        "mAP_area": float(results["mAP_area"]),
        "AP": [float(v) for v in results["AP"]],
        "AP_area": [float(v) for v in results["AP_area"]],
        "num_positives": [int(n) for n in results["num_positives"]],
        "loss": {term: total / max(evaluator.num_images, 1) for term, total in loss_sums.items()},
        "num_images": evaluator.num_images,
        "num_detections": num_detections,
        "num_nonfinite": num_nonfinite,
        "images_per_second": evaluator.num_images / max(elapsed, 1e-9),
        "table": evaluator.summary(results),
        "precision": results["precision"],
        "recall": results["recall"],
    } | ({"detections": kept} if keep_detections else {})


def _image_detections(
    arrays: dict, index: np.ndarray
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{index in the split: (pixel xyxy boxes, scores, labels)}`` of a gathered batch's
    real examples (``index``: each one's in the split), their real detections only."""
    rows = np.flatnonzero(arrays["valid"])  # the padding's image sizes are 0
    fields = ("pred_boxes", "pred_scores", "pred_labels", "pred_valid")
    detections = postprocess.Detections(*(arrays[field][rows] for field in fields))
    sizes = arrays["image_size"][rows]
    per_image = postprocess.pixel_detections(detections, sizes[:, 0], sizes[:, 1])
    return {int(index[row]): found for row, found in zip(rows, per_image, strict=True)}


def _check_same_model(config, workdir, checkpoint, trained_classes) -> None:
    """The checkpoint's model against the config's, before the dataset is prepared (minutes
    for VOC): a config file of another run fails at once. A config counting the dataset's
    classes (0) takes the run's count from its classes.json (``trained_classes``), if any."""
    num_classes = config.model.num_classes or len(trained_classes or [])
    if not num_classes:
        return  # checked by the restore, once the dataset's classes are known
    signature = checkpoints.model_signature(config) | {"num_classes": num_classes}
    manager = checkpoints.Checkpoints(workdir, signature, read_only=True)
    try:
        manager.check_model(checkpoints.parse_which(checkpoint))
    finally:
        manager.close()


def _check_same_classes(workdir, trained, class_names) -> None:
    """Raises unless the data's classes are the ones the run saved (``trained``; None if it
    saved none): a VOC folder whose annotations gained, lost or renamed a class since
    training has other label ids, and its mAP would score the model's classes against
    other ones."""
    if trained is not None and tuple(trained) != tuple(class_names):
        raise ValueError(
            f"The data's classes {tuple(class_names)} are not the ones the run in {workdir} was "
            f"trained on ({CLASSES_FILE}: {tuple(trained)}): its annotations changed since. "
            "Evaluate on the data the run was trained with, or name the run's classes: "
            f"{run_config_flag(workdir)} "
            f"{errors.class_names_flag(trained)} "
            "--config.data.on_bad_data=skip leaves out the images of other classes."
        )


# config.eval's fields that decide which detections are scored, and how.
_DETECTION_SETTINGS = (
    "score_threshold",
    "iou_threshold",
    "max_detections",
    "pre_nms_top_k",
)


def evaluate_checkpoint(
    config, workdir, checkpoint: str | int = "latest", *, voc_results_folder=None
) -> dict:
    """Restores a checkpoint of ``workdir`` and evaluates it on the eval split.

    Writes ``workdir/eval/metrics.json``:
    ``{"mAP", "mAP_area", "AP": {class: AP}, "AP_area": {...}, "loss": {term: mean}, "step",
    "split", "num_images", "num_nonfinite", "images_per_second", "checkpoint", "settings"}``
    (``num_nonfinite``: :func:`evaluate`'s; ``settings``:
    ``config.eval``'s score and NMS thresholds and detection limits; ``split``: the eval
    split's name, 'test' or 'validation'; NaN APs, of classes without positives, as null; ``loss``
    null for a split without ground truth),
    and each class's precision-recall curve as ``workdir/eval/pr_curves.png``.

    Args:
      config: the config the run was trained with.
      workdir: the run's folder.
      checkpoint: 'latest', 'best' or a step number.
      voc_results_folder: also write the detections there as the VOC devkit's results
        files (:mod:`yolojax.voc_results`), for the evaluation server.

    Returns:
      :func:`evaluate`'s results plus ``step``, ``split`` and ``saved``: the paths of the files
      written (on process 0; a file that cannot be written, in a read-only or full workdir,
      only warns).
    """
    validate_config(config)
    # Checked before the evaluation, which for VOC2012 test takes long enough to lose.
    reason = None if voc_results_folder is None else unwritable_reason(voc_results_folder)
    if reason is not None:
        raise ValueError(
            f"The VOC results folder {voc_results_folder} cannot be written: {reason}. Name "
            "another folder (created if missing) for the results files (--voc_results)."
        )
    batch_size = eval_batch_size(config)
    trained_classes = load_class_names(workdir)
    _check_same_model(config, workdir, checkpoint, trained_classes)
    info = pipeline.get_dataset_info(config.data, train=False)
    _check_same_classes(workdir, trained_classes, info.class_names)
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
        keep_detections=voc_results_folder is not None,
    )
    results["step"], results["split"] = step, info.eval_split_name
    if jax.process_index() == 0:
        record = {
            "mAP": results["mAP"],
            "mAP_area": results["mAP_area"],
            "AP": dict(zip(info.class_names, results["AP"], strict=True)),
            "AP_area": dict(zip(info.class_names, results["AP_area"], strict=True)),
            "loss": results["loss"] if has_ground_truth(results) else None,
            "step": step,
            "split": info.eval_split_name,
            "checkpoint": str(checkpoint),
            # What decided the detections, which evaluate.py's --config can change.
            "settings": {key: config.eval[key] for key in _DETECTION_SETTINGS},
            "num_images": results["num_images"],
            "num_nonfinite": results["num_nonfinite"],
            "images_per_second": results["images_per_second"],
        }
        eval_dir = Path(workdir) / EVAL_FOLDER
        # Both made first, then written all or none: a Ctrl-C or a full disk leaves the two
        # files of one evaluation (as far as two renames can), not a new metrics.json
        # beside an earlier evaluation's curves.
        files = {
            eval_dir / "metrics.json": to_json(record).encode(),
            eval_dir / "pr_curves.png": plots.precision_recall_png(
                results, info.class_names, step=step
            ),
        }
        saves = [(list(files), functools.partial(atomic_write_files, files))]
        if voc_results_folder is not None:
            folder = Path(voc_results_folder)
            detections = results.pop("detections")
            saves.append(([folder], lambda: _write_voc_results(folder, detections, config, info)))
        results["saved"] = []
        for paths, save in saves:
            try:
                save()
                results["saved"] += paths
            except OSError as error:  # a read-only or full workdir: the results still return
                errors.notice(f"Could not save {' and '.join(map(str, paths))}: {error}")
    return results


def has_ground_truth(results: dict) -> bool:
    """Whether :func:`evaluate`'s ``results`` counted any (non-difficult) ground-truth box:
    without one every AP, and the mAP, is NaN."""
    return sum(results["num_positives"]) > 0


def no_ground_truth(split: str) -> str:
    """Why a split without ground truth has no mAP, as a sentence without its full stop."""
    return (
        f"The {split} images have no ground truth (no objects, or only difficult ones), so no mAP"
    )


def annotated_split_advice(data_config) -> str:
    """What gives a split without ground truth one: another split, or, for a folder, its
    objects drawn (a sentence's end)."""
    if data_config.source == "voc":
        return "set config.data.eval_split to a split with annotations ('voc/2012:validation')"
    return (
        "annotate their objects in their .xml files, or set config.data.eval_split to a split "
        "with annotations"
    )


def nonfinite_warning(results: dict) -> str:
    """A sentence for an evaluation's line where images' model outputs were NaN or infinite
    (:func:`evaluate`'s ``num_nonfinite``; such images count as detecting nothing), else ''."""
    count = results["num_nonfinite"]
    if not count:
        return ""
    return (
        f" The model's outputs were NaN or infinite for {count} of the "
        f"{results['num_images']} images, which count as detecting nothing: "
        f"{postprocess.NONFINITE_CAUSES}."
    )


def report(results: dict, data_config) -> str:
    """What evaluate.py prints of :func:`evaluate_checkpoint`'s ``results``: the per-class
    AP table and a line with the step, mAP, loss, split and speed; for a split without ground
    truth (VOC2012 test), the detections counted, why there is no mAP and what to do
    (``data_config``'s source says which advice applies)."""
    where = (
        f"on {results['num_images']} {results['split']} images "
        f"({results['images_per_second']:.1f} images/s)"
    )
    if not has_ground_truth(results):  # every AP is NaN: a table of them tells nothing
        return (
            f"step {results['step']}: {results['num_detections']} detections {where}. "
            f"{no_ground_truth(results['split'])}: for VOC2012 test, whose annotations are "
            "not public, submit --voc_results files to the VOC evaluation server; else "
            f"{annotated_split_advice(data_config)}.{nonfinite_warning(results)}"
        )
    return (
        f"{results['table']}\n"
        f"step {results['step']}: mAP@0.5 VOC07 11-point {results['mAP']:.4f}, "
        f"area {results['mAP_area']:.4f}, loss {results['loss']['loss']:.3f} {where}"
        f"{nonfinite_warning(results)}"
    )


def _write_voc_results(folder, detections: dict, config, info) -> None:
    """The devkit's results files of :func:`evaluate`'s ``detections``, each image named by
    its file in the eval split."""
    split, named = sources.open_split(config.data, "eval"), {}
    for index, image in detections.items():
        name = voc_results.image_id(split[index].filename, index)
        if name in named:  # one results line per box: two images cannot share a name
            raise ValueError(
                f"Two images of the eval split are both named {name!r} (by file name "
                "without extension), which VOC results files cannot tell apart: rename one."
            )
        named[name] = image
    test_set = {"validation": "val"}.get(info.eval_split_name, info.eval_split_name)
    voc_results.write_voc_results(
        folder,
        named,
        info.class_names,
        competition=voc_results.competition(config.model),
        test_set=test_set,
    )
