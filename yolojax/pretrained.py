"""Ported torchvision ImageNet weights: convert, save, and load into a YOLO backbone.

Weight files are flax msgpack holding `{'arch': name, 'variables': {'params', 'batch_stats'}}`
with the layout of `yolojax.models.get_classifier(arch)` (the backbone with its 1000-way
classifier). Make one with

    python -m yolojax.pretrained --arch resnet152 --out weights/resnet152.msgpack
    python -m yolojax.pretrained --arch vgg16_bn --state-dict vgg16_bn.pth   # offline

The first form downloads through torchvision (needs the `port` extra and network access).

Conversion: conv OIHW → HWIO; Linear (out, in) → (in, out); BatchNorm weight/bias/
running_mean/running_var → scale/bias (params), mean/var (batch_stats); VGG's first
classifier layer also reorders its 25088 inputs from torch's (c, h, w) flatten order to NHWC's
(h, w, c).

Darknet has no torchvision weights and trains from scratch here. To add another source
(e.g. Darknet's `.weights`), write a function returning variables with the layout of
`get_classifier('darknet')` and save them with `save_variables(path, 'darknet', variables)`;
`config.model.pretrained=path`, `load_pretrained` and the strict key check then work
unchanged.
"""

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import msgpack
import numpy as np
from flax import traverse_util

from yolojax import checkpoints, command_flags, errors, models
from yolojax.atomic_files import atomic_write_bytes
from yolojax.config import load_run_config
from yolojax.models import resnet, vgg
from yolojax.workdir import CLASSES_FILE, CONFIG_FILE, load_class_names

RESNETS = tuple(resnet.RESNETS)
ARCHS = (*RESNETS, "vgg16", "vgg16_bn")

# Backbone submodules that only the classifier outputs use: a YOLO model whose head does not
# need them (e.g. ResNet's 'fc') legitimately lacks them, so a file's copy is not unexpected.
_CLASSIFIER_ONLY = {"resnet": ("fc",), "vgg": ("fc6", "fc7", "fc8"), "darknet": ("fc",)}


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.transpose(2, 3, 1, 0)  # OIHW → HWIO


def _linear_kernel(weight: np.ndarray) -> np.ndarray:
    return weight.T  # (out, in) → (in, out)


def _vgg_fc6_kernel(weight: np.ndarray) -> np.ndarray:
    # torch flattens the pooled (512, 7, 7) map as (c, h, w); our NHWC map flattens (h, w, c).
    chw = weight.reshape(weight.shape[0], 512, 7, 7)
    return chw.transpose(2, 3, 1, 0).reshape(7 * 7 * 512, weight.shape[0])


def _identity(array: np.ndarray) -> np.ndarray:
    return array


# Per torch layer kind: torch leaf name → (collection, flax leaf name, transform); None drops.
_LEAVES: dict[str, dict[str, tuple[str, str, Callable] | None]] = {
    "conv": {"weight": ("params", "kernel", _conv_kernel), "bias": ("params", "bias", _identity)},
    "bn": {
        "weight": ("params", "scale", _identity),
        "bias": ("params", "bias", _identity),
        "running_mean": ("batch_stats", "mean", _identity),
        "running_var": ("batch_stats", "var", _identity),
        "num_batches_tracked": None,  # a training counter; Flax's BatchNorm has none
    },
    "linear": {
        "weight": ("params", "kernel", _linear_kernel),
        "bias": ("params", "bias", _identity),
    },
    "vgg_fc6": {
        "weight": ("params", "kernel", _vgg_fc6_kernel),
        "bias": ("params", "bias", _identity),
    },
}


def _resnet_layers(arch: str) -> dict[str, tuple[tuple[str, ...], str]]:
    """torch module prefix → (flax module path, kind) for a torchvision ResNet."""
    build = resnet.RESNETS[arch].keywords
    stage_sizes, bottleneck = build["stage_sizes"], build["block_cls"] is resnet.Bottleneck
    table = {"conv1": (("stem", "conv"), "conv"), "bn1": (("stem", "norm"), "bn")}
    for stage, num_blocks in enumerate(stage_sizes, start=1):
        for block in range(num_blocks):
            torch_block, flax_block = f"layer{stage}.{block}", f"layer{stage}_{block}"
            for k in range(1, 4 if bottleneck else 3):
                table[f"{torch_block}.conv{k}"] = ((flax_block, f"conv{k}", "conv"), "conv")
                table[f"{torch_block}.bn{k}"] = ((flax_block, f"conv{k}", "norm"), "bn")
            # Harmless for blocks without a torch `downsample`: this only maps names.
            table[f"{torch_block}.downsample.0"] = ((flax_block, "downsample", "conv"), "conv")
            table[f"{torch_block}.downsample.1"] = ((flax_block, "downsample", "norm"), "bn")
    table["fc"] = (("fc",), "linear")
    return table


