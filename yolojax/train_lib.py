"""The train state, the train step (data parallel over mesh axis ``'batch'``), and building
or restoring the state of a config. The loop lives in ``yolojax.trainer``.
"""

import collections
import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from flax.training import train_state
from jax.sharding import Mesh, PartitionSpec

from yolojax import checkpoints, distributed, errors, losses, optim, targets
from yolojax.models import get_model, yolo
from yolojax.outputs import output_channels
from yolojax.pretrained import check_trained_run, load_for_config
from yolojax.workdir import CLASSES_FILE, load_class_names

AXIS = distributed.AXIS


class TrainState(train_state.TrainState):
    """Flax's TrainState plus BatchNorm statistics (an empty dict for GroupNorm models)."""

    batch_stats: Any = None


def model_variables(state: TrainState) -> dict:
    """The variables ``model.apply`` takes: the state's ``params``, and its ``batch_stats``
    unless the model has none (GroupNorm)."""
    variables = {"params": state.params}
    if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
    return variables


class NonFiniteLossError(FloatingPointError):
    """A training step produced a NaN or infinite loss."""


def build_model(config, *, axis_name: str | None = AXIS):
    """The YOLO module for ``config`` (BatchNorm statistics averaged over ``axis_name``)."""
    model = get_model(config.model, axis_name=axis_name, name="config.model")
    if config.train.freeze_backbone:
        model = model.clone(freeze_backbone=True)
    return model


def _init_variables(model, config, key) -> dict:
    size = config.data.image_size
    images = jnp.zeros((1, size, size, 3), jnp.float32)
    return model.init({"params": key}, images, train=False)


def initial_variables(model, config, key, *, class_names: Sequence[str] | None = None) -> dict:
    """Fresh variables for ``model``, with the weights ``config.model.pretrained`` names:
    ported ImageNet weights (a file), or a trained run's (its folder, :func:`with_run_weights`,
    given ``class_names``, the dataset's)."""
    init = jax.jit(functools.partial(_init_variables, model, config))
    variables = jax.device_get(init(key))
    path = config.model.pretrained
    if path and os.path.isdir(path):
        return with_run_weights(variables, config, class_names)
    if path:
        variables = load_for_config(variables, config.model)
    return variables


