"""Tests for yolojax.pretrained: torchvision ports give torchvision's logits; strict loading."""

import errno
import os
import re
import sys
import warnings

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from yolojax import models, pretrained


@pytest.fixture(name="torch")
def fixture_torch():
    """torch with torchvision (the `port` extra); tests using it skip when it is absent."""
    torch = pytest.importorskip("torch", reason="needs the `port` extra (torch, torchvision)")
    pytest.importorskip("torchvision", reason="needs the `port` extra (torch, torchvision)")
    return torch


def _random_torchvision_model(torch, arch: str):
    """A randomly initialized torchvision model in eval mode with random BatchNorm state.

    Running statistics and affine parameters are randomized because at their defaults
    (mean 0, var 1, scale 1, bias 0) a BatchNorm port that swapped or dropped them would
    still give torchvision's logits.
    """
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(arch).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
    return model


def _nhwc(torch_images) -> jnp.ndarray:
    return jnp.asarray(torch_images.numpy().transpose(0, 2, 3, 1))


def _classifier_logits(arch: str, variables, images: jnp.ndarray) -> np.ndarray:
    classifier = models.get_classifier(arch)
    forward = jax.jit(lambda v, x: classifier.apply(v, x, train=False))
    return np.asarray(forward(variables, images))


def _random_like(shapes: dict, seed: int) -> dict:
    """Random float32 arrays for a {(collection, *path): shape} dict, as a nested dict."""
    rng = np.random.default_rng(seed)
    flat = {key: rng.normal(size=shape).astype(np.float32) for key, shape in shapes.items()}
    return traverse_util.unflatten_dict(flat)


def _random_classifier_variables(arch: str, seed: int = 0) -> dict:
    """Random variables with the layout of get_classifier(arch), without a real init."""
    return _random_like(pretrained.classifier_shapes(arch), seed)


def _yolo_variables(backbone: str, head: str, seed: int = 1) -> dict:
    """Random variables with the layout of a YOLO model, without a real init."""
    config = ml_collections.ConfigDict(
        {"backbone": backbone, "head": head, "head_channels": 16, "head_conv_layers": 1}
    )
    model = models.get_model(config)
    images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
    flat = traverse_util.flatten_dict(variables)
    return _random_like({key: value.shape for key, value in flat.items()}, seed)


# 64×64 inputs keep ResNet-152 and VGG16 fast; they give VGG a 2×2 map whose four positions
# differ, so a wrong (c, h, w) → (h, w, c) reordering of its first Linear would show.
@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnet152", "vgg16", "vgg16_bn"])
def test_port_gives_torchvision_logits(torch, arch):
    model = _random_torchvision_model(torch, arch)
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(images).numpy()
    variables = pretrained.convert_state_dict(arch, model.state_dict())
    actual = _classifier_logits(arch, variables, _nhwc(images))
    assert actual.shape == expected.shape == (1, 1000)
    assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()


def test_a_data_parallel_models_keys_convert_and_a_module_is_named(torch):
    model = _random_torchvision_model(torch, "resnet18")
    wrapped = torch.nn.DataParallel(model).state_dict()  # 'module.conv1.weight', ...
    assert all(key.startswith("module.") for key in wrapped)
    plain = pretrained.convert_state_dict("resnet18", model.state_dict())
    converted = pretrained.convert_state_dict("resnet18", wrapped)
    for key, value in traverse_util.flatten_dict(plain).items():
        np.testing.assert_array_equal(traverse_util.flatten_dict(converted)[key], value)
    with pytest.raises(TypeError, match=r"got a ResNet \(a torch module: pass model\.state_dict"):
        pretrained.convert_state_dict("resnet18", model)


def test_conversion_lists_every_bad_torch_key_in_one_error(torch):
    state_dict = _random_torchvision_model(torch, "resnet18").state_dict()
    del state_dict["layer1.0.conv1.weight"]
    state_dict["layer9.0.conv1.weight"] = torch.zeros(1)
    state_dict["fc.bias"] = torch.zeros(10)
    with pytest.raises(ValueError) as error:
        pretrained.convert_state_dict("resnet18", state_dict)
    message = str(error.value)
    assert "1 missing key(s)" in message and "params/layer1_0/conv1/conv/kernel" in message
    assert "1 unexpected key(s)" in message and "layer9.0.conv1.weight" in message
    assert "params/fc/bias: (10,) vs (1000,)" in message