def _vgg_layers(batch_norm: bool) -> dict[str, tuple[tuple[str, ...], str]]:
    """torch module prefix → (flax module path, kind) for a torchvision VGG16(-BN)."""
    table = {}
    torch_index, conv_index = 0, 0
    for layer in vgg.VGG16_CONVS:
        if layer == vgg.MAXPOOL:
            torch_index += 1
            continue
        table[f"features.{torch_index}"] = ((f"conv_{conv_index}", "conv"), "conv")
        if batch_norm:
            table[f"features.{torch_index + 1}"] = ((f"conv_{conv_index}", "norm"), "bn")
        torch_index += 3 if batch_norm else 2  # conv, [bn], relu
        conv_index += 1
    table["classifier.0"] = (("fc6",), "vgg_fc6")
    table["classifier.3"] = (("fc7",), "linear")
    table["classifier.6"] = (("fc8",), "linear")
    return table


def _torch_layers(arch: str) -> dict[str, tuple[tuple[str, ...], str]]:
    if arch in RESNETS:
        return _resnet_layers(arch)
    return _vgg_layers(batch_norm=arch == "vgg16_bn")


def _family(arch: str) -> str:
    return re.match(r"[a-z]+", arch).group()


def _flat_shapes(variables: Mapping) -> dict[tuple[str, ...], tuple[int, ...]]:
    """{(collection, *path): shape} of a variables tree."""
    flat = traverse_util.flatten_dict(flax.core.unfreeze(variables))
    return {key: tuple(value.shape) for key, value in flat.items()}


_MAX_LISTED_KEYS = 20  # per kind: weights of another architecture miss hundreds


def _listed(lines: list[str]) -> list[str]:
    if len(lines) <= _MAX_LISTED_KEYS:
        return lines
    return [*lines[:_MAX_LISTED_KEYS], f"    ... and {len(lines) - _MAX_LISTED_KEYS} more"]


def _raise_mismatches(what: str, missing: list, unexpected: list, mismatched: list) -> None:
    """Raises one ValueError counting every missing, unexpected and mis-shaped key (and
    naming the first of each kind)."""
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{what}: the weights do not fit the model"]
    for title, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            lines.append(f"  {len(keys)} {title} key(s):")
            lines += _listed([f"    {'/'.join(key)}" for key in sorted(keys)])
    if mismatched:
        lines.append(f"  {len(mismatched)} mis-shaped key(s) (weights vs model):")
        lines += _listed([f"    {'/'.join(key)}: {a} vs {b}" for key, a, b in sorted(mismatched)])
    if missing or unexpected:
        lines.append(
            "Whole blocks missing or left over mean weights of another architecture (another "
            "ResNet depth, VGG16 with or without BatchNorm): check --arch or model.backbone."
        )
    raise ValueError("\n".join(lines))


def classifier_shapes(arch: str) -> dict[tuple[str, ...], tuple[int, ...]]:
    """{(collection, *path): shape} of `get_classifier(arch)`'s variables (no real init)."""
    classifier = models.get_classifier(arch)
    images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: classifier.init(jax.random.key(0), x, train=False), images)
    return _flat_shapes(variables)