def with_run_weights(variables: dict, config, class_names: Sequence[str] | None = None) -> dict:
    """``variables`` of ``config``'s model with the arrays of the trained run in the folder
    ``config.model.pretrained`` (its best checkpoint, else its latest), for fine-tuning it:
    on another dataset, with other classes. An array whose shape differs from the run's (the
    head, for another grid or input size) keeps its fresh value, and a
    :class:`yolojax.errors.Notice` names those, and the run's arrays this model has no place
    for (a head layer fewer).

    ``class_names``: this model's classes, in label order. Given, and not the run's (its
    classes.json), the output layer is taken class by class: the run's box outputs, and the
    class outputs of each class the run has too, by name (in any order, of any count; case,
    spaces, ``_`` and ``-`` aside: :func:`_run_class_of_each`); the other classes' start
    fresh, and the notice names both. Not given (or the run has no classes.json), the
    output layer is taken whole for a run of as many classes and boxes, its classes by
    position; for other counts it starts fresh.

    Raises:
      FileNotFoundError / ValueError: see ``pretrained.check_trained_run``.
      checkpoints.NoCheckpointError: no checkpoint of the run can be read (all damaged).
    """
    folder = config.model.pretrained
    run_config = check_trained_run(config)
    try:
        _, state, step = restore_trained_state(run_config, folder, "best")
        which = "best"
    except checkpoints.NoCheckpointError:  # a run that has not evaluated yet, or damaged
        try:
            _, state, step = restore_trained_state(run_config, folder, "latest")
        except checkpoints.NoCheckpointError as error:
            raise checkpoints.NoCheckpointError(
                f"config.model.pretrained={folder!r}: no checkpoint of that run can be read, "
                "neither in best/ nor in checkpoints/ (the warnings above name the damaged "
                "ones): restore them from a backup, or start from another run."
            ) from error
        which = "latest"
    trained = traverse_util.flatten_dict(jax.device_get(model_variables(state)))
    flat = traverse_util.flatten_dict(variables)
    run_classes = load_class_names(folder)  # checked by check_trained_run
    by_name = None not in (class_names, run_classes) and list(run_classes) != list(class_names)
    run_class_of_ours = _run_class_of_each(class_names, run_classes) if by_name else None
    run_model = run_config.model
    # Taken by position only when each channel means what it meant: C + 5B may be the same
    # number for other C and B (5 classes and 3 boxes, 10 and 2).
    same_layout = (run_model.num_classes, run_model.num_boxes) == (
        config.model.num_classes,
        config.model.num_boxes,
    )
    output_layer = ("params", *yolo.output_layer(config.model.head))
    fresh, matched = [], False
    for key, value in flat.items():
        if key[:-1] == output_layer and key in trained and (by_name or not same_layout):
            outputs = None
            if by_name and run_model.num_boxes == config.model.num_boxes:
                outputs = _outputs_by_class_name(
                    value, trained[key], run_class_of_ours, len(run_classes), config.model.num_boxes
                )
            if outputs is None:
                fresh.append("/".join(key[1:]))
            else:
                flat[key], matched = outputs, True
        elif key in trained and trained[key].shape == value.shape:
            flat[key] = np.asarray(trained[key], value.dtype)
        else:
            fresh.append("/".join(key[1:]))
    # The run's arrays that this model has no place for (a head layer fewer): not taken.
    unused = ["/".join(key[1:]) for key in trained if key not in flat]
    message = (
        f"Starting from the weights of the run in {folder} (its {which} checkpoint, step {step})"
    )
    if matched:
        message += _class_matching(class_names, run_classes, run_class_of_ours)
    elif class_names is not None and run_classes is None and same_layout:
        message += f"; the run has no {CLASSES_FILE}: its class outputs are taken by position"
    if fresh:
        message += (
            f"; {len(fresh)} of {len(flat)} arrays start fresh, the run's having another "
            f"shape or layout, or none: {_listed(fresh)}"
        )
    if unused:
        message += (
            f"; {len(unused)} of the run's {len(trained)} arrays are left out, this model "
            f"having none of their name: {_listed(unused)}"
        )
    errors.notice(message + ".")
    return traverse_util.unflatten_dict(flat)


def _class_key(name: str) -> str:
    """A class name as matched against a run's: "Potted plant", "potted_plant" and
    "pottedplant" are one class."""
    return "".join(character for character in name.casefold() if character.isalnum())


def _run_class_of_each(class_names: Sequence[str], run_classes: Sequence[str]) -> list[int | None]:
    """For each of ``class_names``, the index in ``run_classes`` of the run's class of that
    name, or None where the run has none.

    The same name first; else the one run class whose name differs only in case, spaces,
    ``_`` or ``-`` (``Person`` is the run's ``person``), where no other class on either side
    differs from them only so. Each run class is taken for one class at most.
    """
    exact = {name: index for index, name in enumerate(run_classes)}
    matched = [exact.get(name) for name in class_names]
    unmatched_run = collections.defaultdict(list)
    for index, name in enumerate(run_classes):
        if index not in matched:
            unmatched_run[_class_key(name)].append(index)
    unmatched_ours = collections.Counter(
        _class_key(name) for name, index in zip(class_names, matched, strict=True) if index is None
    )
    for position, name in enumerate(class_names):
        candidates = unmatched_run[_class_key(name)]
        if matched[position] is None and len(candidates) == unmatched_ours[_class_key(name)] == 1:
            matched[position] = candidates[0]
    return matched