def test_cli_converts_a_state_dict_file_offline(torch, tmp_path):
    model = _random_torchvision_model(torch, "resnet18")
    state_dict_path, out = tmp_path / "resnet18.pth", tmp_path / "weights" / "resnet18.msgpack"
    torch.save(model.state_dict(), state_dict_path)
    pretrained.main(["--arch", "resnet18", "--state-dict", str(state_dict_path), "--out", str(out)])

    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = model(images).numpy()
    fresh = _random_classifier_variables("resnet18")
    loaded = pretrained.load_pretrained(fresh, str(out), arch="resnet18")
    actual = _classifier_logits("resnet18", loaded, _nhwc(images))
    assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()


def test_cli_download_failure_suggests_the_offline_path(torch, monkeypatch, tmp_path):
    import torchvision

    def no_network(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.models, "get_model", no_network)
    with pytest.raises(SystemExit, match="--state-dict"):
        pretrained.main(["--arch", "vgg16", "--out", str(tmp_path / "vgg16.msgpack")])


def test_cli_without_the_port_extra_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # `import torchvision` fails
    with pytest.raises(SystemExit, match=r"needs torch and torchvision .*\[port\]"):
        pretrained.main(["--arch", "resnet18", "--state-dict", str(tmp_path / "r.pth")])


@pytest.mark.parametrize(
    "content, message",
    [
        (None, r"--state-dict .*nothere.pth: no such file"),
        ("junk", r"is not a torch state_dict file .*torch.save\(model.state_dict\(\), PATH\)"),
        ("whole model", r"is not a torch state_dict file .*UnpicklingError"),
        ("list", r"holds a list: save one with torch.save\(model.state_dict\(\), PATH\)"),
    ],
)
def test_cli_names_a_file_that_is_no_state_dict_without_a_traceback(
    torch, tmp_path, capsys, content, message
):
    path = tmp_path / "nothere.pth"
    if content == "junk":
        path.write_bytes(b"junk")
    elif content == "whole model":  # torch.save(model): loading it would run pickled code
        torch.save(torch.nn.Linear(2, 2), path)
    elif content == "list":
        torch.save([1, 2], path)
    with pytest.raises(SystemExit) as exit_info:
        pretrained.main(["--arch", "resnet18", "--state-dict", str(path), "--out", "x.msgpack"])
    assert exit_info.value.code == 1
    stderr = capsys.readouterr().err
    assert re.search(message, stderr), stderr
    assert "Traceback" not in stderr
    assert "\x1b[" not in stderr  # torch's bold type in its message, as terminal codes


def test_weights_of_another_depth_are_named_as_such_in_a_short_error(torch):
    state_dict = _random_torchvision_model(torch, "resnet18").state_dict()
    with pytest.raises(ValueError) as error:
        pretrained.convert_state_dict("resnet50", state_dict)
    message = str(error.value)
    # ResNet-50's variables that ResNet-18 lacks, counted from torchvision's own key names
    # (each a variable but the BatchNorm counters); the error lists the first 20.
    resnet50 = _random_torchvision_model(torch, "resnet50").state_dict()
    absent = [k for k in resnet50 if k not in state_dict and not k.endswith("num_batches_tracked")]
    assert f"{len(absent)} missing key(s)" in message
    assert f"... and {len(absent) - 20} more" in message
    assert "weights of another architecture" in message
    assert len(message.splitlines()) < 80  # it listed every one of about 200 keys


