"""Building blocks shared by every backbone and head: conv block, norm factory, pooling.

All tensors are NHWC. `dtype` is the compute dtype (e.g. bfloat16); parameters are created in
`param_dtype` (float32) so that mixed-precision training keeps float32 master weights.
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from yolojax.models import conv
from yolojax.validation import device_axis_hint

ModuleDef = Any
NORM_KINDS = ("batch", "group", "none")


class Conv(NamedTuple):
    """One conv + norm + activation layer of a plain stack's spec (see `conv_stack`)."""

    kernel: int
    features: int
    stride: int = 1


MAXPOOL = "maxpool"  # A 2×2 max-pool, stride 2, in a plain stack's spec.

# torchvision initializes every conv of ResNet and VGG with kaiming_normal_(mode="fan_out",
# nonlinearity="relu"); using the same scale keeps from-scratch training comparable to theirs.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def make_norm(
    kind: str,
    *,
    train: bool,
    axis_name: str | None = None,
    num_groups: int = 32,
    dtype: Any = jnp.float32,
    param_dtype: Any = jnp.float32,
) -> ModuleDef | None:
    """Returns a norm-layer constructor (a `functools.partial`) or None for `kind='none'`.

    Args:
      kind: 'batch' (BatchNorm), 'group' (GroupNorm) or 'none'.
      train: BatchNorm normalizes with the batch's statistics and updates its running ones
        when True, and uses the running statistics when False.
      axis_name: pmap/shard_map axis over which BatchNorm averages batch statistics, so
        every device normalizes with the global batch's statistics; None for one device.
      num_groups: GroupNorm group count; it must divide every normalized channel count.
      dtype: compute dtype. param_dtype: dtype of scale and bias.

    Both norms use PyTorch's epsilon (1e-5) and BatchNorm's momentum matches PyTorch's 0.1
    (Flax counts it the other way round: 0.9), so ported statistics mean the same thing.
    """
    if kind == "batch":
        return functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            axis_name=axis_name,
            dtype=dtype,
            param_dtype=param_dtype,
        )
    if kind == "group":
        return functools.partial(
            nn.GroupNorm,
            num_groups=num_groups,
            epsilon=1e-5,
            dtype=dtype,
            param_dtype=param_dtype,
        )
    if kind == "none":
        return None
    raise ValueError(f"norm kind must be one of {NORM_KINDS}, got {kind!r}")


