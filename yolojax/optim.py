"""Optimizers and learning-rate schedules from ``config.train``.

Fields read (see ``yolojax.config.default_config`` for defaults):

  optimizer          'sgd' (momentum, Nesterov off) | 'adam' | 'adamw'
  learning_rate      peak learning rate
  momentum           SGD momentum
  weight_decay       L2 weight decay of the kernels, not of biases or normalization scales and
                     offsets, as in Darknet (coupled for SGD/Adam; decoupled for AdamW)
  schedule           'piecewise' | 'cosine' | 'constant', after the warm-up
  warmup_epochs      linear warm-up from ``warmup_start_factor × learning_rate``
  warmup_start_factor
  lr_drop_epochs     piecewise: epochs at which the rate is multiplied by ...
  lr_drop_factors    ... the factor at the same position
  grad_clip_norm     clip the global gradient norm to this (0 disables)
  freeze_backbone    no updates for the backbone's parameters
"""

import jax
import optax

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("piecewise", "cosine", "constant")


def learning_rate_schedule(train_config, steps_per_epoch: int, total_steps: int):
    """An optax schedule: warm-up, then piecewise / cosine / constant, in steps."""
    peak = train_config.learning_rate
    warmup_steps = round(train_config.warmup_epochs * steps_per_epoch)
    if train_config.schedule == "piecewise":
        if len(train_config.lr_drop_epochs) != len(train_config.lr_drop_factors):
            raise ValueError(
                "config.train.lr_drop_epochs and config.train.lr_drop_factors must have the "
                f"same length; got {train_config.lr_drop_epochs} and "
                f"{train_config.lr_drop_factors}."
            )
        # Boundaries are absolute epochs (counted from the start of training, warm-up
        # included), as in the paper's recipe; the schedule after warm-up starts at
        # step `warmup_steps`, so shift them. Drops that round to one step (short epochs)
        # multiply there: as dict keys, the last alone was applied.
        boundaries = {}
        for epoch, factor in zip(
            train_config.lr_drop_epochs, train_config.lr_drop_factors, strict=True
        ):
            step = round(epoch * steps_per_epoch) - warmup_steps
            boundaries[step] = boundaries.get(step, 1.0) * factor
        main = optax.piecewise_constant_schedule(peak, boundaries)
    elif train_config.schedule == "cosine":
        main = optax.cosine_decay_schedule(peak, max(total_steps - warmup_steps, 1))
    elif train_config.schedule == "constant":
        main = optax.constant_schedule(peak)
    else:
        raise ValueError(
            f"config.train.schedule must be one of {SCHEDULES}; got {train_config.schedule!r}."
        )
    if warmup_steps == 0:
        return main
    warmup = optax.linear_schedule(peak * train_config.warmup_start_factor, peak, warmup_steps)
    return optax.join_schedules([warmup, main], [warmup_steps])


def _decay_mask(params):
    """The weight-decay mask: True for kernels (conv and dense, ≥ 2 dimensions).

    Darknet decays convolutional and connected weights only; decaying a bias or a
    normalization scale or offset shifts activations rather than regularizing a mapping.
    """
    return jax.tree.map(lambda param: param.ndim >= 2, params)


def _base_optimizer(train_config, schedule):
    name = train_config.optimizer
    decay = train_config.weight_decay
    if name == "sgd":
        return optax.chain(
            optax.add_decayed_weights(decay, mask=_decay_mask),
            optax.sgd(schedule, momentum=train_config.momentum),
        )
    if name == "adam":
        return optax.chain(optax.add_decayed_weights(decay, mask=_decay_mask), optax.adam(schedule))
    if name == "adamw":
        return optax.adamw(schedule, weight_decay=decay, mask=_decay_mask)
    raise ValueError(f"config.train.optimizer must be one of {OPTIMIZERS}; got {name!r}.")


def create_optimizer(train_config, steps_per_epoch: int, total_steps: int):
    """Returns ``(tx, schedule)`` for the config.

    With ``freeze_backbone`` the parameters under the top-level ``backbone`` module get no
    update (not even weight decay).
    """
    schedule = learning_rate_schedule(train_config, steps_per_epoch, total_steps)
    tx = _base_optimizer(train_config, schedule)
    if train_config.grad_clip_norm:
        tx = optax.chain(optax.clip_by_global_norm(train_config.grad_clip_norm), tx)
    if train_config.freeze_backbone:
        tx = optax.multi_transform(
            {"train": tx, "frozen": optax.set_to_zero()},
            lambda params: {name: "frozen" if name == "backbone" else "train" for name in params},
        )
    return tx, schedule