def convert_state_dict(arch: str, state_dict: Mapping[str, Any]) -> dict:
    """Converts a torchvision ImageNet model's `state_dict` into Flax variables.

    Args:
      arch: one of ARCHS, the torchvision model the state_dict comes from.
      state_dict: torch parameter name → tensor (torch tensors or NumPy arrays); the keys
        of a DataParallel-wrapped model (``module.`` before each) are taken too.

    Returns:
      {'params': ..., 'batch_stats': ...} (no 'batch_stats' for vgg16) of NumPy float32
      arrays, with the layout of `yolojax.models.get_classifier(arch)`.

    Raises:
      ValueError: unknown arch, or (one error listing them all) torch keys that map to
        nothing, model variables left unfilled, or shapes that do not match.
      TypeError: ``state_dict`` is no mapping (a torch module, say).
    """
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    if not isinstance(state_dict, Mapping):
        hint = (
            " (a torch module: pass model.state_dict())"
            if hasattr(state_dict, "state_dict")
            else ""
        )
        raise TypeError(
            f"state_dict must map parameter names to tensors; got a "
            f"{type(state_dict).__name__}{hint}."
        )
    table = _torch_layers(arch)
    flat, unexpected = {}, []
    for torch_key, tensor in _without_wrapper_prefix(state_dict).items():
        prefix, _, leaf = torch_key.rpartition(".")
        if prefix not in table or leaf not in _LEAVES[table[prefix][1]]:
            unexpected.append((torch_key,))
            continue
        target = _LEAVES[table[prefix][1]][leaf]
        if target is None:
            continue
        collection, name, transform = target
        path, _ = table[prefix]
        array = tensor.detach().cpu().float().numpy() if hasattr(tensor, "detach") else tensor
        flat[(collection, *path, name)] = np.asarray(transform(np.asarray(array, np.float32)))
    expected = classifier_shapes(arch)
    missing = [key for key in expected if key not in flat]
    mismatched = [
        (key, value.shape, expected[key])
        for key, value in flat.items()
        if key in expected and value.shape != expected[key]
    ]
    unexpected += [key for key in flat if key not in expected]
    _raise_mismatches(f"convert_state_dict({arch!r})", missing, unexpected, mismatched)
    return traverse_util.unflatten_dict(flat)


def _without_wrapper_prefix(state_dict: Mapping[str, Any]) -> Mapping[str, Any]:
    """``state_dict`` without the ``module.`` that torch's DataParallel and
    DistributedDataParallel put before every key of the model they wrap."""
    wrapper = "module."
    if state_dict and all(key.startswith(wrapper) for key in state_dict):
        return {key[len(wrapper) :]: tensor for key, tensor in state_dict.items()}
    return state_dict


def save_variables(path: str, arch: str, variables: Mapping) -> None:
    """Writes `variables` of `get_classifier(arch)` to `path` as flax msgpack, whole or not
    at all (a conversion stopped midway leaves no cut-off file)."""
    payload = {"arch": arch, "variables": flax.core.unfreeze(variables)}
    atomic_write_bytes(path, flax.serialization.msgpack_serialize(payload))


def _how_to_make(path: str, arch: str | None) -> str:
    from_scratch = (
        "set config.model.pretrained='' to train from scratch, with "
        "config.train.learning_rate=1e-3 and config.train.grad_clip_norm=10 as configs/voc.py "
        "does for Darknet (the 1e-2 meant for ImageNet weights diverges from scratch)"
    )
    if arch is not None and _family(arch) == "darknet":
        return (
            f"{arch!r} has no torchvision weights to port; a file of Darknet weights is one "
            f"you write with yolojax.pretrained.save_variables(path, {arch!r}, variables) "
            f"from variables with the layout of get_classifier({arch!r}). Or {from_scratch}"
        )
    arch = arch if arch in ARCHS else "<" + "|".join(ARCHS) + ">"
    return (
        f"make it with `python -m yolojax.pretrained --arch {arch} --out {path}` "
        f"(downloads through torchvision) or add `--state-dict PATH.pth` to convert a "
        "torchvision state_dict offline (both need the `port` extra: pip install -e "
        f"'.[port]'); or {from_scratch}"
    )


def _check_exists(path: str, arch: str | None) -> None:
    if not os.path.exists(path):
        # A name without the suffix may be a run's folder, mistyped or not yet there.
        either = "" if path.endswith(".msgpack") else " (nor a trained run's folder, to fine-tune)"
        raise FileNotFoundError(
            f"pretrained weights {path!r} not found{either}: {_how_to_make(path, arch)}"
        )


