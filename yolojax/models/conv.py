"""2-D convolution as XLA's convolution or as one matrix product, chosen per layer.

XLA's CPU backend transposes activations to batch-last layouts for a convolution's weight
gradient; for small feature maps its convolution (YNNPACK's or, with the flag that
`yolojax.cpu_backend` sets, XLA's own) is slower than the same arithmetic as one matrix
product (`python -m benchmarks.conv`; BENCHMARKS.md, "Train step"). For 1×1 kernels on large
maps the single layers are about even with XLA's own convolution, but whole train steps are
faster with the matrix product (ResNet-50 at 224: 2.62 against 2.99 s; Darknet 3.90
against 4.99 s). So on a CPU, and only there by default, such layers are computed as a
matrix product:

  1×1 kernel   (N, H, W, C_in) @ (C_in, C_out), strided by slicing first: the same numbers.
  k×k kernel with at most `MAX_DOT_ROWS` output positions in the batch (N·H'·W', the
               matrix product's rows): the k·k shifted (strided) views of the padded input
               side by side, (N, H', W', k·k·C_in), times the kernel reshaped to
               (k·k·C_in, C_out) ("im2col"). The copy is k·k times the input, which is
               small exactly when the batch's maps are.

The matrix product's gradients are autodiff's. Its weight gradient contracts the long N·H·W
axis of both operands, which XLA:CPU (jaxlib 0.10 and 0.12) computes as one product of the
two as they are. A gradient written out when the compiled step wrote the BatchNorm
backward's output transposed for it compiles to the same program now, and was removed
(BENCHMARKS.md, "Train step", item 6).

Everything else, and everything on GPUs and TPUs (where cuDNN and XLA's own convolution
emitters are the fast path), stays `lax.conv_general_dilated`. Inputs stay NHWC and kernels
(kh, kw, C_in, C_out) either way, so checkpoints and ported weights do not depend on the
choice.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

CONV_IMPLS = ("auto", "xla", "dot")
# The most rows of the matrix product (N·H'·W', per device) for which 'auto' picks it: 7×7 maps
# at batch 8 (392 rows), as in YOLO's heads and ResNet's last stage at 224 px, are below it.
# Measured layer by layer on the CPU (3×3, 64-2048 channels, 5²-14² maps, batch 8-32), the
# matrix product wins up to about 800 rows, ties around 800 and loses from 1,568 (14×14 at
# batch 8, 7×7 at batch 32), the im2col copy growing with the batch; whole train steps agree
# (BENCHMARKS.md, "Train step", item 1).
MAX_DOT_ROWS = 512


def _output_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
    return (size + pad[0] + pad[1] - kernel) // stride + 1


def _explicit_padding(lhs_shape, window: tuple[int, int], window_strides, padding):
    """((top, bottom), (left, right)) for explicit pairs or 'SAME' / 'VALID'."""
    if isinstance(padding, str):
        return lax.padtype_to_pads(lhs_shape[1:3], window, window_strides, padding)
    return padding


def window_views(x, window: tuple[int, int], strides: tuple[int, int]) -> list:
    """The kh·kw strided views of an (already padded) NHWC map that a kh×kw window with
    `strides` sees, in row-major (i, j) order.

    Returns:
      kh·kw arrays (N, H', W', C), H' = (H − kh) // sh + 1 and W' = (W − kw) // sw + 1;
      view (i, j) holds x[:, i + sh·y, j + sw·x', :] at output position (y, x').
    """
    (kh, kw), (sh, sw) = window, strides
    out_h = _output_size(x.shape[1], kh, sh, (0, 0))
    out_w = _output_size(x.shape[2], kw, sw, (0, 0))
    return [
        x[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw, :]
        for i in range(kh)
        for j in range(kw)
    ]


def conv_as_dot(lhs, rhs, window_strides, padding, precision=None):
    """NHWC × HWIO convolution as one `lax.dot_general` (see the module docstring).

    Args:
      lhs: (N, H, W, C_in) input.
      rhs: (kh, kw, C_in, C_out) kernel.
      window_strides: (sh, sw).
      padding: ((top, bottom), (left, right)) or 'SAME' / 'VALID'.
      precision: as for `lax.dot_general`.

    Returns:
      (N, H', W', C_out), equal to `lax.conv_general_dilated` with NHWC/HWIO/NHWC
      dimension numbers up to floating-point summation order.
    """
    kh, kw, _, c_out = rhs.shape
    padding = _explicit_padding(lhs.shape, (kh, kw), window_strides, padding)
    x = jnp.pad(lhs, ((0, 0), *padding, (0, 0)))
    views = window_views(x, (kh, kw), window_strides)
    # [n, out_h, out_w, kh * kw * c_in], ordered (i, j, c) like the reshaped HWIO kernel.
    patches = views[0] if len(views) == 1 else lax.concatenate(views, dimension=3)
    n, out_h, out_w, k = patches.shape
    kernel = rhs.reshape(k, c_out)
    out = lax.dot(patches.reshape(n * out_h * out_w, k), kernel, precision=precision)
    return out.reshape(n, out_h, out_w, c_out)


def uses_dot(lhs_shape, rhs_shape, window_strides, padding, conv_impl: str) -> bool:
    """Whether a plain NHWC convolution of these shapes runs as a matrix product under
    `conv_impl` on the current default backend."""
    if conv_impl == "xla":
        return False
    if conv_impl == "dot":
        return True
    if jax.default_backend() != "cpu":
        return False
    kh, kw = rhs_shape[:2]
    if kh == kw == 1:
        return True
    padding = _explicit_padding(lhs_shape, (kh, kw), window_strides, padding)
    out_h = _output_size(lhs_shape[1], kh, window_strides[0], padding[0])
    out_w = _output_size(lhs_shape[2], kw, window_strides[1], padding[1])
    return lhs_shape[0] * out_h * out_w <= MAX_DOT_ROWS


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
    *,
    conv_impl: str = "auto",
):
    """`lax.conv_general_dilated`'s signature (what `flax.linen.Conv` calls), computing
    plain NHWC convolutions as a matrix product where `conv_impl` says so.

    conv_impl: 'xla' always XLA's convolution; 'dot' always the matrix product; 'auto' the
    matrix product on the CPU backend for 1×1 kernels and for k×k kernels with at most
    `MAX_DOT_ROWS` output positions in the batch. Dilated, grouped or non-NHWC
    convolutions always go to XLA.
    """
    plain = (
        feature_group_count == 1
        and batch_group_count == 1
        and lhs_dilation in (None, (1, 1))
        and rhs_dilation in (None, (1, 1))
        and preferred_element_type is None
        and dimension_numbers is not None
        and tuple(dimension_numbers)
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, ("NHWC", "HWIO", "NHWC"))
    )
    if plain and uses_dot(lhs.shape, rhs.shape, window_strides, padding, conv_impl):
        return conv_as_dot(lhs, rhs, window_strides, padding, precision)
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation,
        rhs_dilation,
        dimension_numbers,
        feature_group_count,
        batch_group_count,
        precision,
        preferred_element_type,
    )


def for_flax(conv_impl: str):
    """The `conv_general_dilated` argument of `flax.linen.Conv` for `conv_impl`."""
    return functools.partial(conv_general_dilated, conv_impl=conv_impl)
