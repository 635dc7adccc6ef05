"""VGG16 and VGG16-BN with torchvision's layout, so its ImageNet weights port exactly.

torchvision: `features` (13 3×3 convs with bias, optional BatchNorm, ReLU, five 2×2
max-pools), `AdaptiveAvgPool2d(7)`, then `classifier` = Linear 25088→4096, ReLU, Dropout,
Linear 4096→4096, ReLU, Dropout, Linear 4096→1000.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from yolojax.models import layers
from yolojax.models.layers import MAXPOOL, Conv

# torchvision's `features`: 3×3 convolutions of these widths, and 2×2 max-pools.
_WIDTHS = (64, 64, MAXPOOL, 128, 128, MAXPOOL, 256, 256, 256, MAXPOOL)
_WIDTHS += (512, 512, 512, MAXPOOL, 512, 512, 512, MAXPOOL)
VGG16_CONVS = tuple(MAXPOOL if width == MAXPOOL else Conv(3, width) for width in _WIDTHS)

# Five VALID 2×2 max-pools need at least 2**5 pixels.
MIN_INPUT_SIZE = 32

# torchvision's classifier init: N(0, 0.01) weights, zero biases.
_dense_init = nn.initializers.normal(0.01)


class VGG(nn.Module):
    """torchvision VGG16 (`batch_norm=False`) or VGG16-BN (`batch_norm=True`).

    Attributes:
      batch_norm: BatchNorm after each conv (VGG16-BN).
      convs: `features`' spec, `Conv`s and `MAXPOOL`s (see `layers.conv_stack`).
      dropout_rate: classifier dropout (torchvision: 0.5); needs a 'dropout' rng in training.
      axis_name: BatchNorm's cross-device axis (see `layers.make_norm`).
      num_classes: classifier classes for `output='logits'`.
      conv_impl: how convolutions are computed (see `yolojax.models.conv`).
      dtype: compute dtype. param_dtype: parameter dtype.

    Variables: `conv_<i>/{conv,norm}` for the i-th conv (torchvision `features.<j>`),
    `fc6`, `fc7`, `fc8` (torchvision `classifier.0`, `.3`, `.6`). `fc6`'s kernel rows are
    in (h, w, c) order, the order NHWC flattens in (torchvision's are (c, h, w)).
    """

    batch_norm: bool = False
    convs: tuple = VGG16_CONVS
    dropout_rate: float = 0.5
    axis_name: str | None = None
    num_classes: int = 1000
    conv_impl: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool, output: str = "logits") -> jnp.ndarray:
        """Runs the network.

        Args:
          x: (N, H, W, 3) images normalized with ImageNet mean/std, H, W ≥ 32.
          train: BatchNorm batch statistics and dropout when True.
          output: 'features' → (N, H/32, W/32, 512) (14×14 at 448); 'pre_logits' → (N, 4096),
            the classifier up to its second 4096 layer (after ReLU and dropout); 'logits' →
            (N, num_classes).
        """
        layers.check_image_batch(x, MIN_INPUT_SIZE, "VGG")
        layers.check_output(output, "VGG")
        norm = layers.make_norm(
            "batch" if self.batch_norm else "none",
            train=train,
            axis_name=self.axis_name,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        block = layers.conv_block(self, norm, activation=nn.relu, use_bias=True)
        x = layers.conv_stack(x.astype(self.dtype), self.convs, block)
        if output == "features":
            return x
        x = layers.adaptive_avg_pool(x, 7)
        x = x.reshape(x.shape[0], -1)  # [n, 7 * 7 * 512] in (h, w, c) order
        dense = functools.partial(
            nn.Dense, kernel_init=_dense_init, dtype=self.dtype, param_dtype=self.param_dtype
        )
        for name in ("fc6", "fc7"):
            x = nn.relu(dense(4096, name=name)(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        if output == "pre_logits":
            return x
        return dense(self.num_classes, name="fc8")(x)


VGG16 = functools.partial(VGG, batch_norm=False)
VGG16BN = functools.partial(VGG, batch_norm=True)
