"""The PyTorch reference of benchmarks/train_step.py computes what yolojax computes.

The benchmark's JAX / PyTorch ratio only means something if both sides do the same work: the
same loss (value and gradient), the same target grids, the same model size and the same
optimizer update. Skipped when torch is not installed (the `port` extra).
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")

from benchmarks import torch_reference  # noqa: E402 (needs torch)
from yolojax import losses, optim, targets  # noqa: E402
from yolojax.models import MODEL_DEFAULTS, get_model  # noqa: E402

NUM_CLASSES, GRID = 3, 4


def _random_boxes(rng, batch, max_boxes):
    """Normalized yxyx boxes with shared cells, padding and a degenerate box."""
    centre = rng.uniform(0.05, 0.95, (batch, max_boxes, 2))
    size = rng.uniform(0.02, 0.6, (batch, max_boxes, 2))
    boxes = np.clip(np.concatenate([centre - size / 2, centre + size / 2], -1), 0, 1)
    boxes[:, 1] = boxes[:, 0] * 0.9 + 0.05  # same cell as box 0 most of the time
    boxes[0, 2, 2] = boxes[0, 2, 0]  # zero height: must be ignored
    labels = rng.integers(0, NUM_CLASSES, (batch, max_boxes))
    mask = np.arange(max_boxes) < rng.integers(2, max_boxes + 1, (batch, 1))
    return boxes.astype(np.float32), labels.astype(np.int32), mask


def test_target_grids_match_yolojax():
    boxes, labels, mask = _random_boxes(np.random.default_rng(0), batch=6, max_boxes=8)
    expected = targets.encode_batch(boxes, labels, mask, grid_size=GRID, num_classes=NUM_CLASSES)
    actual = torch_reference.encode_targets(
        torch.from_numpy(boxes),
        torch.from_numpy(labels),
        torch.from_numpy(mask),
        grid_size=GRID,
        num_classes=NUM_CLASSES,
    )
    assert float(expected[..., NUM_CLASSES].sum()) > 6  # several objects, not an empty grid
    np.testing.assert_allclose(actual.numpy(), np.asarray(expected), atol=1e-6)


@pytest.mark.parametrize(
    ("rescore", "noobj_on_unassigned", "num_boxes"),
    [(True, True, 2), (True, False, 2), (False, True, 2), (False, False, 2), (True, False, 3)],
)
def test_loss_and_gradient_match_yolojax(rescore, noobj_on_unassigned, num_boxes):
    rng = np.random.default_rng(1)
    boxes, labels, mask = _random_boxes(rng, batch=4, max_boxes=6)
    grid = np.asarray(
        targets.encode_batch(boxes, labels, mask, grid_size=GRID, num_classes=NUM_CLASSES)
    )
    # Sizes around 0 so the signed square root sees negative predictions too.
    shape = (4, GRID, GRID, NUM_CLASSES + 5 * num_boxes)
    predictions = rng.normal(0.5, 0.6, shape).astype(np.float32)
    options = {
        "num_classes": NUM_CLASSES,
        "num_boxes": num_boxes,
        "lambda_coord": 5.0,
        "lambda_noobj": 0.5,
        "rescore": rescore,
        "noobj_on_unassigned": noobj_on_unassigned,
    }

    (_, jax_metrics), jax_grad = jax.value_and_grad(
        lambda p: losses.yolo_loss(p, jnp.asarray(grid), **options), has_aux=True
    )(jnp.asarray(predictions))
    torch_predictions = torch.tensor(predictions, requires_grad=True)
    torch_loss, torch_metrics = torch_reference.yolo_loss(
        torch_predictions, torch.from_numpy(grid), **options
    )
    torch_loss.backward()

    assert set(torch_metrics) == set(jax_metrics)
    for name, value in jax_metrics.items():
        np.testing.assert_allclose(
            torch_metrics[name].item(), float(value), rtol=1e-5, err_msg=name
        )
    np.testing.assert_allclose(
        torch_predictions.grad.numpy(), np.asarray(jax_grad), rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize(
    ("backbone", "head", "image_size"),
    [
        ("darknet_tiny", "conv", 112),
        ("darknet_tiny", "fc", 96),
        ("resnet18", "conv", 224),  # 7×7 map: the head keeps it
        ("resnet18", "conv", 448),  # 14×14 map: the head's first conv has stride 2
        ("resnet18", "seed", 224),
    ],
)
def test_models_have_the_same_parameter_count_and_output_shape(backbone, head, image_size):
    config = ml_collections.ConfigDict(
        {"backbone": backbone, "head": head, "num_classes": 20, "grid_size": 7, "num_boxes": 2}
    )
    model = get_model(config)
    images = jnp.zeros((2, image_size, image_size, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), images, train=False))
    jax_count = sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))

    full_config = ml_collections.ConfigDict({**MODEL_DEFAULTS, **config})  # as get_model fills it
    reference = torch_reference.YOLO(full_config, image_size)
    with torch.no_grad():
        outputs = reference.eval()(torch.zeros(2, image_size, image_size, 3))

    assert torch_reference.num_parameters(reference) == jax_count
    assert tuple(outputs.shape) == (2, 7, 7, 30)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimizer_updates_match_optax(optimizer):
    train_config = ml_collections.ConfigDict(
        {
            "optimizer": optimizer,
            "learning_rate": 0.1,
            "momentum": 0.9,
            "weight_decay": 0.01,
            "schedule": "constant",
            "warmup_epochs": 0.0,
            "grad_clip_norm": 0.0,
            "freeze_backbone": False,
        }
    )
    rng = np.random.default_rng(2)
    # A kernel (decayed) and a bias (not decayed).
    params = {"kernel": rng.normal(size=(5, 3)), "bias": rng.normal(size=(3,))}
    params = {name: value.astype(np.float32) for name, value in params.items()}
    gradients = [
        {name: rng.normal(size=value.shape).astype(np.float32) for name, value in params.items()}
        for _ in range(3)
    ]

    tx, _ = optim.create_optimizer(train_config, steps_per_epoch=10, total_steps=100)
    jax_params = jax.tree.map(jnp.asarray, params)
    state = tx.init(jax_params)
    torch_params = {
        name: torch.nn.Parameter(torch.from_numpy(value.copy())) for name, value in params.items()
    }
    torch_optimizer = torch_reference.make_optimizer(torch_params.values(), train_config)
    for gradient in gradients:
        updates, state = tx.update(jax.tree.map(jnp.asarray, gradient), state, jax_params)
        jax_params = optax.apply_updates(jax_params, updates)
        for name, value in gradient.items():
            torch_params[name].grad = torch.from_numpy(value)
        torch_optimizer.step()

    for name, value in params.items():
        assert not np.allclose(np.asarray(jax_params[name]), value)  # the steps moved it
        np.testing.assert_allclose(
            torch_params[name].detach().numpy(), np.asarray(jax_params[name]), rtol=1e-5, atol=1e-5
        )