class ConvBlock(nn.Module):
    """Convolution → optional norm → optional activation, with PyTorch-style padding.

    Padding is `kernel_size // 2` on every side (explicit, not 'SAME'): with stride 2 on an
    even input, 'SAME' pads only the bottom/right and would shift every feature by half a
    pixel relative to the PyTorch layers whose weights we port.

    Attributes:
      features: output channels.
      kernel_size: square kernel size.
      strides: square stride.
      use_bias: conv bias (redundant before BatchNorm, but VGG16-BN has one).
      norm: constructor from `make_norm`, or None.
      activation: elementwise function, or None (e.g. before a residual sum).
      conv_impl: 'auto', 'xla' or 'dot': how the convolution is computed (see
        `yolojax.models.conv`); the parameters are the same either way.
    """

    features: int
    kernel_size: int
    strides: int = 1
    use_bias: bool = False
    norm: ModuleDef | None = None
    activation: Callable[[jnp.ndarray], jnp.ndarray] | None = None
    conv_impl: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        """(N, H, W, C_in) → (N, ceil(H / strides), ceil(W / strides), features)."""
        pad = self.kernel_size // 2
        x = nn.Conv(
            self.features,
            (self.kernel_size, self.kernel_size),
            strides=(self.strides, self.strides),
            padding=((pad, pad), (pad, pad)),
            use_bias=self.use_bias,
            kernel_init=conv_kernel_init,
            conv_general_dilated=conv.for_flax(self.conv_impl),
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)
        if self.norm is not None:
            x = self.norm(name="norm")(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def conv_block(owner: nn.Module, norm: ModuleDef | None, **fixed) -> Callable[..., ConvBlock]:
    """A `ConvBlock` constructor with ``norm``, ``owner``'s ``conv_impl``, ``dtype`` and
    ``param_dtype``, and the fields in ``fixed`` (e.g. ``activation``); call it as
    ``ConvBlock`` with the rest (``features``, ``kernel_size``, ``strides``, ``name``)."""
    return functools.partial(
        ConvBlock,
        norm=norm,
        conv_impl=owner.conv_impl,
        dtype=owner.dtype,
        param_dtype=owner.param_dtype,
        **fixed,
    )


def conv_stack(x: jnp.ndarray, spec: tuple, block: Callable[..., ConvBlock]) -> jnp.ndarray:
    """Darknet's and VGG's plain stack: each `Conv` of ``spec`` a ``block(features, kernel,
    strides=stride)`` named ``conv_<i>`` (the i-th convolution, 0-based), each `MAXPOOL` a
    2×2/2 max-pool. Call it inside the owning module's compact method, so the blocks are
    its submodules. (N, H, W, C) → (N, H', W', features of the last `Conv`)."""
    conv_index = 0
    for layer in spec:
        if layer == MAXPOOL:
            x = max_pool(x, 2, strides=2)
            continue
        x = block(layer.features, layer.kernel, strides=layer.stride, name=f"conv_{conv_index}")(x)
        conv_index += 1
    return x


def pooled_classifier(
    x: jnp.ndarray, output: str, num_classes: int, *, dtype: Any, param_dtype: Any
) -> jnp.ndarray:
    """Darknet's and ResNet's tail, inside the owning module's compact method: the (N, H, W,
    C) features as they are (``output='features'``), their global average (N, C)
    ('pre_logits'), or a Dense named ``fc`` of that average (N, num_classes) ('logits')."""
    if output == "features":
        return x
    x = global_avg_pool(x)
    if output == "pre_logits":
        return x
    return nn.Dense(num_classes, dtype=dtype, param_dtype=param_dtype, name="fc")(x)


def leaky_relu(x: jnp.ndarray) -> jnp.ndarray:
    """LeakyReLU with the YOLOv1 paper's slope 0.1."""
    return nn.leaky_relu(x, negative_slope=0.1)


def max_pool(x: jnp.ndarray, window: int, strides: int, padding: int = 0) -> jnp.ndarray:
    """Square max-pooling of (N, H, W, C), padded with -inf: `nn.max_pool`'s values.

    Computed with elementwise maxima of strided views rather than with `lax.reduce_window`,
    whose gradient (select-and-scatter) XLA's CPU backend runs several times slower than
    elementwise ops. Disjoint windows (`window == strides`, Darknet's and VGG's 2×2) take
    the maximum of the window's `window²` views, with a gradient written for them
    (`_tile_max`); others (ResNet's overlapping 3×3/2 stem pool) are separable: the maximum
    over each column of `window` rows, then over `window` of those columns, 2·`window`
    views instead of `window²`, whose gradient runs in half the time (ResNet-50's train
    step at 224: 6% faster; BENCHMARKS.md, "Train step", item 2). Where a window holds
    equal maxima the gradient is shared among them, equally in disjoint windows (the
    reduce-window gradient picks one).

    Returns:
      (N, H', W', C) with H' = (H + 2·padding − window) // strides + 1, likewise W'.
    """
    if padding:
        pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
        x = jnp.pad(x, pad, constant_values=-jnp.inf)
    if window == strides:  # rows and columns past the last whole window are dropped
        height, width = x.shape[1] // window * window, x.shape[2] // window * window
        return _tile_max(x[:, :height, :width], window)
    column_maxima = _views_max(x, (window, 1), (strides, 1))
    return _views_max(column_maxima, (1, window), (1, strides))


def _views_max(x, window_hw: tuple[int, int], strides_hw: tuple[int, int]) -> jnp.ndarray:
    return functools.reduce(jnp.maximum, conv.window_views(x, window_hw, strides_hw))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _tile_max(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """Maximum over the disjoint size×size tiles of (N, H, W, C), H and W multiples of size.

    The forward pass is the maximum of strided views (3-4× faster on XLA:CPU than a
    reshape and a reduction). Its autodiff gradient would be four strided pads, which
    XLA:CPU fuses into the preceding BatchNorm and activation gradient and runs slowly
    (9 of 63 ms in the darknet_tiny train step at 160 for the first pool); the gradient
    below is one elementwise pass over the tiles. The whole darknet_tiny step gets 10-18%
    faster (BENCHMARKS.md, "Train step", item 2). Being a `custom_vjp`, it supports
    reverse-mode differentiation (`grad`, `vjp`) but not forward mode (`jvp`, `jacfwd`).
    """
    return _views_max(x, (size, size), (size, size))


def _tile_max_fwd(x, size):
    y = _tile_max(x, size)
    return y, (x, y)


def _tile_max_bwd(size, residuals, g):
    x, y = residuals
    n, height, width, c = x.shape
    tiles = x.reshape(n, height // size, size, width // size, size, c)
    winners = tiles == y[:, :, None, :, None, :]
    share = g / winners.sum(axis=(2, 4), dtype=g.dtype)  # tied maxima share the gradient
    grad = jnp.where(winners, share[:, :, None, :, None, :], jnp.zeros((), g.dtype))
    return (grad.reshape(x.shape).astype(x.dtype),)


_tile_max.defvjp(_tile_max_fwd, _tile_max_bwd)


def _adaptive_pool_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) averaging weights with PyTorch's AdaptiveAvgPool bin edges.

    Output bin i averages inputs [floor(i·in/out), ceil((i+1)·in/out)); bins may overlap
    and, when out_size > in_size, repeat inputs, exactly as in torch.
    """
    matrix = np.zeros((out_size, in_size), np.float32)
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool(x: jnp.ndarray, output_size: int) -> jnp.ndarray:
    """PyTorch's `AdaptiveAvgPool2d(output_size)` on NHWC: (N, H, W, C) → (N, s, s, C)."""
    _, height, width, _ = x.shape
    if height == width == output_size:
        return x
    if height % output_size == 0 and width % output_size == 0:
        # Equal, disjoint bins: an exact reshape-mean, cheaper than the matrix form.
        n, _, _, c = x.shape
        x = x.reshape(n, output_size, height // output_size, output_size, width // output_size, c)
        return x.mean(axis=(2, 4))
    pool_h = jnp.asarray(_adaptive_pool_matrix(height, output_size), x.dtype)
    pool_w = jnp.asarray(_adaptive_pool_matrix(width, output_size), x.dtype)
    return jnp.einsum("nhwc,ih,jw->nijc", x, pool_h, pool_w)


def global_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
    """(N, H, W, C) → (N, C)."""
    return x.mean(axis=(1, 2))


# The largest magnitude of a normalized image: 2.64 for 'imagenet' (255's), 1 for the others.
# Beyond this, the values are taken for raw pixel values.
_NORMALIZED_LIMIT = 10.0


def check_image_batch(images: jnp.ndarray, min_size: int, who: str) -> None:
    """Raises ValueError unless `images` is floating (N, H, W, 3) with H, W ≥ `min_size` and,
    where its values are known (outside jit), finite and normalized (no raw 0-255 pixels)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        hint = device_axis_hint("images", images.ndim, 4)
        raise ValueError(
            f"{who}: images must be (N, H, W, 3) NHWC, got shape {images.shape}.{hint}"
        )
    if not jnp.issubdtype(images.dtype, jnp.floating):
        # Most likely raw uint8 pixels: the model expects them normalized (see
        # yolojax.data.pipeline.preprocess_image).
        raise ValueError(
            f"{who}: images must be normalized floats, got dtype {images.dtype}; use "
            "yolojax.data.pipeline.preprocess_image (one image at a time)"
        )
    if min(images.shape[1:3]) < min_size:
        raise ValueError(
            f"{who}: images must be at least {min_size}×{min_size} pixels so the feature map "
            f"is not empty, got {images.shape[1]}×{images.shape[2]}"
        )
    if isinstance(images, jax.core.Tracer):  # under jit: the values are not known
        return
    # On the device, two numbers back; computed now, also inside another transformation
    # (nn.tabulate's), where an operation on a known value would otherwise be traced.
    with jax.ensure_compile_time_eval():
        finite = bool(jnp.isfinite(images).all())
        largest = float(jnp.abs(images).max()) if finite and images.size else 0.0
    if not finite:
        raise ValueError(f"{who}: images hold NaN or infinite values")
    if largest > _NORMALIZED_LIMIT:
        raise ValueError(
            f"{who}: images must be normalized as in training, got values up to {largest:g} "
            "(raw pixels?): config.data.normalization 'unit' is pixels / 255, 'symmetric' "
            "pixels / 127.5 - 1, 'imagenet' (pixels / 255 - mean) / std; "
            "yolojax.data.pipeline.preprocess_image does it for one uint8 image"
        )


# What a backbone returns: its spatial feature map (what YOLO heads consume), its pooled
# penultimate vector, or its classifier's logits (the ImageNet build, to check ports).
BACKBONE_OUTPUTS = ("features", "pre_logits", "logits")


def check_output(output: str, who: str) -> None:
    """Raises ValueError unless `output` is one of BACKBONE_OUTPUTS."""
    if output not in BACKBONE_OUTPUTS:
        raise ValueError(f"{who}: output must be one of {BACKBONE_OUTPUTS}, got {output!r}")