def _read_weights(path: str, arch: str | None) -> dict:
    """The ``{'arch': name, 'variables': arrays}`` that :func:`save_variables` wrote to
    ``path``; ValueError naming the file if it holds anything else."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        payload = flax.serialization.msgpack_restore(data)
    except (ValueError, TypeError) as error:  # cut short, extra data, a damaged dtype name
        payload, problem = None, f"it cannot be read as msgpack ({error})"
    else:
        problem = "it is msgpack, but not a dict of 'arch' and 'variables'"
    if (
        isinstance(payload, dict)
        and isinstance(payload.get("arch"), str)
        and isinstance(payload.get("variables"), dict)
        and all(
            isinstance(value, np.ndarray)
            for value in traverse_util.flatten_dict(payload["variables"]).values()
        )
    ):
        return payload
    raise ValueError(
        f"{path!r} is not a yolojax pretrained-weights file: {problem}. A file cut short "
        f"(a copy or a conversion stopped midway) or another kind of file: "
        f"{_how_to_make(path, arch)}"
    )


def _check_arch(path: str, file_arch: str, arch: str | None) -> None:
    """Raises ValueError, with what to do, if ``path``'s weights are ``file_arch``'s and the
    model's backbone (``arch``; None: any) is another."""
    if arch is None or file_arch == arch:
        return
    make = f" (python -m yolojax.pretrained --arch {arch} --out weights/{arch}.msgpack)"
    raise ValueError(
        f"{path!r} holds {file_arch!r} weights, but the model's backbone is {arch!r}: set "
        f"--config.model.backbone={file_arch} to start from them, or point "
        f"config.model.pretrained at a file of {arch!r} weights"
        f"{make if arch in ARCHS else ''}."
    )


def _file_arch(path: str) -> str | None:
    """The backbone a weights file is for, read without its weights (save_variables writes
    the name first); None where the file does not start as one of those files do, for
    :func:`load_pretrained` to name what it holds."""
    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, raw=False)
        try:
            if unpacker.read_map_header() and unpacker.unpack() == "arch":
                arch = unpacker.unpack()
                return arch if isinstance(arch, str) else None
        except (ValueError, msgpack.UnpackException):  # another kind of file, or cut short
            pass
    return None


def load_pretrained(variables: Mapping, path: str, *, arch: str | None = None) -> dict:
    """Replaces a model's backbone variables by the ported weights in `path`.

    Args:
      variables: initialized variables of a YOLO model (its 'backbone' subtree is replaced,
        the head keeps its fresh values) or of `get_classifier(arch)` (all replaced).
      path: a file written by `save_variables` / this module's CLI.
      arch: if given, the backbone name the file must have been made for.

    Returns:
      A new variables dict; the input is not modified.

    Raises:
      FileNotFoundError: `path` does not exist (the message says how to make it).
      ValueError: the file is not one `save_variables` wrote (damaged, or another kind of
        file), it is for another arch, or (one error listing them all) the model
        has variables the file lacks, the file has backbone variables the model lacks
        (a classifier layer the model's head does not use is fine), or shapes differ.
    """
    _check_exists(path, arch)
    payload = _read_weights(path, arch)
    file_arch = payload["arch"]
    _check_arch(path, file_arch, arch)
    variables = flax.core.unfreeze(variables)
    is_yolo = "backbone" in variables.get("params", {})
    prefix = ("backbone",) if is_yolo else ()
    model = {
        key: value
        for key, value in traverse_util.flatten_dict(variables).items()
        if key[1 : 1 + len(prefix)] == prefix
    }
    weights = {
        (key[0], *prefix, *key[1:]): value
        for key, value in traverse_util.flatten_dict(payload["variables"]).items()
    }
    optional = _CLASSIFIER_ONLY.get(_family(file_arch), ())
    missing = [key for key in model if key not in weights]
    unexpected = [
        key for key in weights if key not in model and key[1 + len(prefix)] not in optional
    ]
    mismatched = [
        (key, weights[key].shape, model[key].shape)
        for key in model
        if key in weights and weights[key].shape != model[key].shape
    ]
    _raise_mismatches(
        f"load_pretrained({path!r}), a file of {file_arch!r} weights",
        missing,
        unexpected,
        mismatched,
    )
    flat = traverse_util.flatten_dict(variables)
    for key, value in model.items():
        flat[key] = jnp.asarray(weights[key], dtype=value.dtype)
    return traverse_util.unflatten_dict(flat)


