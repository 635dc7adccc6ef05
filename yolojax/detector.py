"""A trained detector for plain image arrays: the library path from a workdir to boxes.

from yolojax.detector import Detector
detector = Detector.from_workdir("runs/shapes")
result = detector(image)           # image: (H, W, 3) uint8
result.boxes, result.scores, result.class_names
"""

import json
from pathlib import Path
from typing import NamedTuple

import jax
import ml_collections
import numpy as np

from yolojax import boxes as box_ops
from yolojax import train_lib
from yolojax.config import default_config
from yolojax.data import pipeline
from yolojax.eval_lib import detect_with_config, model_variables
from yolojax.models import get_model
from yolojax.postprocess import check_threshold
from yolojax.workdir import CLASSES_FILE, CONFIG_FILE


class ImageDetections(NamedTuple):
    """Detections of one image, best first.

    Attributes:
      boxes: ``(K, 4)`` float ``[xmin, ymin, xmax, ymax]`` in pixels of the input image.
      scores: ``(K,)`` confidence × class score.
      labels: ``(K,)`` int class ids.
      class_names: ``K`` names.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str]


_PASS_THE_CONFIG = "pass the training config in Python: Detector.from_workdir(workdir, config=...)"


def load_run_config(workdir, *, otherwise: str = _PASS_THE_CONFIG) -> ml_collections.ConfigDict:
    """The config a run saved as ``workdir/config.json`` (locked, like a loaded config file).

    The saved values are laid over :func:`yolojax.config.default_config`, so that a field
    added to yolojax after the run was saved has its default, the value the run had in effect.

    Args:
      workdir: the training run's folder.
      otherwise: how to give the config instead, for the error messages.

    Raises:
      FileNotFoundError: there is no ``config.json``.
      ValueError: it is not JSON, or a value has the wrong type for its field.
    """
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: is {workdir} a training workdir? train.py writes the run's "
            f"config there; for a run without it, {otherwise}."
        )
    config = default_config()
    try:
        saved = json.loads(path.read_text())
        _check_saved_fields(saved, config.to_dict())
        config.update(saved)  # nested sections field by field
    except (ValueError, TypeError, AttributeError) as error:  # not JSON; a wrong type
        raise ValueError(
            f"{path} is not a config this version of yolojax can read ({error}); was it edited "
            f"by hand, or saved by a newer yolojax? Fix the file, or {otherwise}."
        ) from None
    config.lock()
    return config


def _check_saved_fields(saved, defaults: dict, section: str = "") -> None:
    """Raises ValueError naming the first field of ``saved`` that ``defaults`` has no place for.

    ``ConfigDict.update`` would add an unknown field silently (a run of a newer yolojax whose
    new field this version would ignore), and would accept ``null`` for a field that must be
    set, which fails later far from the file.
    """
    if not isinstance(saved, dict):
        raise TypeError(f"{section or 'the file'} should be a JSON object, not {saved!r}")
    for key, value in saved.items():
        name = f"{section}.{key}" if section else key
        if key not in defaults:
            raise ValueError(f"{name} is not a field of yolojax's config")
        default = defaults[key]
        if isinstance(default, dict):
            _check_saved_fields(value, default, section=name)
        elif value is None and default is not None:
            raise ValueError(f"{name} is null but must be set (default {default!r})")


def load_class_names(workdir, num_classes: int) -> list[str]:
    """Class names saved by the trainer; ``class_<i>`` when the run saved none."""
    path = Path(workdir) / CLASSES_FILE
    if path.exists():
        return list(json.loads(path.read_text()))
    return [f"class_{i}" for i in range(num_classes)]


class Detector:
    """Runs a trained YOLO model on images of any size.

    Images are resized to the model's square input (as in training), and the boxes are
    mapped back to the input image's pixels.
    """

    def __init__(self, model, variables, config, class_names, *, score_threshold: float = 0.25):
        check_threshold("score_threshold", score_threshold)
        if len(class_names) != config.model.num_classes:
            raise ValueError(
                f"class_names must have config.model.num_classes={config.model.num_classes} "
                f"names; got {len(class_names)}."
            )
        self.config = config
        self.class_names = list(class_names)
        self.score_threshold = score_threshold

        def detect(variables, images):
            outputs = model.apply(variables, images, train=False)
            return detect_with_config(outputs, config, score_threshold=score_threshold)

        self._variables = variables
        self._detect = jax.jit(detect)

    @classmethod
    def from_workdir(
        cls, workdir, *, config=None, checkpoint: str | int = "latest", score_threshold=0.25
    ):
        """Restores ``checkpoint`` ('latest', 'best' or a step) of a training workdir."""
        # Checked before the restore, which takes a while.
        if checkpoint not in ("latest", "best") and (
            isinstance(checkpoint, bool) or not isinstance(checkpoint, int) or checkpoint < 0
        ):
            raise ValueError(
                f"checkpoint must be 'latest', 'best' or a step number; got {checkpoint!r}."
            )
        check_threshold("score_threshold", score_threshold)
        config = config if config is not None else load_run_config(workdir)
        _, state, _ = train_lib.restore_trained_state(config, workdir, checkpoint)
        model = get_model(config.model)
        class_names = load_class_names(workdir, config.model.num_classes)
        return cls(
            model, model_variables(state), config, class_names, score_threshold=score_threshold
        )

    def __call__(self, image: np.ndarray) -> ImageDetections:
        """Detects objects in one ``(H, W, 3)`` uint8 RGB image."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"image must have shape (H, W, 3) RGB; got {image.shape}.")
        height, width = image.shape[:2]
        model_input = pipeline.preprocess_image(
            image,
            image_size=self.config.data.image_size,
            normalization=self.config.data.normalization,
        )
        detections = jax.device_get(self._detect(self._variables, model_input[None]))
        valid = detections.valid[0]
        boxes = box_ops.normalized_yxyx_to_pixel_xyxy(detections.boxes[0][valid], height, width)
        labels = detections.labels[0][valid]
        return ImageDetections(
            boxes=boxes.astype(np.float32),
            scores=detections.scores[0][valid],
            labels=labels,
            class_names=[self.class_names[i] for i in labels],
        )
