"""Tests for yolojax.models.conv and layers.max_pool: the matrix-product convolution and the
strided-view max-pool give XLA's own results (values and gradients), and 'auto' picks them
where documented."""

import flax.linen as nn
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax import config as config_lib
from yolojax import models
from yolojax.models import conv, layers

HIGHEST = jax.lax.Precision.HIGHEST


def _xla_conv(x, kernel, strides, padding):
    numbers = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, ("NHWC", "HWIO", "NHWC"))
    return jax.lax.conv_general_dilated(
        x, kernel, strides, padding, dimension_numbers=numbers, precision=HIGHEST
    )


@pytest.mark.parametrize(
    ("size", "kernel_size", "stride", "padding"),
    [
        (9, 3, 1, ((1, 1), (1, 1))),  # ResNet/Darknet 3×3
        (8, 1, 2, ((0, 0), (0, 0))),  # ResNet's strided 1×1 downsample
        (7, 3, 2, ((1, 1), (1, 1))),  # strided 3×3 on an odd map
        (10, 7, 2, ((3, 3), (3, 3))),  # the ResNet stem
        (6, 3, 1, "SAME"),
        (6, 2, 2, "VALID"),
        (5, 3, 1, ((0, 2), (1, 0))),  # asymmetric padding
    ],
)
def test_conv_as_dot_equals_xla_convolution_and_its_gradients(size, kernel_size, stride, padding):
    rng = np.random.default_rng(size * 10 + kernel_size)
    x = jnp.asarray(rng.standard_normal((2, size, size, 3)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((kernel_size, kernel_size, 3, 5)), jnp.float32)
    strides = (stride, stride)

    expected = _xla_conv(x, kernel, strides, padding)
    got = conv.conv_as_dot(x, kernel, strides, padding, precision=HIGHEST)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    def loss(fn):
        return lambda x, k: jnp.sum(jnp.sin(fn(x, k, strides, padding)))

    grads = jax.grad(loss(conv.conv_as_dot), argnums=(0, 1))(x, kernel)
    expected_grads = jax.grad(loss(_xla_conv), argnums=(0, 1))(x, kernel)
    for g, e in zip(grads, expected_grads, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


def _primitives(fn, *args) -> set[str]:
    """The primitives of ``fn``'s jaxpr, those of nested jaxprs (custom gradients) included."""

    def walk(jaxpr):
        for equation in jaxpr.eqns:
            yield equation.primitive.name
            for sub in jax.extend.core.jaxprs_in_params(equation.params):
                yield from walk(sub)

    return set(walk(jax.make_jaxpr(fn)(*args).jaxpr))


@pytest.mark.parametrize(
    ("batch", "map_size", "kernel_size", "conv_impl", "expected"),
    [
        (4, 56, 1, "auto", "dot_general"),  # 1×1: a matrix product at any size on a CPU
        (8, 7, 3, "auto", "dot_general"),  # 3×3, 8 × 7×7 = 392 output positions
        (2, 16, 3, "auto", "dot_general"),  # 2 × 16×16 = 512, the largest
        (2, 17, 3, "auto", "conv_general_dilated"),  # 2 × 17×17 = 578
        (8, 14, 3, "auto", "conv_general_dilated"),  # 8 × 14×14 = 1,568: XLA's convolution
        (32, 7, 3, "auto", "conv_general_dilated"),  # 32 × 7×7 = 1,568, the same
        (4, 56, 1, "xla", "conv_general_dilated"),
        (8, 14, 3, "dot", "dot_general"),
    ],
)
def test_auto_uses_a_matrix_product_for_1x1_and_few_output_positions_on_cpu(
    batch, map_size, kernel_size, conv_impl, expected
):
    assert jax.default_backend() == "cpu"
    x = jnp.zeros((batch, map_size, map_size, 8))
    kernel = jnp.zeros((kernel_size, kernel_size, 8, 4))
    pad = kernel_size // 2
    numbers = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, ("NHWC", "HWIO", "NHWC"))
    primitives = _primitives(
        lambda x, k: conv.conv_general_dilated(
            x,
            k,
            (1, 1),
            ((pad, pad), (pad, pad)),
            dimension_numbers=numbers,
            conv_impl=conv_impl,
        ),
        x,
        kernel,
    )
    other = {"dot_general", "conv_general_dilated"} - {expected}
    assert expected in primitives and not primitives & other


def test_grouped_convolutions_always_go_to_xla():
    x, kernel = jnp.zeros((1, 4, 4, 8)), jnp.zeros((1, 1, 4, 8))
    numbers = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, ("NHWC", "HWIO", "NHWC"))
    primitives = _primitives(
        lambda x, k: conv.conv_general_dilated(
            x,
            k,
            (1, 1),
            "VALID",
            dimension_numbers=numbers,
            feature_group_count=2,
            conv_impl="dot",
        ),
        x,
        kernel,
    )
    assert "conv_general_dilated" in primitives and "dot_general" not in primitives