def test_loading_replaces_the_backbone_and_keeps_the_fresh_head(tmp_path):
    path = str(tmp_path / "resnet18.msgpack")
    weights = _random_classifier_variables("resnet18")
    pretrained.save_variables(path, "resnet18", weights)
    for head in ("conv", "seed"):
        fresh = _yolo_variables("resnet18", head)
        loaded = pretrained.load_pretrained(fresh, path, arch="resnet18")
        for collection in ("params", "batch_stats"):
            backbone = traverse_util.flatten_dict(loaded[collection]["backbone"])
            for key, value in backbone.items():
                np.testing.assert_array_equal(value, _get(weights[collection], key))
            jax.tree_util.tree_map(
                np.testing.assert_array_equal,
                loaded[collection].get("head"),
                fresh[collection].get("head"),
            )
        # The classifier's fc layer has no place in a YOLO model: skipped, not an error.
        assert "fc" not in loaded["params"]["backbone"]


def _get(tree, key):
    for part in key:
        tree = tree[part]
    return tree


def test_loading_lists_every_mismatch_in_one_error(tmp_path):
    path = str(tmp_path / "resnet18.msgpack")
    weights = _random_classifier_variables("resnet18")
    del weights["params"]["layer4_1"]  # missing in the file
    weights["params"]["layer5_0"] = {"conv1": {"conv": {"kernel": np.zeros((3, 3, 8, 8))}}}
    weights["params"]["stem"]["conv"]["kernel"] = np.zeros((5, 5, 3, 64), np.float32)
    pretrained.save_variables(path, "resnet18", weights)
    with pytest.raises(ValueError) as error:
        pretrained.load_pretrained(_yolo_variables("resnet18", "conv"), path)
    message = str(error.value)
    assert "missing key(s)" in message and "params/backbone/layer4_1/conv2/norm/scale" in message
    assert "1 unexpected key(s)" in message and "params/backbone/layer5_0/conv1/conv" in message
    assert "params/backbone/stem/conv/kernel: (5, 5, 3, 64) vs (7, 7, 3, 64)" in message


def test_weights_of_another_architecture_are_rejected(tmp_path):
    path = str(tmp_path / "resnet18.msgpack")
    pretrained.save_variables(path, "resnet18", _random_classifier_variables("resnet18"))
    with pytest.raises(ValueError, match=r"holds 'resnet18' weights.*'resnet34'"):
        pretrained.load_pretrained({}, path, arch="resnet34")
    # Without the arch check, the strict key comparison names ResNet-34's extra blocks, and
    # the file's own arch.
    with pytest.raises(ValueError, match=r"a file of 'resnet18' weights: (.|\n)*layer1_2"):
        pretrained.load_pretrained(_yolo_variables("resnet34", "conv"), path)


def test_a_run_is_told_at_start_that_its_weights_are_of_another_backbone(tmp_path, monkeypatch):
    # Told only when the weights were loaded, after the dataset's preparation (minutes for
    # VOC), and without what to do; --print_config said nothing.
    path = str(tmp_path / "resnet18.msgpack")
    pretrained.save_variables(path, "resnet18", _random_classifier_variables("resnet18"))
    junk = tmp_path / "junk.msgpack"
    junk.write_bytes(b"not msgpack at all")

    def no_weights_read(*args):
        raise AssertionError("the check read the weights")

    monkeypatch.setattr(pretrained, "_read_weights", no_weights_read)
    model_config = ml_collections.ConfigDict({"backbone": "resnet34", "pretrained": path})
    with pytest.raises(ValueError) as error:
        pretrained.check_available(model_config)
    assert str(error.value) == (
        f"{path!r} holds 'resnet18' weights, but the model's backbone is 'resnet34': set "
        "--config.model.backbone=resnet18 to start from them, or point config.model.pretrained "
        "at a file of 'resnet34' weights (python -m yolojax.pretrained --arch resnet34 --out "
        "weights/resnet34.msgpack)."
    )
    model_config.backbone = "resnet18"
    pretrained.check_available(model_config)  # its own backbone's
    model_config.pretrained = str(junk)  # named by the load, which reads the whole file
    pretrained.check_available(model_config)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="is not a yolojax pretrained-weights file"):
        pretrained.load_for_config({}, model_config)


