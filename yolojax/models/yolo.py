"""The YOLOv1 detector: a backbone plus one of three detection heads.

Output contract (docs/architecture.md): raw (N, S, S, C + 5B) float32, indexed
[row (y cell), col (x cell), channel]; per cell C class scores, then for each of the B boxes
[confidence, x, y, w, h]. No activation is applied: the loss and the decoder own that.

Heads:
  'fc'   — the paper (and the report's Darknet): the S×S feature map flattened → Dense
           `fc_hidden` → Dropout → LeakyReLU(0.1) → Dense S·S·(C+5B) (the report's order).
  'seed' — the report's ResNet/VGG choice: the backbone's own penultimate vector (ResNet:
           global-average-pooled 512·expansion; VGG: its classifier up to the second 4096
           layer; Darknet: its last layer global-average-pooled, 1024 wide, darknet_tiny's
           256) → one Dense S·S·(C+5B).
  'conv' — beyond the report, what the strongest YOLOv1 reproductions use: keep the feature
           map, bring it to S×S, `head_conv_layers` 3×3 conv + norm + LeakyReLU layers of
           `head_channels`, and a 1×1 conv to C+5B per cell. A map of exactly 2S×2S (ResNet
           and VGG at 448: 14×14) is brought to S×S by making the first conv stride 2 (as
           Darknet's own 3×3/2); any other size is adaptive-average-pooled to S×S first
           (with PyTorch's bin edges, so a map smaller than S×S is repeated, not padded).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from yolojax.models import conv, layers
from yolojax.outputs import output_channels
from yolojax.validation import check_positive_int

HEADS = ("fc", "seed", "conv")


def output_layer(head: str) -> tuple[str, ...]:
    """Where, in ``params``, the layer that writes the ``C + 5B`` channels of each cell keeps
    its ``kernel`` and ``bias`` (last axis: ``S·S·(C + 5B)`` for 'fc' and 'seed', row-major
    over (row, col, channel); ``C + 5B`` for 'conv')."""
    return ("head",) if head == "seed" else ("head", "out")


class FCHead(nn.Module):
    """The paper's head: (N, h, w, C_f) map → (N, S·S·out), pooled to S×S before flattening.

    Pooling is the identity for Darknet at 448 (its map already is 7×7); for other input
    sizes or backbones it keeps the Dense layer at S·S·C_f inputs.
    """

    grid_size: int
    out_features: int
    hidden: int = 4096
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        dense = functools.partial(nn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        x = layers.adaptive_avg_pool(x, self.grid_size)
        x = x.reshape(x.shape[0], -1)  # [n, S * S * C_f]
        x = dense(self.hidden, name="hidden")(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = layers.leaky_relu(x)
        return dense(self.grid_size * self.grid_size * self.out_features, name="out")(x)


class ConvHead(nn.Module):
    """Convolutional head: (N, h, w, C_f) map → (N, S, S, out) (see the module docstring)."""

    grid_size: int
    out_features: int
    channels: int
    num_layers: int
    norm: str = "batch"
    num_groups: int = 32
    axis_name: str | None = None
    conv_impl: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        size = self.grid_size
        first_stride = 2 if x.shape[1:3] == (2 * size, 2 * size) and self.num_layers > 0 else 1
        if first_stride == 1:
            x = layers.adaptive_avg_pool(x, size)
        norm = layers.make_norm(
            self.norm,
            train=train,
            axis_name=self.axis_name,
            num_groups=self.num_groups,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
        )
        block = layers.conv_block(self, norm, activation=layers.leaky_relu)
        for index in range(self.num_layers):
            stride = first_stride if index == 0 else 1
            x = block(self.channels, 3, strides=stride, name=f"conv_{index}")(x)
        return nn.Conv(
            self.out_features,
            (1, 1),
            conv_general_dilated=conv.for_flax(self.conv_impl),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="out",
        )(x)


class YOLO(nn.Module):
    """YOLOv1: `backbone` + detection head.

    Attributes:
      backbone: a backbone module (`Darknet`, `ResNet`, `VGG`); its variables live under
        'backbone', so ported ImageNet weights replace exactly that subtree.
      num_classes: C. grid_size: S. num_boxes: B.
      head: 'fc', 'seed' or 'conv' (see the module docstring).
      fc_hidden: hidden width of the 'fc' head (paper: 4096).
      dropout_rate: dropout of the 'fc' head (paper: 0.5).
      head_channels: width of the 'conv' head's 3×3 layers; None → min(1024, backbone
        feature channels).
      head_conv_layers: number of 3×3 layers of the 'conv' head.
      head_norm: norm of the 'conv' head, 'batch' or 'group' (use 'group' with a GroupNorm
        backbone so the model has no batch statistics at all).
      num_groups: GroupNorm groups of the 'conv' head when head_norm='group'.
      axis_name: the 'conv' head's BatchNorm cross-device axis.
      conv_impl: how the 'conv' head's convolutions are computed (see
        `yolojax.models.conv`; the backbone has its own setting).
      freeze_backbone: run the backbone in inference mode (BatchNorm uses and keeps its
        running statistics) and pass no gradient into it; pair with an optimizer that does
        not update the backbone (``config.train.freeze_backbone``).
      dtype: compute dtype of the head; the output is always float32.
      param_dtype: parameter dtype.

    Variables: 'params' and (unless every norm is GroupNorm) 'batch_stats', each with
    'backbone' and 'head' subtrees. Training needs `rngs={'dropout': key}` and
    `mutable=['batch_stats']`; initialize with `train=False`.
    """

    backbone: nn.Module
    num_classes: int = 20
    grid_size: int = 7
    num_boxes: int = 2
    head: str = "conv"
    fc_hidden: int = 4096
    dropout_rate: float = 0.5
    head_channels: int | None = None
    head_conv_layers: int = 4
    head_norm: str = "batch"
    num_groups: int = 32
    axis_name: str | None = None
    freeze_backbone: bool = False
    conv_impl: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _features(self, images, *, train: bool, output: str):
        if self.freeze_backbone:
            return jax.lax.stop_gradient(self.backbone(images, train=False, output=output))
        return self.backbone(images, train=train, output=output)

    @nn.compact
    def __call__(self, images: jnp.ndarray, *, train: bool) -> jnp.ndarray:
        """Maps (N, H, W, 3) normalized images to raw (N, S, S, C + 5B) float32 outputs."""
        if self.head not in HEADS:
            raise ValueError(f"YOLO: head must be one of {HEADS}, got {self.head!r}")
        for name in ("num_classes", "grid_size", "num_boxes"):
            check_positive_int(f"YOLO: {name}", getattr(self, name))
        size = self.grid_size
        out_features = output_channels(self.num_classes, self.num_boxes)
        common = {"dtype": self.dtype, "param_dtype": self.param_dtype, "name": "head"}
        if self.head == "seed":
            x = self._features(images, train=train, output="pre_logits")
            x = nn.Dense(size * size * out_features, **common)(x)
        else:
            x = self._features(images, train=train, output="features")
            if self.head == "fc":
                x = FCHead(
                    size,
                    out_features,
                    hidden=self.fc_hidden,
                    dropout_rate=self.dropout_rate,
                    **common,
                )(x, train=train)
            else:
                x = ConvHead(
                    size,
                    out_features,
                    channels=self.head_channels or min(1024, x.shape[-1]),
                    num_layers=self.head_conv_layers,
                    norm=self.head_norm,
                    num_groups=self.num_groups,
                    axis_name=self.axis_name,
                    conv_impl=self.conv_impl,
                    **common,
                )(x, train=train)
        # [n, S, S, C + 5B]; a flat Dense output is laid out row-major over (row, col, chan).
        return x.reshape(x.shape[0], size, size, out_features).astype(jnp.float32)
