"""yolojax: YOLOv1 object detection in JAX/Flax.

The public API of the detection core (no TensorFlow import): models, target encoding, the
loss, decoding + NMS, box utilities and the VOC evaluator. Training, data and inference live
in their modules (``yolojax.trainer``, ``yolojax.data``, ``yolojax.detector``);
``yolojax.Detector`` is inference's, imported (with TensorFlow) when first used.
"""

import importlib
import importlib.util
import pkgutil

from yolojax import cpu_backend
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
from yolojax.evaluation import VOCEvaluator
from yolojax.losses import yolo_loss
from yolojax.models import BACKBONES, HEADS, YOLO, get_classifier, get_model
from yolojax.postprocess import Detections, decode, detect, nms, pixel_detections
from yolojax.targets import encode, encode_batch

# XLA reads its flags once, when JAX first starts a backend; importing the modules above
# starts none, so this comes in time whenever yolojax is imported before JAX is first used.
cpu_backend.configure()

__version__ = "0.1.0"


def __getattr__(name: str):
    # The Detector resizes with the input pipeline's TensorFlow: imported on first use only,
    # so that the core above stays free of it.
    if name == "Detector":
        from yolojax.detector import Detector

        return Detector
    # The other modules the docs name as yolojax.train_lib, yolojax.config, ...: imported
    # when first named, for the same reason.
    if not name.startswith("_") and importlib.util.find_spec(f"yolojax.{name}") is not None:
        return importlib.import_module(f"yolojax.{name}")
    raise AttributeError(f"module 'yolojax' has no attribute {name!r}")


def __dir__() -> list[str]:
    modules = (module.name for module in pkgutil.iter_modules(__path__))
    return sorted({*globals(), "Detector", *(name for name in modules if name[0] != "_")})


__all__ = [
    "BACKBONES",
    "HEADS",
    "YOLO",
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
