"""The JAX side of `benchmarks/train_step.py`: the config and batch a backbone is timed with,
its train step compiled as the trainer runs it (or with the state in XLA's layouts), and the
step's FLOPs from XLA's cost analysis.
"""

import functools
import re
import time

import jax
import numpy as np
from jax.experimental.layout import Format, Layout
from jax.sharding import NamedSharding, PartitionSpec
from ml_collections.config_flags import config_path

from benchmarks import common, kernel_profile
from yolojax import distributed, train_lib
from yolojax.config import validate_config


def benchmark_config(
    backbone: str, image_size: int, batch_size: int, dtype: str, conv_impl: str = "auto"
):
    """The config a user trains `backbone` with, at the benchmark's size, from scratch."""
    config = common.user_config(backbone)
    config.model.pretrained = ""
    config.model.dtype = dtype
    config.model.conv_impl = conv_impl
    config.data.image_size = image_size
    config.train.batch_size = batch_size
    return config


def random_batch(config, batch_size: int, seed: int = 0) -> dict:
    """A batch as the input pipeline yields it (one device): NHWC float32 images, 1-6 boxes
    per image padded to `max_boxes` (normalized yxyx), labels, mask."""
    rng = np.random.default_rng(seed)
    size, max_boxes = config.data.image_size, config.data.max_boxes
    centre = rng.uniform(0.1, 0.9, (batch_size, max_boxes, 2))
    extent = rng.uniform(0.05, 0.5, (batch_size, max_boxes, 2))
    boxes = np.clip(np.concatenate([centre - extent / 2, centre + extent / 2], -1), 0, 1)
    mask = np.arange(max_boxes) < rng.integers(1, 7, (batch_size, 1))
    return {
        "image": rng.standard_normal((batch_size, size, size, 3), np.float32),
        "boxes": (boxes * mask[..., None]).astype(np.float32),
        "labels": (rng.integers(0, config.model.num_classes, mask.shape) * mask).astype(np.int32),
        "mask": mask,
    }


def _train_step(config, schedule, mesh):
    return train_lib.make_train_step(train_lib.build_model(config), config, schedule, mesh)


def train_step_flops(config, schedule, state, batch, compiled, num_devices: int) -> float:
    """FLOPs of one train step on the global batch (:func:`common.model_flops`: the step
    lowered for one CPU device with XLA's own convolutions; `--conv-impl` does not change
    the count). Without a CPU backend: the cost analysis of ``compiled``, the step as each
    of its ``num_devices`` devices runs it, times their number."""

    def lower_for_cpu(cpu):
        xla_config = config.copy_and_resolve_references()
        xla_config.model.conv_impl = "xla"
        cpu_mesh = distributed.mesh([cpu])
        replicated = NamedSharding(cpu_mesh, PartitionSpec())
        split = NamedSharding(cpu_mesh, PartitionSpec(distributed.AXIS))
        return _train_step(xla_config, schedule, cpu_mesh).lower(
            common.abstract_on(state, replicated), common.abstract_on(batch, split)
        )

    def compiled_flops():
        print("No CPU backend: FLOPs from the compiled step's cost analysis.", flush=True)
        return common.xla_flops(compiled) * num_devices

    return common.model_flops(lower_for_cpu, compiled_flops)


def _compile_with_auto_layout(config, schedule, mesh, state, batch):
    """(the train step compiled with the state in the layouts XLA picks for it, `state` put
    in them, a line on which layouts those are).

    `jax.jit` with `Layout.AUTO` formats for the donated state: on a GPU XLA may then keep
    convolution kernels in cuDNN's layout between steps instead of transposing them into it
    (and their gradients out of it) at each step, as with Flax's (kh, kw, in, out) row-major
    arrays."""
    replicated = NamedSharding(mesh, PartitionSpec())
    auto = Format(Layout.AUTO, replicated)
    step = jax.jit(
        train_lib.sharded_train_step(train_lib.build_model(config), config, schedule, mesh),
        in_shardings=(auto, NamedSharding(mesh, PartitionSpec(distributed.AXIS))),
        out_shardings=(auto, replicated),
        donate_argnums=(0,),
    )
    compiled = step.lower(common.abstract_on(state, replicated), batch).compile()
    formats = compiled.input_formats[0][0]
    layouts = [f.layout.major_to_minor for f in jax.tree.leaves(formats)]
    out_layouts = [f.layout.major_to_minor for f in jax.tree.leaves(compiled.output_formats[0])]
    relaid = sum(layout != tuple(range(len(layout))) for layout in layouts)
    note = f"{relaid} of {len(layouts)} state arrays not row-major; the output state " + (
        "in the same layouts" if out_layouts == layouts else "in OTHER layouts"
    )
    return compiled, jax.device_put(state, formats), note


def build_step(config, host_batch: dict, devices: list, auto_layout: bool = False) -> dict:
    """Compiles the train step (`auto_layout`: see `_compile_with_auto_layout`); returns
    its step functions (batch already on the devices, or NumPy as the input pipeline yields
    it) and compile-time facts."""
    _, state, schedule = train_lib.initial_state(config, config.train.batch_size)
    mesh = distributed.mesh(devices)
    state = distributed.replicate(state, mesh)
    host_batch = jax.tree.map(lambda x: x.reshape(len(devices), -1, *x.shape[1:]), host_batch)
    batch = distributed.shard_batch(host_batch, mesh)
    start = time.perf_counter()
    layout_note = ""
    if auto_layout:
        compiled, state, layout_note = _compile_with_auto_layout(
            config, schedule, mesh, state, batch
        )
    else:
        compiled = _train_step(config, schedule, mesh).lower(state, batch).compile()
    compile_seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    # On one device BatchNorm's cross-device means stay in the step as all-reduces over one
    # device: free on a CPU (measured), on a GPU possibly a collective launch each.
    hlo = compiled.as_text() or ""
    all_reduces = len(re.findall(r" all-reduce(?:-start)?\(", hlo))
    holder = [state]

    def run(count: int = 1, images_on_host: bool = False) -> None:
        """`count` steps, each dispatched without waiting for the one before (as the trainer
        runs them), then one wait for the last."""
        for _ in range(count):
            step_batch = distributed.shard_batch(host_batch, mesh) if images_on_host else batch
            holder[0], metrics = compiled(holder[0], step_batch)
        jax.block_until_ready((holder[0], metrics))

    return {
        "run": run,
        "run_host_batch": functools.partial(run, images_on_host=True),
        "compile_s": compile_seconds,
        "layout_note": layout_note,
        "all_reduces": all_reduces,
        # State arrays XLA copies (straight from the argument) before overwriting them in
        # place: see yolojax.train_lib._after_every_gradient.
        "state_copies": sum(
            name.startswith("state_") for name in kernel_profile.copied_arguments(hlo)
        ),
        "hlo": hlo,
        "flops_per_step": train_step_flops(config, schedule, state, batch, compiled, len(devices)),
        "plan_bytes": memory.temp_size_in_bytes
        + memory.argument_size_in_bytes
        + memory.output_size_in_bytes
        - memory.alias_size_in_bytes,
        # The state is replicated as one global array per parameter: its size is the count.
        "num_params": sum(x.size for x in jax.tree.leaves(state.params)),
    }


def with_overrides(config, overrides: dict):
    """A copy of ``config`` with each dotted ``key`` set to its value (checked as the trainer
    checks a config: an unknown key or a value of the wrong type or range raises)."""
    config = config.copy_and_resolve_references()
    for key, value in overrides.items():  # as ml_collections sets a --config.KEY=VALUE flag
        config_path.set_value(key, config, value)
    validate_config(config)
    return config