@pytest.mark.parametrize(
    "damage, problem",
    [
        ("cut", "cannot be read as msgpack"),  # a copy cut short
        ("junk", "cannot be read as msgpack"),  # another kind of file
        ("model", "is msgpack, but not a dict of 'arch' and 'variables'"),  # saved by hand
        ("dtype", "cannot be read as msgpack"),  # a damaged array header (flax's TypeError)
    ],
)
def test_a_file_that_is_no_weights_file_is_named_with_what_to_do(tmp_path, damage, problem):
    path = tmp_path / "resnet18.msgpack"
    weights = _random_classifier_variables("resnet18")
    pretrained.save_variables(str(path), "resnet18", weights)
    data = {
        "cut": path.read_bytes()[: path.stat().st_size // 2],
        "junk": b"not weights" * 3,
        "model": flax.serialization.msgpack_serialize(weights),
        "dtype": path.read_bytes().replace(b"float32", b"floaz32"),
    }[damage]
    path.write_bytes(data)
    with pytest.raises(ValueError) as error:
        pretrained.load_pretrained(_yolo_variables("resnet18", "conv"), str(path))
    message = str(error.value)
    assert f"{str(path)!r} is not a yolojax pretrained-weights file: it {problem}" in message
    assert "python -m yolojax.pretrained --arch <" in message  # how to make it again


def test_a_missing_weight_file_says_how_to_make_it(tmp_path):
    config = ml_collections.ConfigDict(
        {"backbone": "resnet152", "pretrained": str(tmp_path / "resnet152.msgpack")}
    )
    with pytest.raises(FileNotFoundError, match=r"python -m yolojax\.pretrained --arch resnet152"):
        pretrained.load_for_config({}, config)


def test_config_without_weights(tmp_path):
    variables = {"params": {"backbone": {"w": np.ones(2)}}}
    no_weights = ml_collections.ConfigDict({"backbone": "resnet18", "pretrained": ""})
    assert pretrained.load_for_config(variables, no_weights) is variables


def test_darknet_weights_of_ones_own_load_through_the_config(tmp_path):
    # Darknet has no torchvision port; the documented extension point is a file written by
    # save_variables with get_classifier's layout, then config.model.pretrained.
    config = ml_collections.ConfigDict(
        {"backbone": "darknet_tiny", "pretrained": str(tmp_path / "darknet_tiny.msgpack")}
    )
    with pytest.raises(FileNotFoundError, match="'darknet_tiny' has no torchvision weights"):
        pretrained.check_available(config)
    weights = _random_classifier_variables("darknet_tiny", seed=3)
    pretrained.save_variables(config.pretrained, "darknet_tiny", weights)
    pretrained.check_available(config)
    variables = _yolo_variables("darknet_tiny", "conv")
    loaded = traverse_util.flatten_dict(pretrained.load_for_config(variables, config))
    for key, value in traverse_util.flatten_dict(weights).items():
        if key[1] != "fc":  # the classifier layer, which the YOLO head does not use
            np.testing.assert_array_equal(loaded[(key[0], "backbone", *key[1:])], value)
    head = [key for key in loaded if key[1] == "head"]
    assert head and all(
        np.array_equal(loaded[key], traverse_util.flatten_dict(variables)[key]) for key in head
    )


def test_every_ported_architecture_is_a_voc_config_variant_that_loads_its_weights(
    tmp_path, monkeypatch
):
    from configs import voc

    for arch in pretrained.ARCHS:  # where the README's port command writes them
        assert voc.get_config(arch).model.pretrained == f"weights/{arch}.msgpack"
    # As the README has it: port into weights/<variant>.msgpack, then train the variant.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights").mkdir()
    weights = _random_classifier_variables("resnet18")
    pretrained.save_variables("weights/resnet18.msgpack", "resnet18", weights)
    config = voc.get_config("resnet18").model
    loaded = pretrained.load_for_config(_yolo_variables(config.backbone, config.head), config)
    np.testing.assert_array_equal(
        loaded["params"]["backbone"]["stem"]["conv"]["kernel"],
        weights["params"]["stem"]["conv"]["kernel"],
    )


def test_cli_refuses_an_out_that_is_no_file_path_before_converting(tmp_path, capsys):
    # Refused once the whole conversion was done, by a traceback of the final rename.
    (tmp_path / "afile").write_text("")
    for out, message in (
        (
            tmp_path,
            f"--out {tmp_path} is a folder: give the file to write, such as "
            f"{tmp_path / 'resnet18.msgpack'}",
        ),
        (tmp_path / "afile" / "x.msgpack", f"{tmp_path / 'afile'} is a file, not a folder"),
    ):
        with pytest.raises(SystemExit) as exit_info:  # the state_dict is not even read
            pretrained.main(["--arch", "resnet18", "--state-dict", "no.pth", "--out", str(out)])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_cli_paths_given_after_an_equals_sign_have_their_tilde_expanded(torch, tmp_path, capsys):
    # The shell leaves --state-dict=~/x.pth as it is: "no such file" for a file that is there.
    with pytest.raises(SystemExit):  # the one-paragraph error of a missing file
        pretrained.main(["--arch", "resnet18", "--state-dict=~/no.pth", f"--out={tmp_path}/o"])
    expanded = os.path.expanduser("~/no.pth")
    assert f"--state-dict {expanded}: no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        pretrained.main(["--arch", "resnet18", "--state-dict", "x.pth", "--out="])
    assert exit_info.value.code == 2 and "argument --out: is empty" in capsys.readouterr().err


def test_cli_refuses_weights_to_download_with_a_state_dict_to_convert(tmp_path, capsys):
    # --weights was dropped without a word: the file was converted, whatever its weights.
    with pytest.raises(SystemExit) as exit_info:
        pretrained.main(
            ["--arch", "resnet18", "--state-dict", "r18.pth", "--weights", "IMAGENET1K_V2"]
        )
    assert exit_info.value.code == 2
    assert "--weights IMAGENET1K_V2 picks the weights to download" in capsys.readouterr().err


def test_cli_names_the_out_it_cannot_write_without_a_traceback(
    torch, tmp_path, monkeypatch, capsys
):
    def full_disk(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pretrained, "atomic_write_bytes", full_disk)
    state_dict_path, out = tmp_path / "resnet18.pth", tmp_path / "resnet18.msgpack"
    torch.save(_random_torchvision_model(torch, "resnet18").state_dict(), state_dict_path)
    with pytest.raises(SystemExit) as exit_info:
        pretrained.main(
            ["--arch", "resnet18", "--state-dict", str(state_dict_path), "--out", str(out)]
        )
    assert exit_info.value.code == 1
    stderr = capsys.readouterr().err
    assert f"Cannot write {out} (OSError: No space left on device): free space, or " in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("backbone", "normalization", "warned"),
    [
        ("resnet18", "unit", True),  # torchvision's weights learned on ImageNet's mean and std
        ("resnet18", "imagenet", False),
        ("vgg16_bn", "unit", True),
        ("darknet_tiny", "unit", False),  # weights of one's own: their normalization is theirs
    ],
)
def test_a_start_from_imagenet_weights_with_other_pixel_normalization_is_warned_of(
    tmp_path, backbone, normalization, warned
):
    from yolojax import config as yolojax_config
    from yolojax import errors

    config = yolojax_config.default_config()
    config.model.backbone = backbone
    config.model.pretrained = str(tmp_path / f"{backbone}.msgpack")
    config.data.normalization = normalization
    pretrained.save_variables(config.model.pretrained, backbone, {"params": {}})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pretrained.check_start(config)
    notices = [str(w.message) for w in caught if issubclass(w.category, errors.Notice)]
    if warned:
        assert notices == [
            f"config.model.pretrained={config.model.pretrained!r} holds {backbone} weights, "
            "which torchvision trained on pixels normalized by ImageNet's mean and std, but "
            "config.data.normalization='unit': they will see other values than they learned "
            "on. Set --config.data.normalization=imagenet (configs/voc.py's ImageNet variants "
            "do)."
        ]
    else:
        assert notices == []
