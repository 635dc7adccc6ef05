"""Model registry: build a YOLO detector or an ImageNet classifier by name.

`get_model(config.model)` reads these fields of the model config (an ml_collections
ConfigDict, a dict or any object with attributes); all but `backbone` may be omitted:

  backbone          one of BACKBONES (required)
  head              'fc' | 'seed' | 'conv' (default 'conv'; see `yolo.py`)
  num_classes       C (default 20)
  grid_size         S (default 7)
  num_boxes         B (default 2)
  dtype             compute dtype, 'float32' | 'bfloat16' (default 'float32'); params and
                    the output stay float32
  num_groups        GroupNorm groups for 'darknet_gn' and its conv head (default 32)
  dropout_rate      'fc' head dropout (default 0.5)
  fc_hidden         'fc' head hidden width (default 4096)
  head_channels     'conv' head width; 0 or None → min(1024, backbone channels) (default 0)
  head_conv_layers  'conv' head 3×3 layers (default 4)
  conv_impl         'auto' | 'xla' | 'dot': how convolutions are computed (default 'auto';
                    see `yolojax.models.conv`); the variables do not depend on it
  pretrained        '' or a ported .msgpack; not read here: see
                    `yolojax.pretrained.load_for_config`, applied to the initialized variables
"""

import difflib
import functools
import types
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from yolojax.models import darknet, resnet, vgg
from yolojax.models.conv import CONV_IMPLS
from yolojax.models.darknet import DARKNET24, DARKNET_TINY, Darknet
from yolojax.models.layers import MAXPOOL
from yolojax.models.resnet import RESNETS
from yolojax.models.vgg import VGG16, VGG16BN
from yolojax.models.yolo import HEADS, YOLO
from yolojax.validation import check_choice, check_int, check_number, check_positive_int

_BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "darknet": functools.partial(Darknet, layers=DARKNET24, norm="batch"),
    "darknet_gn": functools.partial(Darknet, layers=DARKNET24, norm="group"),
    "darknet_tiny": functools.partial(Darknet, layers=DARKNET_TINY, norm="batch"),
    **RESNETS,
    "vgg16": VGG16,
    "vgg16_bn": VGG16BN,
}
BACKBONES = tuple(_BACKBONES)
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
DTYPES = tuple(_DTYPES)

# The defaults of the fields in the module docstring (every field but backbone and pretrained).
MODEL_DEFAULTS = {
    "head": "conv",
    "num_classes": 20,
    "grid_size": 7,
    "num_boxes": 2,
    "dtype": "float32",
    "num_groups": 32,
    "dropout_rate": 0.5,
    "fc_hidden": 4096,
    "head_channels": 0,
    "head_conv_layers": 4,
    "conv_impl": "auto",
}

__all__ = [
    "BACKBONES",
    "CONV_IMPLS",
    "DTYPES",
    "HEADS",
    "MODEL_DEFAULTS",
    "YOLO",
    "coarse_map_notice",
    "feature_map_size",
    "get_classifier",
    "get_model",
    "min_input_size",
]


