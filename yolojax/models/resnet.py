"""ResNet-18/34/50/101/152 with torchvision's layout, so its ImageNet weights port exactly.

torchvision's ResNet is "v1.5": a bottleneck block downsamples in its 3×3 convolution, not in
its first 1×1. Every BatchNorm uses eps 1e-5 and momentum 0.1 (PyTorch convention).
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from yolojax.models import layers

# Smallest input whose feature map is non-empty; padded convs and the padded stem max-pool
# never produce an empty map, this only keeps the stride-32 map meaningful.
MIN_INPUT_SIZE = 32


class _ResidualBlock(nn.Module):
    """The fields of `BasicBlock` and `Bottleneck`: output channels = `features` ·
    `expansion`; the first 3×3 convolution (and the shortcut) downsample by `strides`."""

    features: int
    strides: int
    norm: Any
    conv_impl: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32


class BasicBlock(_ResidualBlock):
    """Two 3×3 convs (ResNet-18/34). Output channels = `features`."""

    expansion = 1

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """(N, H, W, C_in) → (N, H / strides, W / strides, features)."""
        conv = layers.conv_block(self, self.norm)
        y = conv(self.features, 3, strides=self.strides, activation=nn.relu, name="conv1")(x)
        y = conv(self.features, 3, name="conv2")(y)
        return nn.relu(y + _shortcut(x, self.features, self.strides, conv))


class Bottleneck(_ResidualBlock):
    """1×1 reduce, 3×3 (strided, v1.5), 1×1 expand ×4 (ResNet-50/101/152)."""

    expansion = 4

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """(N, H, W, C_in) → (N, H / strides, W / strides, 4 · features)."""
        conv = layers.conv_block(self, self.norm)
        out_features = self.features * self.expansion
        y = conv(self.features, 1, activation=nn.relu, name="conv1")(x)
        y = conv(self.features, 3, strides=self.strides, activation=nn.relu, name="conv2")(y)
        y = conv(out_features, 1, name="conv3")(y)
        return nn.relu(y + _shortcut(x, out_features, self.strides, conv))


def _shortcut(x: jnp.ndarray, out_features: int, strides: int, conv) -> jnp.ndarray:
    """Identity, or torchvision's `downsample` (1×1 strided conv + norm) when shapes change."""
    if strides == 1 and x.shape[-1] == out_features:
        return x
    return conv(out_features, 1, strides=strides, name="downsample")(x)


class ResNet(nn.Module):
    """torchvision ResNet.

    Attributes:
      stage_sizes: blocks per stage, e.g. (3, 8, 36, 3) for ResNet-152.
      block_cls: `BasicBlock` or `Bottleneck`.
      axis_name: BatchNorm's cross-device axis (see `layers.make_norm`).
      num_classes: classifier classes for `output='logits'`.
      conv_impl: how convolutions are computed (see `yolojax.models.conv`).
      dtype: compute dtype. param_dtype: parameter dtype.

    Variables: `stem/{conv,norm}` (torchvision `conv1`, `bn1`), `layer<s>_<b>/conv<k>` and
    `layer<s>_<b>/downsample` (torchvision `layer<s>.<b>.conv<k>` / `bn<k>` / `downsample`),
    `fc`.
    """

    stage_sizes: tuple[int, ...]
    block_cls: type[nn.Module]
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
          train: BatchNorm uses batch statistics (and updates running ones) when True.
          output: 'features' → (N, ⌈H/32⌉, ⌈W/32⌉, 512 · expansion) (14×14×2048 for
            ResNet-152 at 448); 'pre_logits' → (N, 512 · expansion) global average;
            'logits' → (N, num_classes).
        """
        layers.check_image_batch(x, MIN_INPUT_SIZE, "ResNet")
        layers.check_output(output, "ResNet")
        norm = layers.make_norm(
            "batch",
            train=train,
            axis_name=self.axis_name,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        stem = layers.conv_block(self, norm, activation=nn.relu)
        x = stem(64, 7, strides=2, name="stem")(x.astype(self.dtype))
        x = layers.max_pool(x, 3, strides=2, padding=1)
        for stage, num_blocks in enumerate(self.stage_sizes):
            for block in range(num_blocks):
                x = self.block_cls(
                    features=64 * 2**stage,
                    strides=2 if stage > 0 and block == 0 else 1,
                    norm=norm,
                    conv_impl=self.conv_impl,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=f"layer{stage + 1}_{block}",
                )(x)
        return layers.pooled_classifier(
            x, output, self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype
        )


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = functools.partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
ResNet101 = functools.partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck)
ResNet152 = functools.partial(ResNet, stage_sizes=(3, 8, 36, 3), block_cls=Bottleneck)
RESNETS = {
    "resnet18": ResNet18,
    "resnet34": ResNet34,
    "resnet50": ResNet50,
    "resnet101": ResNet101,
    "resnet152": ResNet152,
}