def test_dilated_convolutions_go_to_xla_and_stay_dilated():
    x = jax.random.normal(jax.random.key(0), (1, 9, 9, 2))
    kernel = jax.random.normal(jax.random.key(1), (3, 3, 2, 4))
    numbers = jax.lax.conv_dimension_numbers(x.shape, kernel.shape, ("NHWC", "HWIO", "NHWC"))
    settings = dict(rhs_dilation=(2, 2), dimension_numbers=numbers)
    dilated = conv.conv_general_dilated(x, kernel, (1, 1), "VALID", **settings, conv_impl="dot")
    expected = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", **settings)
    assert dilated.shape == (1, 5, 5, 4)  # a 3×3 kernel dilated by 2 spans 5 pixels
    np.testing.assert_allclose(dilated, expected, rtol=1e-5, atol=1e-5)


def test_a_model_gives_the_same_outputs_and_variables_with_every_conv_impl():
    images = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 96, 96, 3)), jnp.float32)
    fields = {"backbone": "resnet18", "head": "conv", "num_classes": 3, "head_channels": 32}
    model_xla = models.get_model({**fields, "conv_impl": "xla"})
    model_dot = models.get_model({**fields, "conv_impl": "dot"})
    variables = jax.jit(lambda x: model_xla.init(jax.random.key(0), x, train=False))(images)
    variables_dot = jax.eval_shape(
        lambda x: model_dot.init(jax.random.key(0), x, train=False), images
    )
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, variables_dot)
    # Training mode: BatchNorm on the batch's statistics, so every layer's output matters.
    run = lambda model: jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"])[0]
    )
    expected = run(model_xla)(variables, images)
    np.testing.assert_allclose(run(model_dot)(variables, images), expected, rtol=1e-3, atol=1e-3)


def test_a_bad_conv_impl_is_named():
    with pytest.raises(ValueError, match=r"conv_impl must be one of .*'fast'"):
        models.get_model({"backbone": "darknet_tiny", "conv_impl": "fast"})
    config = config_lib.default_config()
    config.model.conv_impl = "fast"
    with pytest.raises(ValueError, match=r"model\.conv_impl"):
        config_lib.validate_config(config)


@pytest.mark.parametrize(
    ("window", "strides", "padding"), [(3, 2, 1), (2, 2, 0), (3, 1, 1), (2, 3, 0)]
)
def test_max_pool_equals_flax_max_pool(window, strides, padding):
    x = jnp.asarray(np.random.default_rng(window).standard_normal((2, 9, 8, 4)), jnp.float32)
    pad = ((padding, padding), (padding, padding))
    expected = nn.max_pool(x, (window, window), strides=(strides, strides), padding=pad)
    np.testing.assert_array_equal(layers.max_pool(x, window, strides, padding), expected)


@pytest.mark.parametrize(("window", "strides", "padding"), [(3, 2, 1), (2, 2, 0)])
def test_max_pool_gradient_reaches_the_window_maxima_only(window, strides, padding):
    # Distinct values: each output's gradient goes to exactly its window's maximum, as with
    # reduce-window; an input that is the maximum of two overlapping windows gets both. The
    # 9×9 map leaves a last row and column that no 2×2 window covers: they get nothing.
    x = jnp.asarray(np.random.default_rng(1).permutation(2 * 9 * 9 * 3), jnp.float32)
    x = x.reshape(2, 9, 9, 3)
    pad = ((padding, padding), (padding, padding))
    out = layers.max_pool(x, window, strides, padding)
    cotangent = jnp.asarray(np.random.default_rng(2).standard_normal(out.shape), jnp.float32)
    (grad,) = jax.vjp(lambda x: layers.max_pool(x, window, strides, padding), x)[1](cotangent)
    reference = lambda x: nn.max_pool(x, (window, window), (strides, strides), pad)
    (expected,) = jax.vjp(reference, x)[1](cotangent)
    np.testing.assert_array_equal(grad, expected)


def test_disjoint_max_pool_splits_a_tied_window_gradient_equally():
    x = jnp.zeros((1, 4, 4, 2), jnp.bfloat16)
    out, pullback = jax.vjp(lambda x: layers.max_pool(x, 2, 2), x)
    (grad,) = pullback(jnp.ones_like(out))
    assert grad.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(grad, np.float32), np.full(x.shape, 0.25))


@pytest.mark.parametrize(("window", "strides", "padding"), [(3, 2, 1), (2, 2, 0)])
def test_max_pool_gradient_on_tied_maxima_is_shared_not_lost_or_doubled(window, strides, padding):
    # An all-equal map ties every window: each output's gradient of 1 is split among its
    # window's inputs, so the input gradient sums to the number of outputs and is nonnegative.
    x = jnp.zeros((1, 8, 8, 2), jnp.float32)
    out, pullback = jax.vjp(lambda x: layers.max_pool(x, window, strides, padding), x)
    (grad,) = pullback(jnp.ones_like(out))
    assert float(grad.min()) >= 0.0
    np.testing.assert_allclose(float(grad.sum()), out.size, rtol=1e-6)
