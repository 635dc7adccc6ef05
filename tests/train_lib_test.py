"""The compiled train step: frozen backbone, non-finite steps, mixed precision."""

import functools
import gc
import re
import weakref

import jax
import numpy as np
import optax
import pytest

from configs import shapes
from yolojax import distributed, losses, train_lib


def _config(**train):
    config = shapes.get_config()
    config.model.grid_size = 4
    config.model.head_channels = 16
    config.model.head_conv_layers = 1
    config.data.image_size = 64
    config.train.batch_size = 4
    config.train.update(train)
    return config


def _batch(config, poison=False):
    rng = np.random.default_rng(0)
    size, n = config.data.image_size, config.train.batch_size
    image = rng.uniform(size=(1, n, size, size, 3)).astype(np.float32)
    if poison:
        image[0, 0, 0, 0, 0] = np.nan
    return {
        "image": image,
        "boxes": np.tile(np.array([0.1, 0.2, 0.6, 0.7], np.float32), (1, n, 3, 1)),
        "labels": np.ones((1, n, 3), np.int32),
        "mask": np.array([True, False, False])[None, None].repeat(n, 1),
    }


def _compiled_step(config, batch):
    """``(state, step, on_devices, batch_on_devices)`` for one device, as the trainer builds
    them (``state`` on the host)."""
    model, state, schedule = train_lib.initial_state(config, num_train_examples=64)
    mesh = distributed.mesh(jax.local_devices()[:1])
    step = train_lib.make_train_step(model, config, schedule, mesh)
    return state, step, distributed.replicate(state, mesh), distributed.shard_batch(batch, mesh)


def _one_step(config, batch):
    state, step, on_devices, batch = _compiled_step(config, batch)
    new_state, metrics = step(on_devices, batch)
    return state, distributed.first_replica(new_state), distributed.first_replica(metrics)


def _changed(before, after):
    return [
        not np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)
    ]


def test_frozen_backbone_keeps_weights_and_statistics():
    config = _config(freeze_backbone=True, warmup_epochs=0.0)
    before, after, _ = _one_step(config, _batch(config))
    assert not any(_changed(before.params["backbone"], after.params["backbone"]))
    assert not any(_changed(before.batch_stats["backbone"], after.batch_stats["backbone"]))
    assert all(_changed(before.params["head"], after.params["head"]))


def test_unfrozen_step_updates_everything():
    config = _config(warmup_epochs=0.0)
    before, after, metrics = _one_step(config, _batch(config))
    assert all(_changed(before.params, after.params))
    assert any(_changed(before.batch_stats, after.batch_stats))
    assert int(after.step) == 1
    assert metrics["finite"] == 1.0


def test_skip_nonfinite_keeps_the_state_but_advances_the_step():
    config = _config(skip_nonfinite=True, warmup_epochs=0.0)
    before, after, metrics = _one_step(config, _batch(config, poison=True))
    assert metrics["finite"] == 0.0
    assert not any(_changed(before.params, after.params))
    assert not any(_changed(before.batch_stats, after.batch_stats))
    assert int(after.step) == 1  # so the data order stays that of an uninterrupted run
    # The optimizer's state is kept (Adam's count and moments), but the schedule's count
    # moves on with the step: the learning rate applied next is the one logged (it lagged).
    assert _schedule_counts(before.opt_state) == [0] and _schedule_counts(after.opt_state) == [1]
    kept = [_without_schedule(state.opt_state) for state in (before, after)]
    assert jax.tree.leaves(kept[0]) and not any(_changed(*kept))


def _is_schedule(node) -> bool:
    return isinstance(node, optax.ScaleByScheduleState)


def _schedule_counts(opt_state) -> list[int]:
    """The learning-rate schedule's step counts in an optimizer state."""
    nodes = jax.tree.leaves(opt_state, is_leaf=_is_schedule)
    return [int(node.count) for node in nodes if _is_schedule(node)]