def _outputs_by_class_name(
    fresh, trained, run_class_of_ours: list[int | None], num_run_classes: int, num_boxes: int
) -> np.ndarray | None:
    """``fresh``, an array of this model's output layer (last axis ``cells · (C + 5B)``, C =
    ``len(run_class_of_ours)``), with the trained run's box outputs and the class outputs of
    the run's classes that :func:`_run_class_of_each` matched to ours, the run having
    ``num_run_classes`` classes and as many boxes a cell; None when the run's array is not
    laid out for as many cells (another grid or head)."""
    num_classes = len(run_class_of_ours)
    ours, theirs = (output_channels(count, num_boxes) for count in (num_classes, num_run_classes))
    cells = fresh.shape[-1] // ours
    if (
        fresh.shape[:-1] != trained.shape[:-1]
        or fresh.shape[-1] != cells * ours
        or trained.shape[-1] != cells * theirs
    ):
        return None
    mapped = np.array(fresh).reshape(*fresh.shape[:-1], cells, ours)
    run = np.asarray(trained, fresh.dtype).reshape(*trained.shape[:-1], cells, theirs)
    mapped[..., num_classes:] = run[..., num_run_classes:]  # the boxes: any class's
    for index, run_index in enumerate(run_class_of_ours):
        if run_index is not None:
            mapped[..., index] = run[..., run_index]
    return mapped.reshape(fresh.shape)


def _class_matching(class_names, run_classes, run_class_of_ours) -> str:
    """How :func:`_outputs_by_class_name` took the output layer, for the notice."""
    kept = [
        name if run_classes[index] == name else f"{name} (the run's {run_classes[index]})"
        for name, index in zip(class_names, run_class_of_ours, strict=True)
        if index is not None
    ]
    new = [
        name for name, index in zip(class_names, run_class_of_ours, strict=True) if index is None
    ]
    dropped = [name for index, name in enumerate(run_classes) if index not in run_class_of_ours]
    if kept:
        classes = (
            f"and its class outputs for {_listed(kept)} ({len(kept)} of "
            f"{errors.count(len(class_names), 'class', 'classes')})"
        )
    else:
        classes = "but none of its class outputs: no class name in common"
    message = f"; the output layer is taken by class name: the run's box outputs {classes}"
    if new:
        message += f"; fresh class outputs for {_listed(new)}"
    if dropped:
        message += f"; the run's classes not taken: {_listed(dropped)}"
    return message


def _listed(names: list[str], most: int = 6) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _state_of(model, variables, tx) -> TrainState:
    return TrainState.create(
        apply_fn=model.apply,
        params=variables["params"],
        tx=tx,
        batch_stats=variables.get("batch_stats", {}),
    )


def create_train_state(
    model, config, tx, key, *, class_names: Sequence[str] | None = None
) -> TrainState:
    """An unreplicated train state at step 0 (``class_names``: see :func:`initial_variables`)."""
    return _state_of(model, initial_variables(model, config, key, class_names=class_names), tx)


def train_state_shapes(model, config, tx) -> TrainState:
    """The train state's structure, with a ``jax.ShapeDtypeStruct`` for each array: a
    template to restore a checkpoint into, built without computing or loading any weights
    (so without the ImageNet weights file a run started from)."""

    def fresh_arrays(key):
        return _state_of(model, _init_variables(model, config, key), tx).replace(
            apply_fn=None, tx=None
        )

    # Not the whole state: JAX's caches keep what a traced function's output structure holds
    # outside its arrays (the state's apply_fn and tx, static fields) for as long as the
    # process runs, so each restore kept its model and optimizer (Detector.from_workdir in a
    # loop: the model, 4 optax transformations and their closures a call, with no end).
    shapes = jax.eval_shape(fresh_arrays, jax.random.key(0))
    return shapes.replace(apply_fn=model.apply, tx=tx)


