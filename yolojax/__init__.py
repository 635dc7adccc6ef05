"""yolojax: YOLOv1 object detection in JAX/Flax."""

__version__ = "0.1.0"
