"""Darknet backbones: the YOLOv1 paper's 24-convolution network and a small "tiny" variant.

Both are one `Darknet` module driven by a layer spec (a tuple of `Conv(kernel, features,
stride)` and `MAXPOOL`, from `yolojax.models.layers`), so the tiny network reuses the exact
conv block of the full one.

Darknet has no torchvision ImageNet weights: here it trains from scratch (as in the report,
section 4.2). The paper instead pre-trained its first 20 convolutions on ImageNet for a week;
the extension point for such weights is `yolojax.pretrained` (a converter that fills the
`conv_<i>` variables below, e.g. from Darknet's `.weights` stream, which stores per layer the
norm bias, scale, running mean, running variance and then the OIHW kernel, and saves them
with `save_variables`).
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from yolojax.models import layers
from yolojax.models.layers import MAXPOOL, Conv

# Figure 3 of Redmon et al., "You Only Look Once" (2016): 24 convolutions, 4 max-pools;
# 448×448 input → 7×7×1024 feature map.
DARKNET24 = (
    Conv(7, 64, 2),
    MAXPOOL,
    Conv(3, 192),
    MAXPOOL,
    Conv(1, 128),
    Conv(3, 256),
    Conv(1, 256),
    Conv(3, 512),
    MAXPOOL,
    *(Conv(1, 256), Conv(3, 512)) * 4,
    Conv(1, 512),
    Conv(3, 1024),
    MAXPOOL,
    *(Conv(1, 512), Conv(3, 1024)) * 2,
    Conv(3, 1024),
    Conv(3, 1024, 2),
    Conv(3, 1024),
    Conv(3, 1024),
)

# A tiny-YOLO-like stack for CPU-sized experiments: stride 16, so a 112×112 input gives the
# 7×7 grid directly (other sizes are pooled to S×S by the YOLO conv head).
DARKNET_TINY = (
    Conv(3, 16),
    MAXPOOL,
    Conv(3, 32),
    MAXPOOL,
    Conv(3, 64),
    MAXPOOL,
    Conv(3, 128),
    MAXPOOL,
    Conv(3, 256),
    Conv(3, 256),
)


def min_input_size(spec: tuple) -> int:
    """Smallest square input for which `spec` yields a non-empty feature map.

    Walks the spec backwards: a VALID 2×2/2 max-pool needs twice its output size, a padded
    k×k/s conv needs (out − 1)·s + k − 2·(k // 2) input pixels.
    """
    needed = 1
    for layer in reversed(spec):
        if layer == MAXPOOL:
            needed *= 2
        else:
            needed = (needed - 1) * layer.stride + layer.kernel - 2 * (layer.kernel // 2)
    return needed


class Darknet(nn.Module):
    """YOLOv1's Darknet with an injected norm.

    Attributes:
      layers: the spec, `DARKNET24` (paper) or `DARKNET_TINY`.
      norm: 'batch' (the report's "Original Darknet"; the paper itself had no norm) or
        'group' (the report's "Group Norm Darknet").
      num_groups: GroupNorm groups. The report used batch size / 2 groups (9 for its batch of
        19), which divides none of 64, 192, ..., 1024 channels, so GroupNorm cannot even be
        built that way; we follow Wu & He (2018), whose default of 32 groups divides every
        Darknet width and makes the normalization independent of the batch size.
      axis_name: BatchNorm's cross-device axis (see `layers.make_norm`).
      num_classes: classifier classes for `output='logits'` (global average pool → Dense).
      conv_impl: how convolutions are computed (see `yolojax.models.conv`).
      dtype: compute dtype. param_dtype: parameter dtype.

    Variables: `conv_<i>/{conv,norm}` for the i-th convolution (0-based), `fc` for the
    classifier; `batch_stats` only with norm='batch'.
    """

    layers: tuple = DARKNET24
    norm: str = "batch"
    num_groups: int = 32
    axis_name: str | None = None
    num_classes: int = 1000
    conv_impl: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool, output: str = "logits") -> jnp.ndarray:
        """Runs the network.

        Args:
          x: (N, H, W, 3) images, H and W ≥ `min_input_size(layers)`.
          train: BatchNorm uses batch statistics (and updates running ones) when True.
          output: 'features' → (N, H/s, W/s, C_last) with s the total stride (64 for
            DARKNET24: 448 → 7×7×1024); 'pre_logits' → (N, C_last) global average;
            'logits' → (N, num_classes).
        """
        layers.check_image_batch(x, min_input_size(self.layers), "Darknet")
        layers.check_output(output, "Darknet")
        norm = layers.make_norm(
            self.norm,
            train=train,
            axis_name=self.axis_name,
            num_groups=self.num_groups,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        block = layers.conv_block(self, norm, activation=layers.leaky_relu)
        x = layers.conv_stack(x.astype(self.dtype), self.layers, block)
        return layers.pooled_classifier(
            x, output, self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype
        )
