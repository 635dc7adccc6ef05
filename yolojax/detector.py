"""A trained detector for images: the library path from a workdir to boxes.

from yolojax.detector import Detector
detector = Detector.from_workdir("runs/shapes")
result = detector(image)           # image: (H, W, 3) uint8, a PIL image, a file's path or bytes
result.boxes, result.scores, result.class_names
results = detector.detect_batch(images)  # several at once: faster on an accelerator
"""

import os
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import flax
import jax
import ml_collections
import numpy as np
from PIL import Image

from yolojax import checkpoints, train_lib
from yolojax.config import check_config_dict, load_run_config, resolve_num_classes
from yolojax.data import pipeline
from yolojax.images import read_image, to_rgb
from yolojax.postprocess import (
    Detections,
    check_outputs_finite,
    detect_with_config,
    finite_outputs,
    pixel_detections,
)
from yolojax.validation import check_positive_int, check_threshold
from yolojax.workdir import CLASSES_FILE, load_class_names


class ImageDetections(NamedTuple):
    """Detections of one image, best first.

    Attributes:
      boxes: ``(K, 4)`` float ``[xmin, ymin, xmax, ymax]`` in pixels of the input image,
        continuous: the image spans ``[0, width] × [0, height]`` (a VOC XML's 1-based
        ``xmin``, ``ymin`` are these plus 1: ``yolojax.data.pipeline.continuous_boxes``).
      scores: ``(K,)`` float32 confidence × class score.
      labels: ``(K,)`` int32 class ids.
      class_names: ``K`` names, box ``k``'s class at ``k`` (the classes by label are
        :attr:`Detector.class_names`).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str]


def _editable_copy(config) -> ml_collections.ConfigDict:
    """A copy of ``config`` whose fields can be set (also of a FrozenConfigDict)."""
    if isinstance(config, ml_collections.FrozenConfigDict):
        # as_configdict() is the frozen dict's one cached ConfigDict: edits to it would show
        # in every later as_configdict() of the caller's.
        return config.as_configdict().copy_and_resolve_references()
    return config.copy_and_resolve_references()


class Detector:
    """Runs a trained YOLO model on images of any size.

    Images are resized to the model's square input (as in training), and the boxes are
    mapped back to the input image's pixels.

    Args:
      model: the YOLO module (:func:`yolojax.get_model`).
      variables: its ``{'params': ..., 'batch_stats': ...}`` (no batch_stats for GroupNorm
        models; :func:`yolojax.train_lib.model_variables` of a train state).
      config: the run config: the grid and classes (``config.model``), the input size and
        normalization (``config.data``), NMS's settings (``config.eval``). The run's own
        (:func:`yolojax.config.load_run_config`): the variables cannot tell the input size
        or normalization they were trained with, and another detects worse without an
        error. :meth:`from_workdir` checks them against the checkpoint.
      class_names: ``config.model.num_classes`` names, in label order (any number for a
        config's ``num_classes=0``, "as many as the dataset has"): a list, a tuple or a
        NumPy array of strings.
      score_threshold: detections scored below it are dropped; higher than evaluation's
        0.005, which keeps the long tail that mAP needs.
      iou_threshold: NMS's: a box overlapping a better one of its class by more is dropped;
        None: ``config.eval.iou_threshold`` (0.45).
      max_detections: the most kept per image; None: ``config.eval.max_detections`` (100).

    Raises:
      TypeError: ``config`` is not a ConfigDict, ``class_names`` is one string, or
        ``variables`` is no mapping (a train state).
      ValueError: a bad threshold or ``max_detections``, ``class_names`` not as many as
        the config's classes, or a model of other classes, grid or boxes than the config's.
        Variables of another model are named at the first call.
    """

    def __init__(
        self,
        model,
        variables,
        config,
        class_names,
        *,
        score_threshold: float = 0.25,
        iou_threshold: float | None = None,
        max_detections: int | None = None,
    ):
        check_threshold("score_threshold", score_threshold)
        check_config_dict(config)
        if isinstance(class_names, str):  # its letters would be taken for the names
            raise TypeError(f"class_names must be a list of names, not one string: {class_names!r}")
        class_names = [str(name) for name in class_names]  # also a NumPy array of names
        if not class_names:
            raise ValueError("class_names must name the model's classes; got none.")
        if not isinstance(variables, Mapping):  # a train state: flax's error would not say
            raise TypeError(
                f"variables must be the model's {{'params': ..., 'batch_stats': ...}}; got a "
                f"{type(variables).__name__}. For a train state, pass "
                "yolojax.train_lib.model_variables(state)."
            )
        nms = {}  # the config.eval fields given
        if iou_threshold is not None:  # a NumPy number too; the config's field is a float
            check_threshold("iou_threshold", iou_threshold)
            nms["iou_threshold"] = float(iou_threshold)
        if max_detections is not None:
            nms["max_detections"] = check_positive_int("max_detections", max_detections)
        config = _editable_copy(config)  # the caller's stays as it was, and edits to it stay out
        config.eval.update(nms)
        # A config file's num_classes 0, "as many as the dataset has", counts class_names.
        resolve_num_classes(
            config,
            class_names,
            source="class_names",
            remedy=f"pass the model's {config.model.num_classes} class names, in label order",
        )
        for field in ("num_classes", "grid_size", "num_boxes"):  # a YOLO module's own
            if getattr(model, field, config.model[field]) != config.model[field]:
                raise ValueError(
                    f"The model has {field}={getattr(model, field)} but the config has "
                    f"config.model.{field}={config.model[field]}: pass the config the model "
                    "was built from (yolojax.get_model(config.model)), or use "
                    "Detector.from_workdir."
                )
        # Its own copy, never handed out: the detection is compiled per batch shape with the
        # settings of the time, so a setting changed afterwards applied to some batch
        # shapes and not others.
        self._config = config
        self._score_threshold = score_threshold
        self.class_names = class_names
        self.step = None  # the checkpoint's step, for a Detector from_workdir gives

        def detect(variables, images):
            outputs = model.apply(variables, images, train=False)
            detections = detect_with_config(outputs, config, score_threshold=score_threshold)
            return detections, finite_outputs(outputs)  # NaN outputs detect nothing

        # On the device once: NumPy arrays would be copied to the accelerator at every call.
        self._variables = jax.device_put(variables)
        self._detect = jax.jit(detect)
        self._compiled_rows = set()  # the batch sizes the detection ran at: compiled already

    @property
    def config(self) -> ml_collections.ConfigDict:
        """A copy of the run config it detects with: editing it changes nothing (for other
        settings, build another Detector, with ``score_threshold=``, ``iou_threshold=`` or
        ``max_detections=``)."""
        return self._config.copy_and_resolve_references()

    @property
    def score_threshold(self) -> float:
        """The lowest score kept (read-only: build another Detector for another)."""
        return self._score_threshold

    @classmethod
    def from_workdir(
        cls,
        workdir,
        *,
        config=None,
        checkpoint: str | int = "latest",
        score_threshold=0.25,
        iou_threshold=None,
        max_detections=None,
    ):
        """Restores ``checkpoint`` ('latest', 'best' or a step, also as text) of a training
        workdir; the Detector's ``step`` is that checkpoint's (None for one built by hand).

        ``config``: the run's config; by default the one it saved (``workdir/config.json``).
        ``score_threshold``, ``iou_threshold``, ``max_detections``: as in the constructor.
        """
        checkpoint = checkpoints.parse_which(checkpoint)  # before the restore, which is slow
        check_threshold("score_threshold", score_threshold)
        if config is not None:
            check_config_dict(config)
        if config is None:
            config = load_run_config(
                workdir,
                otherwise="pass the training config in Python: "
                "Detector.from_workdir(workdir, config=...)",
            )
        num_classes, class_names = config.model.num_classes, load_class_names(workdir)
        if class_names is None:
            if not num_classes:  # a config file's num_classes 0, "as many as the dataset has"
                raise ValueError(
                    f"config.model.num_classes is 0 (as many as the dataset has) and {workdir} "
                    f"has no {CLASSES_FILE} to count them: set config.model.num_classes, or "
                    "leave config out to use the run's own."
                )
            class_names = [f"class_{i}" for i in range(num_classes)]
        elif num_classes and len(class_names) != num_classes:
            raise ValueError(
                f"The run in {workdir} has {len(class_names)} classes ({CLASSES_FILE}), but the "
                f"config has config.model.num_classes={num_classes}: pass the config the run "
                "was trained with, or leave config out to use the run's own."
            )
        if config.model.num_classes == 0:  # the restore builds the model: it needs the count
            config = _editable_copy(config)  # the caller's stays as it was
            resolve_num_classes(config, class_names)
        model, state, step = train_lib.restore_trained_state(config, workdir, checkpoint)
        variables = train_lib.model_variables(state)
        detector = cls(
            model,
            variables,
            config,
            class_names,
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
            max_detections=max_detections,
        )
        detector.step = step  # which one 'latest' or 'best' was, as the run stood
        return detector

    def __call__(self, image) -> ImageDetections:
        """Detects objects in one image.

        Args:
          image: an ``(H, W, 3)`` uint8 RGB array (also RGBA or greyscale, see
            :func:`yolojax.images.to_rgb`), a PIL image, or an image file: its path, its
            bytes or a binary file object (read upright, as its EXIF orientation says:
            :func:`yolojax.images.read_image`).

        Returns:
          The detections, boxes in pixels of that image.

        Raises:
          yolojax.postprocess.NonFiniteOutputsError: the model's outputs are NaN or
            infinite (weights that are, or a bfloat16 overflow): no detection can be made.
        """
        return self._detect_together([_as_rgb(image)], batch_size=1)[0]

    def detect_batch(
        self, images: Iterable, *, batch_size: int = 16, pad_to_batch_size: bool = False
    ) -> list[ImageDetections]:
        """Detects objects in several images, up to ``batch_size`` of them in one call of the
        model: on an accelerator, far faster than one call per image. The detections are
        those of one call per image, to float rounding (the model runs on other batch
        shapes): a score within about 1e-6 of the threshold may fall on the other side.

        Args:
          images: a list (or any iterable, or an ``(N, H, W, 3)`` array) of what
            :meth:`__call__` takes, each of any size; read ``batch_size`` at a time, so a
            long list of paths is not held in memory at once.
          batch_size: the most images the model runs on at once (device memory). A shorter
            batch is padded to the next power of two (1, 2, 4, ...), so that the model
            compiles for a few batch sizes only; the last of several batches is padded to
            ``batch_size``, which the others compiled for (unless its power of two was
            compiled already): a compilation takes longer than a few padding rows.
          pad_to_batch_size: pad a shorter batch to ``batch_size`` too (unless its power of
            two was compiled already), for a pass over many images in calls of
            ``batch_size``, as ``yolojax.predict`` makes: the last call then compiles
            nothing new.

        Returns:
          The detections of each image, in order, boxes in pixels of that image.

        Raises:
          yolojax.postprocess.NonFiniteOutputsError: as :meth:`__call__`, naming the first
            call's images by their index in ``images``.
        """
        check_positive_int("batch_size", batch_size)
        if _is_one_image(images):
            raise ValueError(
                "detect_batch takes a list of images; for one image, call the detector: "
                "detector(image)."
            )
        results, batch = [], []
        for index, image in enumerate(images):
            try:
                batch.append(_as_rgb(image))
            except ValueError as error:  # which of the images
                raise ValueError(f"images[{index}]: {error}") from error
            if len(batch) == batch_size:
                results += self._detect_together(batch, batch_size, first_index=len(results))
                batch = []
        if batch:  # after a full batch: at its size, compiled already
            results += self._detect_together(
                batch, batch_size, pad_to_batch_size or bool(results), first_index=len(results)
            )
        return results

    def warm_up(self, batch_size: int = 16) -> None:
        """Compiles the detection for each batch shape that calls of up to ``batch_size``
        images run at (1, 2, 4, ... and ``batch_size``: see :meth:`detect_batch`), so that no
        later call waits for a compilation. Otherwise the first call of each shape compiles
        (seconds each for configs/shapes.py's model on a CPU, more for larger ones): in a
        service, call it before taking requests. JAX's persistent compilation cache
        (``JAX_COMPILATION_CACHE_DIR``) makes it fast in a later process too.

        Args:
          batch_size: the largest ``batch_size`` the Detector will be called with (1: one
            image a call only).
        """
        check_positive_int("batch_size", batch_size)
        blank = np.zeros((1, 1, 3), np.uint8)
        for rows in sorted({_batch_rows(n, batch_size) for n in range(1, batch_size + 1)}):
            self._detect_together([blank] * rows, batch_size)

    def _detect_together(
        self,
        images: list[np.ndarray],
        batch_size: int,
        pad_to_batch_size: bool = False,
        first_index: int = 0,
    ) -> list[ImageDetections]:
        """The detections of at most ``batch_size`` RGB images, in one call of the model,
        padded to the next power of two (or ``batch_size``, see :meth:`detect_batch`);
        ``first_index``: the first image's index in the caller's, for errors."""
        size, normalization = self._config.data.image_size, self._config.data.normalization
        rows = _batch_rows(len(images), batch_size)
        if pad_to_batch_size and rows not in self._compiled_rows:
            rows = batch_size
        model_input = np.zeros((rows, size, size, 3), np.float32)
        for row, image in enumerate(images):
            model_input[row] = pipeline.preprocess_image(
                image, image_size=size, normalization=normalization
            )
        try:
            detections, finite = jax.device_get(
                self._detect(self._variables, jax.device_put(model_input))
            )
        except flax.errors.FlaxError as error:  # the variables of another model
            raise ValueError(
                "The Detector's variables do not fit its model and config "
                f"({type(error).__name__}: {str(error).splitlines()[0]}). Pass the "
                "variables of a state trained with this config "
                "(yolojax.train_lib.model_variables(state): params, and batch_stats for "
                "BatchNorm models), or use Detector.from_workdir."
            ) from error
        self._compiled_rows.add(rows)
        check_outputs_finite(finite[: len(images)], first_index)
        real = Detections(*(field[: len(images)] for field in detections))  # not the padding
        heights, widths = zip(*(image.shape[:2] for image in images), strict=True)
        return [
            ImageDetections(
                boxes=boxes.astype(np.float32),
                scores=scores,
                labels=labels,
                class_names=[self.class_names[i] for i in labels],
            )
            for boxes, scores, labels in pixel_detections(real, heights, widths)
        ]


def _batch_rows(images: int, batch_size: int) -> int:
    """The batch a call of ``images`` images is padded to: the next power of two, at most
    ``batch_size``, so that the model compiles for a few batch shapes only."""
    return min(1 << (images - 1).bit_length(), batch_size)


def _is_image_file(image) -> bool:
    """Whether ``image`` is an image file, for :func:`read_image`: its path, its bytes, or a
    file object."""
    return isinstance(image, str | os.PathLike | bytes | bytearray) or hasattr(image, "read")


def _as_rgb(image) -> np.ndarray:
    """An image as :meth:`Detector.__call__` takes it (an array, a PIL image, a file), as its
    ``(H, W, 3)`` uint8 RGB array."""
    return read_image(image) if _is_image_file(image) else to_rgb(image)


def _is_one_image(images) -> bool:
    """Whether ``images``, given for a list of images, is one image: a file, a PIL image, or
    an ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` array."""
    if _is_image_file(images) or isinstance(images, Image.Image):
        return True
    shape = getattr(images, "shape", ())
    return len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4))
