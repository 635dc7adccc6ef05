"""Prints a parameter / FLOP summary, per module, of the YOLO model a config describes.

    python -m yolojax.models --config configs/voc.py[:variant] [--image_size 448] [--depth 2]
    python -m yolojax.models --config configs/voc.py --config.model.backbone=resnet50

FLOPs come from XLA's cost analysis of each module's forward pass on one image; nothing is
initialized for real (Flax's `tabulate` runs under `jax.eval_shape`).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from absl import flags
from ml_collections import config_flags

from yolojax import cli
from yolojax.models import get_model
from yolojax.validation import check_positive_int

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "config file defining get_config(); `path:arg` selects a variant"
)
# The bounds refuse 0 (which read as "not given", the config's size) and a negative depth
# (an empty table) as bad flags.
_IMAGE_SIZE = flags.DEFINE_integer(
    "image_size", None, "square input size; default: config.data.image_size", lower_bound=1
)
_DEPTH = flags.DEFINE_integer(
    "depth", 2, "module nesting depth shown in the table (0: the model alone)", lower_bound=0
)


def summarize(model_config: Any, image_size: int, *, depth: int = 2) -> str:
    """Returns a table of each module's input/output shapes, parameters and FLOPs.

    Args:
      model_config: `config.model` (see `yolojax.models.get_model`).
      image_size: square input size in pixels.
      depth: how many levels of submodules get their own row.
    """
    image_size = check_positive_int("image_size", image_size)
    model = get_model(model_config, name="config.model")
    images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    table = nn.tabulate(
        model,
        jax.random.key(0),
        depth=depth,
        compute_flops=True,
        console_kwargs={"width": 200, "force_terminal": False},
    )(images, train=False)
    head = f"{model_config.backbone} + {model.head} head, {image_size}×{image_size} input"
    return f"{head}\n{table}"


def main(argv: list[str]) -> None:
    cli.start(argv)
    config = _CONFIG.value
    image_size = config.data.image_size if _IMAGE_SIZE.value is None else _IMAGE_SIZE.value
    with cli.command_errors():  # a bad model field is its message, as in train.py
        print(summarize(config.model, image_size, depth=_DEPTH.value))


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    cli.run(main)