def _without_schedule(opt_state):
    return jax.tree.map(lambda n: None if _is_schedule(n) else n, opt_state, is_leaf=_is_schedule)


def test_nonfinite_step_is_flagged_without_skip():
    config = _config(warmup_epochs=0.0)
    _, after, metrics = _one_step(config, _batch(config, poison=True))
    assert metrics["finite"] == 0.0
    assert not np.all(np.isfinite(jax.tree.leaves(after.params)[0]))


def test_bfloat16_step_trains_float32_params():
    config = _config(warmup_epochs=0.0)
    config.model.dtype = "bfloat16"
    before, after, metrics = _one_step(config, _batch(config))
    assert np.isfinite(metrics["loss"])
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(after.params))
    assert all(_changed(before.params["head"], after.params["head"]))


def _state_bytes(tree) -> int:
    return sum(leaf.nbytes for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize("skip_nonfinite", [False, True])
def test_step_updates_the_donated_state_in_place(skip_nonfinite):
    # SGD with momentum, weight decay and clipping on an fc head whose weight is most of the
    # state (as in the paper's Darknet). In place means the output state reuses the donated
    # buffers and the step's temporaries (gradients, activations) hold no copy of the
    # parameters or momentum; under jax.pmap XLA:CPU copied both every step (48 MB of
    # temporaries here instead of 17), and so it did when a skipped step selected the old
    # state leaf by leaf (jnp.where), which also made the paper's Darknet step 3.3x slower.
    config = _config(
        optimizer="sgd",
        momentum=0.9,
        weight_decay=5e-4,
        grad_clip_norm=10.0,
        batch_size=2,
        skip_nonfinite=skip_nonfinite,
    )
    config.model.head = "fc"
    config.model.fc_hidden = 512
    state, step, on_devices, batch = _compiled_step(config, _batch(config))
    memory = step.lower(on_devices, batch).compile().memory_analysis()
    params, momentum = _state_bytes(state.params), _state_bytes(state.opt_state)
    assert momentum >= params > 10e6  # the fc weight dominates
    assert memory.alias_size_in_bytes >= params + momentum
    assert memory.temp_size_in_bytes < params + momentum


def test_no_parameter_is_copied_before_its_update():
    # Without clipping, each update needs only its own gradient, so XLA may run it before
    # the backward pass's last read of the parameter and then copies the parameter first:
    # before the updates waited for the gradients' norm, 18 of this model's state arrays
    # (BatchNorm scales and biases, kernels, the counters); on a GPU each such copy is a
    # kernel of its own (ResNet-152's step had 476 of them).
    # The step counters (read by the metrics) and the output bias (read by the loss
    # metrics, which no gradient needs) may still be copied: a few bytes.
    config = _config(grad_clip_norm=0.0)
    _, step, on_devices, batch = _compiled_step(config, _batch(config))
    hlo = step.lower(on_devices, batch).compile().as_text()
    copied = set(re.findall(r" copy\(%(state_[\w.]+)\)", hlo))
    assert len(re.findall(r"%state_[\w.]+ = \S+ parameter\(", hlo)) > 40  # the state's names
    assert len(copied) <= 3, sorted(copied)


def test_ordering_the_updates_changes_no_bit_of_them(monkeypatch):
    # The selection that orders the updates after the backward pass must leave the
    # optimizer's arithmetic alone: a factor of 1 in the update instead made XLA:CPU round
    # the learning-rate product separately (no fused multiply-add), and after these three
    # steps 27% of the parameters differed in their last bits with SGD (17% with Adam,
    # checked once by hand, as were AdamW, a frozen backbone and clipping: 26 s each here).
    config = _config(optimizer="sgd", warmup_epochs=1.0)

    def three_steps():
        _, step, state, batch = _compiled_step(config, _batch(config))
        for _ in range(3):
            state, _ = step(state, batch)
        return jax.tree.leaves(distributed.first_replica(state).params)

    ordered = three_steps()
    monkeypatch.setattr(train_lib, "_after_every_gradient", lambda new, old, grad_norm: new)
    unordered = three_steps()
    for a, b in zip(ordered, unordered, strict=True):
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


def _one_box_batch(config):
    """A batch of one box per image, wider than tall, off the grid's diagonal: a mix-up of
    its coordinates (xyxy for yxyx, rows for columns) or of its label moves it to another
    cell or gives it another target."""
    batch = _batch(config)
    batch["boxes"][:, :, 0] = [0.1, 0.2, 0.3, 0.9]  # yxyx: 0.2 tall, 0.7 wide
    batch["labels"][:, :, 0] = 3
    return batch


def _hand_grid(config):
    """:func:`_one_box_batch`'s target grid by hand (tests/targets_test.py checks the encoding
    itself): the centre (y, x) = (0.2, 0.55) falls in row 0, column 2 of the 4×4 grid, at
    offsets (x, y) = (0.2, 0.8) within that cell; in cell units the box is 2.8 wide and 0.8
    tall."""
    num_classes, n = config.model.num_classes, config.train.batch_size
    grid = np.zeros((n, 4, 4, num_classes + 5), np.float32)
    grid[:, 0, 2, 3] = 1.0
    grid[:, 0, 2, num_classes:] = [1.0, 0.2, 0.8, 2.8, 0.8]
    return grid


def _reference_loss(config, state, images):
    """The YOLO loss of the model (train mode, the batch's own statistics) on the hand grid,
    as a function of the parameters: what the step should minimize."""
    model = train_lib.build_model(config, axis_name=None)  # one device: the same statistics

    def loss(params):
        outputs, _ = model.apply(
            {"params": params, "batch_stats": state.batch_stats},
            images,
            train=True,
            mutable=["batch_stats"],
        )
        return losses.yolo_loss(
            outputs,
            _hand_grid(config),
            num_classes=config.model.num_classes,
            num_boxes=config.model.num_boxes,
            **config.loss,
        )

    return loss


@pytest.mark.parametrize(
    "loss_settings", [{}, {"lambda_coord": 0.0, "lambda_noobj": 2.0, "rescore": False}]
)
def test_the_step_trains_on_the_batch_boxes_with_the_configured_loss(loss_settings):
    config = _config(warmup_epochs=0.0)
    config.loss.update(loss_settings)
    batch = _one_box_batch(config)
    before, _, metrics = _one_step(config, batch)
    _, expected = _reference_loss(config, before, batch["image"][0])(before.params)
    for name, value in expected.items():
        np.testing.assert_allclose(metrics[name], value, rtol=2e-5, err_msg=name)


def test_a_plain_sgd_step_moves_every_parameter_down_its_gradient():
    # SGD without momentum, decay, clipping or warm-up: params - learning_rate * gradient,
    # the gradient of the loss above taken by jax.grad outside the step. A sign or a scale
    # wrong in the step (its gradient, its mean over devices, the optimizer's wiring) shows.
    learning_rate = 0.05
    config = _config(
        optimizer="sgd",
        schedule="constant",
        learning_rate=learning_rate,
        momentum=0.0,
        weight_decay=0.0,
        grad_clip_norm=0.0,
        warmup_epochs=0.0,
    )
    batch = _one_box_batch(config)
    before, after, metrics = _one_step(config, batch)
    loss = _reference_loss(config, before, batch["image"][0])
    gradients = jax.grad(lambda params: loss(params)[0])(before.params)
    # The logged gradient norm is that gradient's (what clipping would scale down).
    norm = np.sqrt(sum(np.sum(np.square(g)) for g in jax.tree.leaves(gradients)))
    np.testing.assert_allclose(metrics["grad_norm"], norm, rtol=1e-4)
    moved = jax.tree.map(lambda b, a: (b - a) / learning_rate, before.params, after.params)
    for (path, step), gradient in zip(
        jax.tree_util.tree_leaves_with_path(moved), jax.tree.leaves(gradients), strict=True
    ):
        scale = np.abs(gradient).max()
        assert scale > 0, jax.tree_util.keystr(path)
        np.testing.assert_allclose(
            step, gradient, atol=1e-3 * scale, rtol=1e-3, err_msg=jax.tree_util.keystr(path)
        )


def test_a_flat_batch_is_refused_naming_the_layout_the_step_takes():
    config = _config()
    flat = {key: value[0] for key, value in _batch(config).items()}  # [batch, ...]
    with pytest.raises(ValueError, match=r"\[local_devices=1, per_device, \.\.\.\].*image \(4, "):
        distributed.shard_batch(flat, distributed.mesh(jax.local_devices()[:1]))


def test_each_step_draws_new_dropout_masks():
    # The fc head's dropout key follows the step: the same parameters and batch at step 0
    # and at step 1 give other losses; without dropout, the same.
    def loss_at_steps(dropout_rate):
        config = _config(warmup_epochs=0.0)
        config.model.update(head="fc", fc_hidden=64, dropout_rate=dropout_rate)
        state, step, _, batch = _compiled_step(config, _batch(config))
        mesh = distributed.mesh(jax.local_devices()[:1])
        return [
            float(step(distributed.replicate(state.replace(step=at), mesh), batch)[1]["loss"])
            for at in (0, 1, 0)
        ]

    first, second, again = loss_at_steps(0.5)
    assert first == again  # a pure function of the step
    assert abs(first - second) > 1e-4 * abs(first)
    first, second, _ = loss_at_steps(0.0)
    assert first == second


def test_a_restored_model_trains_in_a_loop_of_ones_own(tmp_path):
    # Fine-tuning a run's checkpoint with one's own jitted step, outside the train step's
    # shard_map: its BatchNorm had averaged over the unbound mesh axis ("unbound axis name").
    from tests.tiny import save_checkpoint

    config = _config()
    _, trained, _ = train_lib.initial_state(config, num_train_examples=64)
    save_checkpoint(config, trained, tmp_path)
    restored_model, restored, step = train_lib.restore_trained_state(config, tmp_path)
    # A fresh state for a loop of one's own, likewise.
    fresh_model, fresh, _ = train_lib.initial_state(config, num_train_examples=64, axis_name=None)
    images = _batch(config)["image"][0]
    for apply in (restored_model.apply, restored.apply_fn, fresh_model.apply, fresh.apply_fn):
        variables = train_lib.model_variables(restored)
        _, updates = jax.jit(functools.partial(apply, train=True, mutable=["batch_stats"]))(
            variables, images
        )
        assert any(_changed(variables["batch_stats"], updates["batch_stats"]))
    assert step == 0
    # Not for the data-parallel step, where it would keep each device's statistics apart.
    mesh = distributed.mesh(jax.local_devices()[:1])
    with pytest.raises(ValueError, match=r"axis_name=None, not the train step's mesh axis"):
        train_lib.make_train_step(restored_model, config, lambda step: 0.1, mesh)


def test_train_state_shapes_keep_no_model_or_optimizer_alive():
    # jax.eval_shape of the whole state kept its static fields (apply_fn: the model; tx) in
    # JAX's caches for good: a Detector.from_workdir loop kept each call's model and tx.
    config = _config()
    model, tx = train_lib.build_model(config, axis_name=None), optax.adam(1e-3)
    shapes = train_lib.train_state_shapes(model, config, tx)
    assert shapes.apply_fn == model.apply and shapes.tx is tx
    leaves = jax.tree.leaves((shapes.params, shapes.opt_state, shapes.batch_stats))
    assert leaves and all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in leaves)
    model_alive, tx_alive = weakref.ref(model), weakref.ref(tx.init)
    del model, tx, shapes
    gc.collect()
    assert model_alive() is None and tx_alive() is None
