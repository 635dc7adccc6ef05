"""yolojax: YOLOv1 object detection in JAX/Flax.

The public API of the detection core (no TensorFlow import): models, target encoding, the
loss, decoding + NMS, box utilities and the VOC evaluator. Training, data and inference live
in their modules (``yolojax.trainer``, ``yolojax.data``, ``yolojax.detector``);
``yolojax.Detector`` is inference's, imported (with TensorFlow) when first used.

Each name is imported from its module when first used (``from yolojax import detect`` or
``yolojax.detect``), and so is each module (``yolojax.train_lib``): ``import yolojax`` itself
loads neither JAX nor TensorFlow, so that the command-line tools can restart themselves with
huge pages (:mod:`yolojax.huge_pages`) before they load JAX, and stop at once on a Ctrl-C
while they start (:func:`yolojax.cli.launch`).
"""

import importlib
import importlib.util
import pkgutil
from typing import TYPE_CHECKING

from yolojax import cpu_backend

# XLA reads its flags once, when JAX first starts a backend: set here, on `import yolojax`,
# they come in time whenever yolojax is imported before JAX is first used.
cpu_backend.configure()

__version__ = "0.1.0"

# Public name → the module that defines it.
_EXPORTS = {
    **dict.fromkeys(
        (
            "box_area",
            "cxcywh_to_yxyx",
            "elementwise_iou",
            "normalized_yxyx_to_pixel_xyxy",
            "pairwise_iou",
            "pixel_xyxy_to_normalized_yxyx",
            "xyxy_to_yxyx",
            "yxyx_to_cxcywh",
            "yxyx_to_xyxy",
        ),
        "boxes",
    ),
    "VOCEvaluator": "evaluation",
    "yolo_loss": "losses",
    **dict.fromkeys(("BACKBONES", "HEADS", "YOLO", "get_classifier", "get_model"), "models"),
    **dict.fromkeys(
        ("Candidates", "Detections", "decode", "detect", "nms", "pixel_detections"), "postprocess"
    ),
    **dict.fromkeys(("encode", "encode_batch"), "targets"),
    # The Detector resizes with the input pipeline's TensorFlow.
    "Detector": "detector",
}

# Every name but the Detector: `from yolojax import *` loads no TensorFlow.
__all__ = [
    "BACKBONES",
    "HEADS",
    "YOLO",
    "Candidates",
    "Detections",
    "VOCEvaluator",
    "box_area",
    "cxcywh_to_yxyx",
    "decode",
    "detect",
    "elementwise_iou",
    "encode",
    "encode_batch",
    "get_classifier",
    "get_model",
    "nms",
    "normalized_yxyx_to_pixel_xyxy",
    "pairwise_iou",
    "pixel_detections",
    "pixel_xyxy_to_normalized_yxyx",
    "xyxy_to_yxyx",
    "yolo_loss",
    "yxyx_to_cxcywh",
    "yxyx_to_xyxy",
]

if TYPE_CHECKING:  # for type checkers and editors, which do not run __getattr__
    from yolojax.boxes import (
        box_area,
        cxcywh_to_yxyx,
        elementwise_iou,
        normalized_yxyx_to_pixel_xyxy,
        pairwise_iou,
        pixel_xyxy_to_normalized_yxyx,
        xyxy_to_yxyx,
        yxyx_to_cxcywh,
        yxyx_to_xyxy,
    )
    from yolojax.detector import Detector  # noqa: F401 (not in __all__: TensorFlow)
    from yolojax.evaluation import VOCEvaluator
    from yolojax.losses import yolo_loss
    from yolojax.models import BACKBONES, HEADS, YOLO, get_classifier, get_model
    from yolojax.postprocess import (
        Candidates,
        Detections,
        decode,
        detect,
        nms,
        pixel_detections,
    )
    from yolojax.targets import encode, encode_batch


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"yolojax.{_EXPORTS[name]}"), name)
        globals()[name] = value  # found directly from now on
        return value
    # The modules the docs name as yolojax.train_lib, yolojax.config, ...
    if not name.startswith("_") and importlib.util.find_spec(f"yolojax.{name}") is not None:
        return importlib.import_module(f"yolojax.{name}")
    raise AttributeError(f"module 'yolojax' has no attribute {name!r}")


def __dir__() -> list[str]:
    modules = (module.name for module in pkgutil.iter_modules(__path__))
    return sorted({*globals(), *_EXPORTS, *(name for name in modules if name[0] != "_")})