def _mean_over_devices(tree):
    """``lax.pmean`` over the devices of ``AXIS``; the identity for one device, where the
    all-reduce would still copy every gradient (455 ms of a 4-5 s step of the paper's
    Darknet on a 2-core CPU; BENCHMARKS.md, "Train step")."""
    if jax.lax.axis_size(AXIS) == 1:
        return tree
    return jax.lax.pmean(tree, AXIS)


def _counted(opt_state):
    """``opt_state`` with the learning-rate schedule's step count one on, as an update
    leaves it, and all else as it was: a skipped step is a step of the schedule, which then
    stays on ``state.step`` (the logged rate, the data order), as PyTorch's schedulers step
    past a step its gradient scaler skips while Adam's own count and moments stay."""

    def is_schedule(node) -> bool:
        return isinstance(node, optax.ScaleByScheduleState)

    def count_on(node):
        return node._replace(count=node.count + 1) if is_schedule(node) else node

    return jax.tree.map(count_on, opt_state, is_leaf=is_schedule)


def _after_every_gradient(new_params, params, grad_norm):
    """``new_params`` as they are, but selected on ``grad_norm``, so that XLA writes each
    parameter only once the whole backward pass is done.

    The update writes a donated parameter in place. When it depends on its own gradient
    only, XLA may schedule it before the backward pass's last read of the parameter (a
    BatchNorm scale is read again for its input's gradient), so it copies the parameter
    first: 146 copies in ResNet-50's CPU step (3.5-5% of its time), 476 in ResNet-152's on an
    H200 (BENCHMARKS.md, "Train step"). ``jax.lax.optimization_barrier`` does not order
    them; a data dependency does. The selection never picks the old value (a norm is never
    negative, and NaN compares false), and being a selection it leaves the update's
    arithmetic (and its rounding) as it was, and a parameter the optimizer does not change
    (a frozen backbone) unread and unwritten.
    """
    never = grad_norm < 0
    return jax.tree.map(lambda new, old: jnp.where(never, old, new), new_params, params)


def target_grids(boxes, labels, mask, config) -> jax.Array:
    """:func:`yolojax.targets.encode_batch` of ``boxes (B, M, 4)`` normalized yxyx, ``labels
    (B, M)`` and ``mask (B, M)`` on the grid of ``config.model``: ``(B, S, S, C + 5)``."""
    return targets.encode_batch(
        boxes,
        labels,
        mask,
        grid_size=config.model.grid_size,
        num_classes=config.model.num_classes,
    )


def loss_with_config(outputs, grid, config):
    """:func:`yolojax.losses.yolo_loss` of outputs ``(N, S, S, C + 5B)`` against
    :func:`target_grids` with the boxes of ``config.model`` and the weights of
    ``config.loss``: ``(loss, metrics)``, the loss a mean over the N images."""
    return losses.yolo_loss(
        outputs,
        grid,
        num_classes=config.model.num_classes,
        num_boxes=config.model.num_boxes,
        **config.loss,
    )