def _check_known_fields(fields, name: str) -> None:
    """A misspelled field would silently leave its default in effect: name it instead."""
    known = {"backbone", "pretrained", *MODEL_DEFAULTS}
    if "model" in fields and not known & set(fields):  # the whole run config
        raise ValueError(f"{name} is a whole run config: pass its model section, config.model.")
    for field in fields:
        if field not in known and not field.startswith("_"):
            close = difflib.get_close_matches(field, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{name} has no field {field!r}.{hint} Its fields: {sorted(known)}.")


def _check_group_widths(arch: str, num_groups: int, widths: set[int]) -> None:
    bad = sorted(width for width in widths if width % num_groups)
    if bad:
        raise ValueError(
            f"num_groups={num_groups} must divide every GroupNorm width of {arch!r}, "
            f"but not {bad}; 32 (the default) or any divisor of 64 works for Darknet"
        )


def get_classifier(
    arch: str,
    num_classes: int = 1000,
    *,
    dtype: str = "float32",
    axis_name: str | None = None,
    num_groups: int = 32,
    conv_impl: str = "auto",
) -> nn.Module:
    """Builds backbone `arch` as a classifier (its ImageNet build with num_classes=1000).

    Call it as `module.apply(variables, images, train=False)` on (N, H, W, 3) float images
    (normalized as the config's `data.normalization` says) → (N, num_classes) logits, or with
    `output='features'` (the last feature map, (N, H', W', channels)) / `'pre_logits'`
    (its global average, (N, channels)); each backbone's docstring gives the sizes. Its
    variables have the layout of a YOLO model's 'backbone' subtree.

    Args:
      arch: one of BACKBONES.
      num_classes: classifier outputs.
      dtype: compute dtype, 'float32' or 'bfloat16' (or jnp.bfloat16; parameters stay
        float32).
      axis_name: BatchNorm's cross-device axis (the mesh axis 'batch' of the train step),
        None otherwise.
      num_groups: GroupNorm groups, used by 'darknet_gn' only (but checked to be a positive
        integer for every Darknet arch).
      conv_impl: 'auto', 'xla' or 'dot' (see `yolojax.models.conv`).

    Raises:
      ValueError: unknown arch, dtype or conv_impl, or num_groups not dividing the channel
        widths.
    """
    check_choice("arch", arch, BACKBONES)
    dtype = _dtype_name(dtype)
    check_choice("dtype", dtype, DTYPES)
    check_choice("conv_impl", conv_impl, CONV_IMPLS)
    num_classes = check_positive_int("num_classes", num_classes)
    kwargs = {
        "num_classes": num_classes,
        "dtype": _DTYPES[dtype],
        "axis_name": axis_name,
        "conv_impl": conv_impl,
    }
    build = _BACKBONES[arch]
    if getattr(build, "func", None) is Darknet:
        num_groups = check_positive_int("num_groups", num_groups)
        if arch == "darknet_gn":
            widths = {layer.features for layer in build.keywords["layers"] if layer != MAXPOOL}
            _check_group_widths(arch, num_groups, widths)
        kwargs["num_groups"] = num_groups
    return build(**kwargs)


def min_input_size(arch: str) -> int:
    """The smallest square input, in pixels, for which backbone ``arch`` (one of BACKBONES)
    yields a feature map: the model refuses smaller images."""
    check_choice("arch", arch, BACKBONES)
    build = _BACKBONES[arch]
    if getattr(build, "func", None) is Darknet:
        return darknet.min_input_size(build.keywords["layers"])
    return resnet.MIN_INPUT_SIZE if arch in RESNETS else vgg.MIN_INPUT_SIZE


@functools.lru_cache
def feature_map_size(arch: str, image_size: int) -> int:
    """The side of backbone ``arch``'s last feature map for a square ``image_size`` input
    (shapes only: nothing is computed)."""
    module = get_classifier(arch)

    def features(images):  # traced once: init's own forward pass gives the map
        return module.init_with_output(jax.random.key(0), images, train=False, output="features")[0]

    images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    return jax.eval_shape(features, images).shape[1]


def coarse_map_notice(model_config, image_size: int) -> str | None:
    """What to know where the 'conv' head's grid is finer than the backbone's feature map at
    ``image_size``, else None: the map is stretched to S×S (``yolo.py``), so neighbouring
    cells read (nearly) the same features and cannot tell their objects apart as well."""
    if model_config.head != "conv":  # 'fc' and 'seed' flatten or pool the whole map
        return None
    side, grid = feature_map_size(model_config.backbone, image_size), model_config.grid_size
    if side >= grid:
        return None
    stride = 2 ** round(np.log2(image_size / side))  # each backbone's is a power of 2
    return (
        f"At config.data.image_size={image_size}, {model_config.backbone}'s feature map is "
        f"{side}×{side}, coarser than the {grid}×{grid} grid: the 'conv' head stretches it, "
        f"so neighbouring cells read nearly the same features. An image size of {grid * stride} "
        f"({grid} × its stride {stride}) makes it {grid}×{grid}."
    )


def _dtype_name(dtype: Any) -> Any:
    """'bfloat16' for jnp.bfloat16 or np.dtype('bfloat16') too; anything else as given, for
    the error to name (None is no dtype, though NumPy reads it as float64)."""
    if isinstance(dtype, str) or dtype is None:
        return dtype
    try:
        return np.dtype(dtype).name
    except TypeError:
        return dtype


def get_model(
    model_config: Any, *, axis_name: str | None = None, name: str = "model_config"
) -> YOLO:
    """Builds the YOLO detector described by `model_config` (fields: module docstring).

    Args:
      model_config: `config.model`: a ConfigDict, a dict or any object with those fields.
      axis_name: the mesh axis over which every BatchNorm averages batch statistics in
        training (the train step's 'batch'); None for single-device use.
      name: what error messages call `model_config` (a run's config passes
        'config.model', the key a user sets).

    Returns:
      An uninitialized `YOLO` module: `apply(variables, images, train=...)` maps
      (N, H, W, 3) images to (N, S, S, C + 5B) float32. Its `init` gives random weights;
      the `pretrained` field is not read here: `yolojax.pretrained.load_for_config(variables,
      model_config)` (which training calls) puts its ported ImageNet weights into them.

    Raises:
      ValueError: a missing backbone, an unknown backbone/head/dtype name, an invalid
        number (listing what is expected), or a field that a model config does not have (a
        misspelling, with the closest field named).
    """
    if isinstance(model_config, str):
        raise ValueError(
            f"get_model takes a model config, such as {{'backbone': {model_config!r}}} or "
            f"config.model; got the string {model_config!r}."
        )
    if hasattr(model_config, "keys"):  # a dict or a ConfigDict
        _check_known_fields(list(model_config.keys()), name)
    elif hasattr(model_config, "__dict__"):  # a SimpleNamespace, a dataclass instance...
        _check_known_fields(vars(model_config), name)
    if isinstance(model_config, Mapping):  # a plain dict reads like a ConfigDict
        model_config = types.SimpleNamespace(**model_config)
    backbone = getattr(model_config, "backbone", None)
    check_choice(f"{name}.backbone", backbone, BACKBONES)
    fields = {
        field: getattr(model_config, field, default) for field, default in MODEL_DEFAULTS.items()
    }
    check_choice(f"{name}.head", fields["head"], HEADS)
    fields["dtype"] = _dtype_name(fields["dtype"])
    check_choice(f"{name}.dtype", fields["dtype"], DTYPES)
    check_choice(f"{name}.conv_impl", fields["conv_impl"], CONV_IMPLS)
    if fields["num_classes"] == 0:  # a config's "as many as the dataset has", unresolved
        how = (
            "--config.model.num_classes=N"
            if name == "config.model"
            else "it, or resolve it from the class names first with "
            "yolojax.config.resolve_num_classes(config, class_names)"
        )
        raise ValueError(
            f"{name}.num_classes is 0 (as many as the dataset has): the model needs the "
            f"number. Set {how}."
        )
    for field in ("num_classes", "grid_size", "num_boxes", "fc_hidden", "num_groups"):
        fields[field] = check_positive_int(f"{name}.{field}", fields[field])
    fields["head_conv_layers"] = check_int(
        f"{name}.head_conv_layers", fields["head_conv_layers"], 0
    )
    head_channels = fields["head_channels"] or None
    if head_channels is not None:
        head_channels = check_positive_int(f"{name}.head_channels", head_channels)
    dropout_rate = fields["dropout_rate"]
    check_number(f"{name}.dropout_rate", dropout_rate, at_least=0, below=1)
    head_norm = "group" if backbone == "darknet_gn" else "batch"
    if head_norm == "group" and fields["head"] == "conv" and head_channels is not None:
        _check_group_widths(backbone, fields["num_groups"], {head_channels})
    classifier = get_classifier(
        backbone,
        dtype=fields["dtype"],
        axis_name=axis_name,
        num_groups=fields["num_groups"],
        conv_impl=fields["conv_impl"],
    )
    return YOLO(
        backbone=classifier,
        num_classes=fields["num_classes"],
        grid_size=fields["grid_size"],
        num_boxes=fields["num_boxes"],
        head=fields["head"],
        fc_hidden=fields["fc_hidden"],
        dropout_rate=dropout_rate,
        head_channels=head_channels,
        head_conv_layers=fields["head_conv_layers"],
        head_norm=head_norm,
        num_groups=fields["num_groups"],
        axis_name=axis_name,
        conv_impl=fields["conv_impl"],
        dtype=_DTYPES[fields["dtype"]],
    )