def check_start(config) -> None:
    """Checks the weights that ``config.model.pretrained`` names, as a run starting over
    does before it prepares its dataset (minutes for VOC): a ported weights file (see
    :func:`check_available`), or a trained run's folder (:func:`check_trained_run`)."""
    path = config.model.pretrained
    if path and os.path.isdir(path):
        check_trained_run(config)
    elif path:
        check_available(config.model)
        if config.model.backbone in ARCHS and config.data.normalization != "imagenet":
            errors.notice(
                f"config.model.pretrained={path!r} holds {config.model.backbone} weights, "
                "which torchvision trained on pixels normalized by ImageNet's mean and std, "
                f"but config.data.normalization={config.data.normalization!r}: they will see "
                "other values than they learned on. Set --config.data.normalization=imagenet "
                "(configs/voc.py's ImageNet variants do).",
            )


def check_trained_run(config) -> ml_collections.ConfigDict:
    """The config of the trained run whose folder ``config.model.pretrained`` names, for a run
    of ``config`` to start from its weights (``train_lib.initial_variables``).

    Raises:
      FileNotFoundError: the folder is not a run's (no config.json; a message that names
        the run for its checkpoints/ or best/), or the run saved no checkpoint yet (in
        checkpoints/ or best/: either will do).
      ValueError: the run's backbone or pixel normalization is not ``config``'s: its weights
        do not fit, or would see other pixel values than they learned on; or its
        classes.json is not a list of as many class names as its model has.
    """
    folder = config.model.pretrained
    if not os.path.exists(os.path.join(folder, CONFIG_FILE)):
        # A run's checkpoints/ or best/ (or one step's folder in them): the run is above.
        above = os.path.abspath(folder)
        for _ in range(2):
            above = os.path.dirname(above)
            if os.path.exists(os.path.join(above, CONFIG_FILE)):
                raise FileNotFoundError(
                    f"config.model.pretrained={folder!r} is a folder inside the training run "
                    f"{above}: give the run's own folder, --config.model.pretrained={above} "
                    "(a run starts from its best checkpoint, else its latest)."
                )
        raise FileNotFoundError(
            f"config.model.pretrained={folder!r} is a folder, but not a training run's (it "
            f"has no {CONFIG_FILE}): give the --workdir of a run to start from its weights, "
            "or a weights file of `python -m yolojax.pretrained`."
        )
    run_config = load_run_config(
        folder, otherwise="start from another run, or set config.model.pretrained=''"
    )
    if not (
        checkpoints.has_saved_step(folder)
        or checkpoints.has_saved_step(folder, checkpoints.BEST_FOLDER)
    ):  # a run may keep its best checkpoint alone (checkpoints/ deleted)
        raise FileNotFoundError(
            f"config.model.pretrained={folder!r}: that run has saved no checkpoint yet. Start "
            "from it once it has (it saves every config.train.checkpoint_every_steps steps)."
        )
    for section, key in (("model", "backbone"), ("data", "normalization")):
        theirs, ours = run_config[section][key], config[section][key]
        if theirs != ours:
            raise ValueError(
                f"config.model.pretrained={folder!r} is a run of config.{section}.{key}="
                f"{theirs!r}, this one's is {ours!r}: a run starts only from the weights of "
                f"a run of its own backbone and normalization. Set --config.{section}.{key}="
                f"{theirs!r}, or start from another run."
            )
    # Before the data is prepared: it matches the run's class outputs to this run's by name.
    count = run_config.model.num_classes
    try:
        run_classes = load_class_names(folder)
        fits = run_classes is None or len(run_classes) == count
    except ValueError:  # not a list of names
        fits = False
    if not fits:
        raise ValueError(
            f"config.model.pretrained={folder!r}: its {CLASSES_FILE} is not the list of the "
            f"run's {count} class names, which match its class outputs to this run's by "
            "name: restore it, or delete it to take them by position."
        )
    return run_config


def check_available(model_config: Any) -> None:
    """Raises what :func:`load_for_config` would for a missing weights file or one of
    another backbone, reading the file's backbone name but no weights: a run checks it at
    start, before it prepares a dataset (minutes for VOC), and ``--print_config`` too."""
    path = getattr(model_config, "pretrained", "")
    if path:
        _check_exists(path, model_config.backbone)
        file_arch = _file_arch(path)
        if file_arch is not None:
            _check_arch(path, file_arch, model_config.backbone)


def load_for_config(variables: Mapping, model_config: Any) -> dict:
    """Applies `model_config.pretrained` to initialized YOLO variables ('' → unchanged).

    Raises:
      FileNotFoundError / ValueError: see `load_pretrained`.
    """
    path = getattr(model_config, "pretrained", "")
    return load_pretrained(variables, path, arch=model_config.backbone) if path else variables