def train_step(state: TrainState, batch: dict, *, model, config, schedule):
    """One optimization step on one device's share of the global batch.

    Runs on every device under ``jax.shard_map`` with mesh axis ``'batch'`` (see
    :func:`make_train_step`): the loss is divided by the per-device batch size and the
    gradients are averaged over devices, so the update equals the single-device update on
    the global batch (the loss is a mean over images).

    Args:
      state: the train state (the same on every device).
      batch: this device's arrays (see the data contract): ``image (B, H, W, 3)``,
        ``boxes (B, M, 4)`` normalized yxyx, ``labels (B, M)``, ``mask (B, M)``. Under jit
        the values cannot be checked: a label outside ``[0, config.model.num_classes)``
        trains as no class at all (:func:`yolojax.targets.encode`). The trainer checks the
        dataset's classes against the config before the first step; a loop of one's own
        should too (``yolojax.config.resolve_num_classes(config, class_names)``).

    Returns:
      ``(new_state, metrics)``: the loss terms and ``iou``, averaged over devices;
      ``grad_norm``, the L2 norm of the whole (global batch) gradient before any clipping;
      ``finite`` and ``learning_rate``.
    """
    key = jax.random.fold_in(jax.random.key(config.seed), state.step)
    dropout_key = jax.random.fold_in(key, jax.lax.axis_index(AXIS))
    grid = target_grids(batch["boxes"], batch["labels"], batch["mask"], config)

    def loss_fn(params):
        outputs, updates = model.apply(
            model_variables(state.replace(params=params)),
            batch["image"],
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": dropout_key},
        )
        loss, metrics = loss_with_config(outputs, grid, config)
        return loss, (metrics, updates.get("batch_stats", {}))

    (_, (metrics, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = _mean_over_devices(grads)
    metrics = _mean_over_devices(metrics)
    # BatchNorm already normalizes with cross-device statistics (axis_name); averaging the
    # running averages keeps every replica's copy identical.
    batch_stats = _mean_over_devices(batch_stats)
    # The gradient norm is finite exactly when every gradient is (or it overflows float32,
    # an update no run survives either), and a reduction writes no mask of every gradient.
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm)

    def update():
        new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
        return new_state.replace(
            params=_after_every_gradient(new_state.params, state.params, grad_norm)
        )

    def keep():  # the previous parameters and statistics, the step advanced all the same
        return state.replace(step=state.step + 1, opt_state=_counted(state.opt_state))

    def select_by_leaf():  # both states computed, each leaf chosen on the device
        return jax.tree.map(lambda new, old: jnp.where(finite, new, old), update(), keep())

    if config.train.skip_nonfinite:
        # A non-finite step keeps the state, but the step advances so the data order stays
        # that of an uninterrupted run. On CPUs as a branch: with a jnp.where per leaf
        # XLA:CPU fused each update twice (parameter, momentum) and copied the momentum
        # and kernels first, 3.3x the paper's Darknet step (BENCHMARKS.md). Elsewhere still
        # the selection: a GPU branch waits on the host for its predicate, which would stop
        # the host from dispatching steps ahead (not measured either way).
        new_state = jax.lax.platform_dependent(
            cpu=lambda: jax.lax.cond(finite, update, keep), default=select_by_leaf
        )
    else:
        new_state = update()
    metrics["finite"] = finite.astype(jnp.float32)
    metrics["grad_norm"] = grad_norm
    metrics["learning_rate"] = schedule(state.step)
    return new_state, metrics


def sharded_train_step(model, config, schedule, mesh: Mesh):
    """:func:`train_step` over every device of ``mesh`` (``jax.shard_map``, data parallel),
    not yet compiled: the state replicated, the batch split over mesh axis ``'batch'``."""
    if model.axis_name != AXIS:  # BatchNorm would keep each device's statistics apart
        raise ValueError(
            f"The model's BatchNorm averages over axis_name={model.axis_name!r}, not the "
            f"train step's mesh axis {AXIS!r}: build it with "
            "yolojax.train_lib.build_model(config) (restore_trained_state's model is for a "
            "loop of one's own)."
        )
    step = functools.partial(train_step, model=model, config=config, schedule=schedule)
    replicated, split = PartitionSpec(), PartitionSpec(AXIS)
    # check_vma=False: on one device the step skips the (no-op) cross-device mean, so JAX
    # cannot infer that the outputs are replicated; they are on any device count.
    return jax.shard_map(
        step,
        mesh=mesh,
        in_specs=(replicated, split),
        out_specs=(replicated, replicated),
        check_vma=False,
    )


def make_train_step(model, config, schedule, mesh: Mesh):
    """:func:`train_step` compiled over every device of ``mesh`` (data parallel).

    ``jax.jit`` of :func:`sharded_train_step`: the state is replicated (no per-device axis)
    and donated, so XLA updates the parameters and optimizer state in place. (Under
    ``jax.pmap`` each leaf has a leading device axis; XLA:CPU then copies every parameter
    and optimizer buffer at each step and keeps the clipped gradient as one more buffer:
    2.3 GiB more temporaries and 1.5x the step time for the paper's Darknet. BENCHMARKS.md,
    "Train step".)

    Returns:
      ``step(state, batch) -> (state, metrics)``: ``state`` from
      :func:`yolojax.distributed.replicate`, ``batch`` from
      :func:`yolojax.distributed.shard_batch` (global ``[batch, ...]`` arrays), metrics
      replicated scalars. The batch's labels are not checked (see :func:`train_step`).
    """
    return jax.jit(sharded_train_step(model, config, schedule, mesh), donate_argnums=(0,))


def steps_for(config, num_train_examples: int) -> tuple[int, int]:
    """(steps per epoch, total steps) for the config and the train split's size."""
    batch_size = config.train.batch_size
    if num_train_examples < batch_size:
        cap = config.data.get("max_train_examples")
        raise ValueError(
            f"The train split has {num_train_examples} examples, fewer than "
            f"config.train.batch_size={batch_size}: lower the batch size to "
            f"{num_train_examples} or less"
            + (f" or raise config.data.max_train_examples={cap}." if cap else ".")
        )
    steps_per_epoch = num_train_examples // batch_size
    return steps_per_epoch, max(1, round(config.train.num_epochs * steps_per_epoch))


def initial_state(
    config,
    num_train_examples: int,
    *,
    fresh: bool = True,
    axis_name: str | None = AXIS,
    class_names: Sequence[str] | None = None,
):
    """``(model, state, schedule)`` for ``config``: the model and an unreplicated train
    state at step 0: freshly initialized (with the config's ImageNet weights, or a trained
    run's, taken for ``class_names``, the dataset's: :func:`with_run_weights`), or with
    ``fresh=False`` its :func:`train_state_shapes`, to restore into.

    ``axis_name``: the axis over which BatchNorm averages batch statistics in training, the
    train step's mesh axis by default. A training loop of one's own that does not run under
    ``shard_map`` (or ``pmap``) over that axis passes None: its ``apply(..., train=True)``
    would fail with "unbound axis name"."""
    model = build_model(config, axis_name=axis_name)
    steps_per_epoch, total_steps = steps_for(config, num_train_examples)
    tx, schedule = optim.create_optimizer(config.train, steps_per_epoch, total_steps)
    if fresh:
        state = create_train_state(
            model, config, tx, jax.random.key(config.seed), class_names=class_names
        )
    else:
        state = train_state_shapes(model, config, tx)
    return model, state, schedule


def restore_trained_state(config, workdir, which: str | int = "latest"):
    """Restores a trained state from ``workdir`` for evaluation or inference.

    Args:
      config: the config the run was trained with; its train fields may differ (another
        optimizer): only the model's arrays must fit the checkpoint.
      workdir: the run's folder.
      which: 'latest', 'best' or a step number.

    Returns:
      ``(model, state, step)`` with ``state`` unreplicated on the host. Its optimizer state is
      the checkpoint's where it fits ``config``'s optimizer, else zeros: evaluation and
      inference do not use it. The model (``state.apply_fn`` too) has no cross-device axis,
      so that it also trains in a loop of one's own (``train=True``) without ``shard_map``.
    """
    # The train split's size only sizes the optimizer's schedule, not the restored values:
    # one batch stands in for it (evaluation may run on data without a train split).
    model, template, _ = initial_state(config, config.train.batch_size, fresh=False, axis_name=None)
    manager = checkpoints.Checkpoints(workdir, checkpoints.model_signature(config), read_only=True)
    try:
        state, step = manager.restore(template, which, model_only=True)
    finally:
        manager.close()
    return model, state.replace(step=step), step
