"""Learning-rate schedules and optimizer options against the recipes they implement."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from yolojax import optim
from yolojax.config import default_train_config


def _train_config(**overrides):
    config = default_train_config()
    config.update(overrides)
    return config


def test_paper_recipe_schedule():
    # 10 steps per epoch, 135 epochs. Paper: warm up from 1e-3 to 1e-2 (5 epochs here),
    # then 1e-2 until epoch 75, 1e-3 until 105, 1e-4 until 135.
    config = _train_config()
    schedule = optim.learning_rate_schedule(config, steps_per_epoch=10, total_steps=1350)
    assert float(schedule(0)) == pytest.approx(1e-3)
    assert float(schedule(25)) == pytest.approx(5.5e-3)  # halfway through the warm-up
    for step, expected in ((50, 1e-2), (749, 1e-2), (750, 1e-3), (1049, 1e-3), (1050, 1e-4)):
        assert float(schedule(step)) == pytest.approx(expected), step


def test_report_table1_schedule():
    # Seed report: 1e-4 × 15 epochs, 1e-5 × 10, 5e-6 × 15 (no warm-up).
    config = _train_config(
        learning_rate=1e-4,
        warmup_epochs=0.0,
        lr_drop_epochs=(15.0, 25.0),
        lr_drop_factors=(0.1, 0.5),
    )
    schedule = optim.learning_rate_schedule(config, steps_per_epoch=4, total_steps=160)
    for step, expected in ((0, 1e-4), (59, 1e-4), (60, 1e-5), (99, 1e-5), (100, 5e-6)):
        assert float(schedule(step)) == pytest.approx(expected), step


def test_drops_that_fall_on_one_step_all_apply():
    # 2 steps an epoch: epochs 10 and 10.2 are both step 20; the first drop was lost.
    config = _train_config(
        learning_rate=1.0,
        warmup_epochs=0.0,
        lr_drop_epochs=(10.0, 10.2, 20.0),
        lr_drop_factors=(0.1, 0.5, 0.1),
    )
    schedule = optim.learning_rate_schedule(config, steps_per_epoch=2, total_steps=60)
    for step, expected in ((19, 1.0), (20, 0.05), (39, 0.05), (40, 0.005)):
        assert float(schedule(step)) == pytest.approx(expected), step


def test_cosine_schedule_ends_at_zero():
    config = _train_config(schedule="cosine", warmup_epochs=1.0, learning_rate=0.1)
    schedule = optim.learning_rate_schedule(config, steps_per_epoch=10, total_steps=110)
    assert float(schedule(10)) == pytest.approx(0.1)
    assert float(schedule(60)) == pytest.approx(0.05)  # half way down the cosine
    assert float(schedule(110)) == pytest.approx(0.0, abs=1e-9)


def test_frozen_backbone_gets_no_update_and_head_does():
    params = {"backbone": {"w": jnp.ones(3)}, "head": {"w": jnp.ones(3)}}
    grads = jax.tree.map(jnp.ones_like, params)
    tx, _ = optim.create_optimizer(_train_config(freeze_backbone=True, warmup_epochs=0.0), 10, 100)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_array_equal(updates["backbone"]["w"], 0.0)
    assert np.all(np.asarray(updates["head"]["w"]) < 0)


def test_gradient_clipping_bounds_the_update():
    params = {"w": jnp.zeros(4)}
    grads = {"w": jnp.full(4, 100.0)}  # norm 200
    config = _train_config(
        optimizer="sgd", momentum=0.0, weight_decay=0.0, warmup_epochs=0.0, grad_clip_norm=1.0
    )
    tx, _ = optim.create_optimizer(config, 10, 100)
    updates, _ = tx.update(grads, tx.init(params), params)
    # SGD step = -lr · clipped gradient; the clipped gradient has norm 1.
    assert float(jnp.linalg.norm(updates["w"])) == pytest.approx(config.learning_rate)


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match=r"config\.train\.optimizer"):
        optim.create_optimizer(_train_config(optimizer="rmsprop"), 10, 100)
    with pytest.raises(ValueError, match=r"config\.train\.schedule"):
        optim.create_optimizer(_train_config(schedule="linear"), 10, 100)
    with pytest.raises(ValueError, match="same length"):
        optim.create_optimizer(_train_config(lr_drop_factors=(0.1,)), 10, 100)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_weight_decay_shrinks_kernels_only(optimizer):
    # Zero gradients: only weight decay moves a parameter. A kernel shrinks toward 0; a bias
    # and a norm scale stay (Darknet decays conv and connected weights only).
    params = {
        "conv": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones(4)},
        "norm": {"scale": jnp.ones(4)},
        "dense": {"kernel": -jnp.ones((8, 5))},
    }
    grads = jax.tree.map(jnp.zeros_like, params)
    config = _train_config(optimizer=optimizer, weight_decay=5e-4, warmup_epochs=0.0)
    tx, _ = optim.create_optimizer(config, 10, 100)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert np.all(np.asarray(updates["conv"]["kernel"]) < 0)
    assert np.all(np.asarray(updates["dense"]["kernel"]) > 0)
    np.testing.assert_array_equal(updates["conv"]["bias"], 0.0)
    np.testing.assert_array_equal(updates["norm"]["scale"], 0.0)
    if optimizer == "sgd":  # first SGD step: -lr · decay · w
        np.testing.assert_allclose(updates["conv"]["kernel"], -config.learning_rate * 5e-4)