def _read_state_dict(path: str) -> Mapping[str, Any]:
    import torch  # The `port` extra; only the CLI needs it.

    if not os.path.isfile(path):
        raise FileNotFoundError(f"--state-dict {path}: no such file")
    advice = "save one with torch.save(model.state_dict(), PATH)"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch's errors for junk or a whole pickled model vary
        raise ValueError(
            f"--state-dict {path} is not a torch state_dict file that loads without running "
            f"code ({type(error).__name__}: {errors.first_line(error)}): {advice}"
        ) from error
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise ValueError(f"--state-dict {path} holds a {type(state).__name__}: {advice}")
    return state


def _download_state_dict(arch: str, weights: str) -> Mapping[str, Any]:
    import torchvision  # The `port` extra; only the CLI needs it.

    try:
        model = torchvision.models.get_model(arch, weights=weights)
    except Exception as error:  # any download failure gets the same advice
        raise SystemExit(
            f"could not get torchvision's {arch} {weights} weights ({error}); download the "
            "state_dict elsewhere and convert it offline with --state-dict PATH.pth"
        ) from error
    return model.state_dict()


def _check_out(parser: argparse.ArgumentParser, out: str, arch: str) -> None:
    """Refuses an ``--out`` that no file can be written to: a folder, or a path under a file."""
    if os.path.isdir(out):
        example = os.path.join(out, f"{arch}.msgpack")
        parser.error(f"--out {out} is a folder: give the file to write, such as {example}")
    parent = os.path.dirname(out)
    while parent and not os.path.exists(parent):  # a folder save_variables would make
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        parser.error(f"--out {out}: {parent} is a file, not a folder: choose another path")


def main(argv: list[str] | None = None) -> None:
    """CLI: convert torchvision ImageNet weights into a yolojax .msgpack file."""
    parser = argparse.ArgumentParser(
        prog="python -m yolojax.pretrained",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--arch", required=True, choices=ARCHS)
    parser.add_argument(
        "--out",
        type=command_flags.path_argument("--out"),
        help="output .msgpack file (default weights/<arch>.msgpack)",
    )
    parser.add_argument(
        "--state-dict",
        type=command_flags.path_argument("--state-dict"),
        help="convert this torch state_dict file (offline)",
    )
    parser.add_argument(
        "--weights",
        help="torchvision weights enum to download, not with --state-dict (default "
        "IMAGENET1K_V1, the report's `pretrained=True`; ResNets also have IMAGENET1K_V2)",
    )
    args = parser.parse_args(argv)
    if args.weights is not None and args.state_dict:
        parser.error(
            f"--weights {args.weights} picks the weights to download, and --state-dict "
            f"{args.state_dict} converts a file instead: give one of them"
        )
    out = args.out or os.path.join("weights", f"{args.arch}.msgpack")
    # Here, not at the rename once the conversion is done (a traceback then).
    _check_out(parser, out, args.arch)
    try:
        import torch  # noqa: F401  (the `port` extra, for either way of getting weights)
        import torchvision  # noqa: F401
    except ImportError as error:
        raise SystemExit(
            f"python -m yolojax.pretrained needs torch and torchvision ({error}): install "
            "the `port` extra, pip install -e '.[port]' (see the README)."
        ) from None
    from yolojax import cli  # here: importing it sets the command-line tools' log level

    with cli.command_errors():
        if args.state_dict:
            state_dict = _read_state_dict(args.state_dict)
        else:
            state_dict = _download_state_dict(args.arch, args.weights or "IMAGENET1K_V1")
        variables = convert_state_dict(args.arch, state_dict)
        try:
            save_variables(out, args.arch, variables)
        except OSError as error:  # a full disk, a read-only folder
            raise errors.machine_error(f"write {out}", error, "--out") from error
    num_params = sum(v.size for v in jax.tree_util.tree_leaves(variables["params"]))
    print(f"wrote {out}: {args.arch}, {num_params:,} parameters", file=sys.stderr)


if __name__ == "__main__":
    from yolojax import cli  # here, as in main: importing it sets the command-line log level

    with cli.closed_stdout_ends_quietly():  # `--help | head` ends quietly
        main()
