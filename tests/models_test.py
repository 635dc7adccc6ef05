"""Tests for yolojax.models: layouts against the paper and torchvision, heads, dtypes, norms."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from yolojax import models
from yolojax.config import default_config
from yolojax.models import layers
from yolojax.models.darknet import DARKNET_TINY, Darknet

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model_config(**overrides) -> ml_collections.ConfigDict:
    fields = {"backbone": "darknet_tiny", "head": "conv", "num_classes": 20, "grid_size": 7}
    fields.update({"num_boxes": 2, "dtype": "float32", "num_groups": 32, "dropout_rate": 0.5})
    return ml_collections.ConfigDict({**fields, "pretrained": "", **overrides})


def _abstract_init(module, image_size: int, batch: int = 1):
    """(output, variables) shapes of `module` on a batch, without computing anything."""
    images = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.float32)
    return jax.eval_shape(
        lambda x: module.init_with_output(jax.random.key(0), x, train=False), images
    )


def _random_variables(shapes, seed: int = 0):
    """Random variables for `shapes` (from eval_shape of an init), without a compiled init.

    A jitted Flax init costs seconds of XLA compile time on CPU per model; these tests only
    need plausible values: kernels N(0, 1/fan_in), BatchNorm variances in [0.5, 2], the
    rest N(0, 1).
    """
    rng = np.random.default_rng(seed)

    def sample(path, leaf):
        name = path[-1].key
        if name == "kernel":
            values = rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
        elif name == "var":
            values = rng.uniform(0.5, 2.0, size=leaf.shape)
        else:
            values = rng.normal(size=leaf.shape)
        return jnp.asarray(values, jnp.float32)

    return jax.tree_util.tree_map_with_path(sample, shapes)


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))


# torchvision's documented parameter counts (torchvision.models weights tables).
@pytest.mark.parametrize(
    ("arch", "expected"),
    [
        ("resnet18", 11_689_512),
        ("resnet34", 21_797_672),
        ("resnet50", 25_557_032),
        ("resnet101", 44_549_160),
        ("resnet152", 60_192_808),
        ("vgg16", 138_357_544),
        ("vgg16_bn", 138_365_992),
    ],
)
def test_classifier_parameter_count_equals_torchvision(arch, expected):
    _, variables = _abstract_init(models.get_classifier(arch), 224)
    assert _count(variables["params"]) == expected


def test_darknet_follows_figure_3_of_the_yolo_paper():
    # (kernel, filters) of the 24 convolutions, read off Figure 3 of Redmon et al. 2016.
    paper = [(7, 64), (3, 192), (1, 128), (3, 256), (1, 256), (3, 512)]
    paper += [(1, 256), (3, 512)] * 4 + [(1, 512), (3, 1024)]
    paper += [(1, 512), (3, 1024)] * 2 + [(3, 1024)] * 4
    model = models.get_model(_model_config(backbone="darknet", head="fc"))
    output, variables = _abstract_init(model, 448)
    backbone = variables["params"]["backbone"]
    kernels = [backbone[f"conv_{i}"]["conv"]["kernel"].shape for i in range(len(backbone))]
    in_channels = [3] + [filters for _, filters in paper[:-1]]
    assert kernels == [(k, k, c_in, f) for (k, f), c_in in zip(paper, in_channels, strict=True)]
    # The paper's fc head on the 7×7×1024 map: 7·7·1024 → 4096 → 7·7·30.
    head = variables["params"]["head"]
    assert head["hidden"]["kernel"].shape == (7 * 7 * 1024, 4096)
    assert head["out"]["kernel"].shape == (4096, 7 * 7 * 30)
    assert output.shape == (1, 7, 7, 30)


@pytest.mark.parametrize("backbone", models.BACKBONES)
@pytest.mark.parametrize("head", models.HEADS)
def test_every_backbone_and_head_gives_the_yolo_output_shape(backbone, head):
    model = models.get_model(_model_config(backbone=backbone, head=head))
    output, _ = _abstract_init(model, 448, batch=2)
    assert output.shape == (2, 7, 7, 20 + 5 * 2)
    assert output.dtype == jnp.float32


@pytest.mark.parametrize(("image_size", "grid_size"), [(112, 7), (128, 7), (96, 4), (64, 3)])
def test_tiny_conv_head_reaches_the_grid_at_small_inputs(image_size, grid_size):
    model = models.get_model(_model_config(num_classes=3, grid_size=grid_size, num_boxes=1))
    output, _ = _abstract_init(model, image_size, batch=2)
    assert output.shape == (2, grid_size, grid_size, 3 + 5)


@pytest.mark.parametrize(("arch", "image_size"), [("darknet_tiny", 100), ("resnet18", 100)])
def test_the_feature_map_size_is_that_of_the_backbone_run_on_images(arch, image_size):
    module = models.get_classifier(arch)
    images = jnp.zeros((1, image_size, image_size, 3))
    variables = module.init(jax.random.key(0), images, train=False)
    features = module.apply(variables, images, train=False, output="features")
    assert models.feature_map_size(arch, image_size) == features.shape[1] == features.shape[2]


def test_a_conv_head_grid_finer_than_the_feature_map_is_told_with_the_size_that_fits():
    config = _model_config(backbone="resnet18", head="conv")
    notice = models.coarse_map_notice(config, 112)  # ResNet's stride 32: a 4×4 map
    assert notice.startswith("At config.data.image_size=112, resnet18's feature map is 4×4, ")
    assert notice.endswith("An image size of 224 (7 × its stride 32) makes it 7×7.")
    assert models.coarse_map_notice(config, 224) is None
    # The other heads read the whole map, flattened or pooled.
    fc = _model_config(backbone="resnet18", head="fc")
    assert models.coarse_map_notice(fc, 112) is None


def test_seed_heads_keep_the_report_layout():
    # ResNet: global-average-pooled 2048 → one Dense; VGG: classifier up to fc7 → one Dense.
    _, resnet = _abstract_init(
        models.get_model(_model_config(backbone="resnet50", head="seed")), 64
    )
    assert resnet["params"]["head"]["kernel"].shape == (2048, 7 * 7 * 30)
    assert "fc" not in resnet["params"]["backbone"]
    _, vgg = _abstract_init(models.get_model(_model_config(backbone="vgg16", head="seed")), 64)
    assert vgg["params"]["head"]["kernel"].shape == (4096, 7 * 7 * 30)
    assert {"fc6", "fc7"} <= set(vgg["params"]["backbone"])
    assert "fc8" not in vgg["params"]["backbone"]


def test_conv_head_downsamples_a_2s_map_with_a_strided_conv():
    config = _model_config(backbone="resnet18", head_channels=64, head_conv_layers=2)
    output, variables = _abstract_init(models.get_model(config), 448)
    head = variables["params"]["head"]
    assert head["conv_0"]["conv"]["kernel"].shape == (3, 3, 512, 64)
    assert head["out"]["kernel"].shape == (1, 1, 64, 30)
    assert output.shape == (1, 7, 7, 30)


def test_groupnorm_darknet_has_no_batch_stats_and_ignores_the_batch():
    for head in models.HEADS:
        _, variables = _abstract_init(
            models.get_model(_model_config(backbone="darknet_gn", head=head)), 448
        )
        assert set(variables) == {"params"}
    # GroupNorm normalizes each image on its own: in training mode an image's output must not
    # depend on the other images of the batch (BatchNorm's would). The tiny layer spec keeps
    # this fast; the norm injection is the same code as darknet_gn's.
    darknet = Darknet(layers=DARKNET_TINY, norm="group", num_groups=8, num_classes=4)
    images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = _random_variables(
        jax.eval_shape(lambda x: darknet.init(jax.random.key(1), x, train=False), images)
    )
    forward = jax.jit(lambda v, x: darknet.apply(v, x, train=True))
    with_other = forward(variables, images.at[1].set(5.0 * images[1] + 1.0))
    np.testing.assert_allclose(forward(variables, images)[0], with_other[0], rtol=1e-4, atol=1e-5)


def test_report_group_count_is_rejected_with_the_reason():
    # The report used batch size / 2 groups (19 // 2 = 9), which divides no Darknet width.
    with pytest.raises(ValueError, match="num_groups=9 must divide"):
        models.get_model(_model_config(backbone="darknet_gn", num_groups=9))


def test_an_unresolved_class_count_says_how_to_resolve_it():
    # configs' num_classes=0 means "as many as the dataset has": a number the model needs.
    with pytest.raises(ValueError, match=r"num_classes is 0 .*resolve_num_classes"):
        models.get_model(_model_config(num_classes=0))


def test_a_whole_run_config_for_the_model_config_is_named_as_such():
    with pytest.raises(ValueError, match=r"^model_config is a whole run config: pass its model se"):
        models.get_model(default_config())


def test_a_backbone_name_for_the_model_config_says_what_to_pass():
    with pytest.raises(ValueError, match=r"such as \{'backbone': 'resnet18'\} or config.model"):
        models.get_model("resnet18")


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="resnet152"):
        models.get_model(_model_config(backbone="resnet200"))
    with pytest.raises(ValueError, match="'fc', 'seed', 'conv'"):
        models.get_model(_model_config(head="mlp"))
    with pytest.raises(ValueError, match="bfloat16"):
        models.get_model(_model_config(dtype="float8"))


def test_bad_images_are_rejected_naming_the_expected_layout():
    model = models.get_model(_model_config(backbone="resnet18"))
    with pytest.raises(ValueError, match=r"NHWC, got shape \(1, 3, 64, 64\)") as error:
        model.init(jax.random.key(0), jnp.zeros((1, 3, 64, 64)), train=False)
    assert "per_device" not in str(error.value)  # NCHW: no device axis to point to
    # A training batch of the input pipeline, with its leading device axis.
    with pytest.raises(ValueError, match=r"\(devices, per_device, \.\.\.\): pass images\[0\]"):
        model.init(jax.random.key(0), jnp.zeros((1, 2, 64, 64, 3)), train=False)
    with pytest.raises(ValueError, match="at least 32"):
        model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)


# A small darknet_tiny YOLO shared by the forward-pass tests; its variables fit every
# dtype / axis_name variant of the same config.
TINY = {"head_channels": 32, "head_conv_layers": 1}


@pytest.fixture(scope="module", name="tiny_variables")
def fixture_tiny_variables():
    model = models.get_model(_model_config(**TINY))
    _, shapes = _abstract_init(model, 64)
    return _random_variables(shapes, seed=1)


def test_bfloat16_forward_is_jitted_in_bfloat16_with_float32_params_and_output(tiny_variables):
    images = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
    model_f32 = models.get_model(_model_config(**TINY))
    model_bf16 = models.get_model(_model_config(**TINY, dtype="bfloat16"))
    variables = jax.eval_shape(lambda x: model_bf16.init(jax.random.key(1), x, train=False), images)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(variables)} == {jnp.dtype("float32")}

    forward = jax.jit(lambda v, x: model_bf16.apply(v, x, train=False))
    jaxpr = str(jax.make_jaxpr(forward)(tiny_variables, images))
    assert "conv_general_dilated" in jaxpr and "bf16[2,64,64,16]" in jaxpr
    output = forward(tiny_variables, images)
    assert output.dtype == jnp.float32 and output.shape == (2, 7, 7, 30)
    reference = jax.jit(lambda v, x: model_f32.apply(v, x, train=False))(tiny_variables, images)
    scale = float(jnp.abs(reference).max())
    assert float(jnp.abs(output - reference).max()) < 0.05 * scale


def test_batch_stats_are_averaged_over_the_named_axis(tiny_variables):
    # Two "devices" (a vmapped axis named 'batch', like the train step's mesh axis) with
    # different images must end up with the same running statistics, in the backbone and in
    # the head: those of the union of their batches.
    model = models.get_model(_model_config(**TINY), axis_name="batch")
    single = models.get_model(_model_config(**TINY))
    images = (
        jax.random.normal(jax.random.key(0), (2, 3, 32, 32, 3))
        * jnp.array([1.0, 3.0])[:, None, None, None, None]
    )

    def train_step(v, x):
        _, updates = model.apply(v, x, train=True, mutable=["batch_stats"])
        return updates["batch_stats"]

    per_device = jax.jit(jax.vmap(train_step, in_axes=(None, 0), axis_name="batch"))(
        tiny_variables, images
    )
    _, pooled = jax.jit(lambda v, x: single.apply(v, x, train=True, mutable=["batch_stats"]))(
        tiny_variables, images.reshape(6, 32, 32, 3)
    )
    for part in ("backbone", "head"):
        mean = per_device[part]["conv_0"]["norm"]["mean"]
        expected = pooled["batch_stats"][part]["conv_0"]["norm"]["mean"]
        np.testing.assert_allclose(mean[0], mean[1], rtol=1e-6)
        np.testing.assert_allclose(mean[0], expected, rtol=1e-4, atol=1e-6)


def test_leaky_relu_has_the_paper_slope():
    np.testing.assert_allclose(layers.leaky_relu(jnp.array([-1.0, 0.0, 2.0])), [-0.1, 0.0, 2.0])


def test_batch_norm_running_mean_moves_a_tenth_of_the_way_as_pytorch():
    norm = layers.make_norm("batch", train=True)()
    x = jnp.full((4, 3), 2.0)
    variables = norm.init(jax.random.key(0), x)
    _, updated = norm.apply(variables, x, mutable=["batch_stats"])
    # PyTorch's momentum 0.1: running mean 0 → 0.9 · 0 + 0.1 · 2.
    np.testing.assert_allclose(updated["batch_stats"]["mean"], 0.2, atol=1e-6)


def test_adaptive_avg_pool_uses_torch_bin_edges():
    # 3 → 2: torch bins are [0, 2) and [1, 3), overlapping in the middle element.
    x = jnp.array([1.0, 2.0, 6.0]).reshape(1, 3, 1, 1) * jnp.ones((1, 1, 3, 1))
    pooled = layers.adaptive_avg_pool(x, 2)
    np.testing.assert_allclose(pooled[0, :, 0, 0], [1.5, 4.0])
    # 2 → 3 repeats inputs: bins [0, 1), [0, 2), [1, 2).
    x = jnp.array([2.0, 4.0]).reshape(1, 2, 1, 1) * jnp.ones((1, 1, 2, 1))
    np.testing.assert_allclose(layers.adaptive_avg_pool(x, 3)[0, :, 0, 0], [2.0, 3.0, 4.0])


@pytest.mark.parametrize(("in_size", "out_size"), [(10, 7), (5, 7), (14, 7), (1, 7), (9, 4)])
def test_adaptive_avg_pool_matches_torch(in_size, out_size):
    torch = pytest.importorskip("torch", reason="needs the `port` extra (torch)")
    x = np.random.default_rng(0).normal(size=(2, in_size, in_size + 1, 3)).astype(np.float32)
    expected = torch.nn.functional.adaptive_avg_pool2d(
        torch.from_numpy(x.transpose(0, 3, 1, 2)), out_size
    ).numpy()
    actual = np.asarray(layers.adaptive_avg_pool(jnp.asarray(x), out_size))
    np.testing.assert_allclose(actual, expected.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)


def _summary(tmp_path, *flags: str) -> subprocess.CompletedProcess:
    """``python -m yolojax.models`` on a config file of darknet_tiny at 112 pixels."""
    config_file = tmp_path / "tiny_config.py"
    config_file.write_text(
        textwrap.dedent(
            """
            import ml_collections

            def get_config(arg=None):
                config = ml_collections.ConfigDict()
                config.model = ml_collections.ConfigDict(
                    {"backbone": arg or "darknet_tiny", "head": "conv", "num_classes": 3,
                     "grid_size": 7, "num_boxes": 2, "dtype": "float32", "pretrained": ""})
                config.data = ml_collections.ConfigDict({"image_size": 112})
                return config
            """
        )
    )
    return subprocess.run(
        [sys.executable, "-m", "yolojax.models", f"--config={config_file}:darknet_tiny", *flags],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_summary_cli_prints_every_module_for_a_config_file(tmp_path):
    result = _summary(tmp_path)
    assert result.returncode == 0, result.stderr
    for expected in ("backbone/conv_0", "head/out", "float32[1,112,112,3]", "float32[1,7,7,13]"):
        assert expected in result.stdout
    # First conv: 3×3×3×16 kernel + BatchNorm scale and bias.
    assert "464 (1.9 KB)" in result.stdout


@pytest.mark.parametrize(
    "flag, message",
    [
        # Summarized the config's 112 pixels, as if the flag had not been given.
        ("--image_size=0", "flag --image_size=0: 0 is not a positive integer"),
        # Printed an empty table.
        ("--depth=-1", "flag --depth=-1: -1 is not a non-negative integer"),
    ],
)
def test_summary_cli_refuses_a_size_or_depth_without_meaning(tmp_path, flag, message):
    result = _summary(tmp_path, flag)
    assert result.returncode == 1, result.stdout
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("dtype", [jnp.bfloat16, np.dtype("bfloat16")])
def test_a_jax_or_numpy_dtype_is_taken_as_its_name(dtype):
    config = {"backbone": "darknet_tiny", "head": "conv", "num_classes": 3}
    assert models.get_model({**config, "dtype": dtype}) == models.get_model(
        {**config, "dtype": "bfloat16"}
    )
    assert models.get_classifier("resnet18", dtype=dtype) == models.get_classifier(
        "resnet18", dtype="bfloat16"
    )
    with pytest.raises(ValueError, match=r"dtype must be one of .*; got 'float16'"):
        models.get_model({**config, "dtype": jnp.float16})
    with pytest.raises(ValueError, match=r"dtype must be one of .*; got None\.$"):
        models.get_model({**config, "dtype": None})  # not NumPy's float64 for None
