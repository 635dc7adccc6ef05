"""Multi-device and multi-host start-up through JAX's own distributed runtime.

One process drives every local device; several processes (one per host, or one per GPU)
join into one job with ``jax.distributed``. The steps are compiled over a one-axis mesh of
every device of the job (:func:`mesh`): the train state is replicated on each device
(:func:`replicate`), each batch is split over them (:func:`shard_batch`), and the step's
collectives span every process. See docs/distributed.md.

Flags shared by train.py and evaluate.py:

* ``--distributed``: initialize from the cluster environment JAX detects (SLURM, Open MPI,
  Cloud TPU, ...); any of the three flags below that is given overrides what it detects.
* ``--coordinator_address host:port``, ``--num_processes N``, ``--process_id i``: a manual
  start, the same address and count on every process and a distinct ``i`` on each.
* ``--cpu_collectives``: the cross-process collectives of the CPU backend (``gloo``), used
  when a multi-process job runs on CPUs (GPUs use NCCL, TPUs their interconnect).
"""

import logging

import jax
import numpy as np
from absl import flags
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

logger = logging.getLogger(__name__)

AXIS = "batch"  # the mesh axis the batch is split over; BatchNorm averages over it too

_FLAGS = flags.FLAGS
CPU_COLLECTIVES = ("gloo", "mpi")


def define_flags() -> None:
    """Defines the multi-host flags on absl's global flag registry."""
    flags.DEFINE_bool(
        "distributed",
        False,
        "Initialize jax.distributed from the cluster environment (SLURM, Open MPI, TPU).",
    )
    flags.DEFINE_string(
        "coordinator_address", None, "host:port of process 0, for a manual multi-host start."
    )
    flags.DEFINE_integer("num_processes", None, "Number of processes in the job.")
    flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")
    flags.DEFINE_enum(
        "cpu_collectives",
        "gloo",
        CPU_COLLECTIVES,
        "Cross-process collectives of the CPU backend (multi-process jobs on CPUs).",
    )


def _check_address(address: str) -> None:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"coordinator_address must be 'host:port' (e.g. 10.0.0.1:1234), got {address!r}."
        )


def initialize(
    *,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    auto_detect: bool = False,
    cpu_collectives: str = "gloo",
) -> None:
    """Joins this process to a multi-process JAX job (``jax.distributed.initialize``).

    Call it before anything else touches JAX devices. A manual start names all three of
    ``coordinator_address``, ``num_processes`` and ``process_id``; ``auto_detect=True``
    takes whatever is not given from the cluster environment (SLURM, Open MPI, TPU).

    Args:
      coordinator_address: ``host:port`` where process 0 serves the coordination service;
        every process passes the same value.
      num_processes: the number of processes in the job.
      process_id: this process's index in ``[0, num_processes)``.
      auto_detect: fill in what is not given from the cluster environment.
      cpu_collectives: cross-process collectives of the CPU backend, one of
        :data:`CPU_COLLECTIVES`.

    Raises:
      ValueError: an incomplete or inconsistent combination, naming the flags to set.
    """
    if cpu_collectives not in CPU_COLLECTIVES:
        raise ValueError(
            f"cpu_collectives must be one of {CPU_COLLECTIVES}, got {cpu_collectives!r}."
        )
    if coordinator_address is not None:
        _check_address(coordinator_address)
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"num_processes must be >= 1, got {num_processes}.")
    if process_id is not None and num_processes is not None and not 0 <= process_id < num_processes:
        raise ValueError(
            f"process_id must be in [0, num_processes={num_processes}), got {process_id}."
        )
    manual = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    if not auto_detect and None in manual.values():
        given = ", ".join(f"--{name}" for name, value in manual.items() if value is not None)
        raise ValueError(
            "A manual multi-process start needs --coordinator_address, --num_processes and "
            f"--process_id together (given: {given or 'none'}); on a cluster that JAX "
            "detects (SLURM, Open MPI, TPU) pass --distributed instead."
        )
    # Only the CPU backend reads this; on GPU and TPU the collectives are NCCL / the ICI.
    jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
        )
    except ValueError as error:
        if not auto_detect:
            raise
        raise ValueError(
            f"--distributed could not set up the job: {error} JAX detects SLURM, Open MPI and "
            "Cloud TPU environments; elsewhere pass --coordinator_address, --num_processes "
            "and --process_id."
        ) from error
    _compile_afresh_on_cpu_from_jax_0_12_1()
    logger.info(
        "Process %d of %d: %d local devices of %d in the job.",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def _compile_afresh_on_cpu_from_jax_0_12_1() -> None:
    """Turns JAX's persistent compilation cache off in a multi-process job on CPUs with JAX
    0.12.1 and later: there a program with cross-process collectives that process 0 reads
    from the cache hangs at its first all-reduce (gloo; JAX 0.10.2 and 0.12.0.1 run it), so
    every rerun of a job, a resume included, hung at its first step. It compiles afresh."""
    # Later releases too, until one is seen to run it: the SIGTERM test of
    # tests/distributed_test.py resumes such a job with the cache of its first run.
    affected = jax.__version_info__ >= (0, 12, 1)
    if not affected or jax.process_count() < 2 or jax.default_backend() != "cpu":
        return
    if jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir:
        logger.warning(
            "JAX %s on CPU: the persistent compilation cache (%s) is not used in a "
            "multi-process job, whose programs read from it hang at their first collective.",
            jax.__version__,
            jax.config.jax_compilation_cache_dir,
        )
    jax.config.update("jax_enable_compilation_cache", False)


def initialize_from_flags() -> None:
    """Calls :func:`initialize` when the flags ask for a multi-process job; else nothing.

    Raises:
      ValueError: an incomplete or inconsistent set of flags, naming the flags to set.
    """
    manual = (_FLAGS.coordinator_address, _FLAGS.num_processes, _FLAGS.process_id)
    if not _FLAGS.distributed and manual == (None, None, None):
        return  # One process on its local devices.
    initialize(
        coordinator_address=_FLAGS.coordinator_address,
        num_processes=_FLAGS.num_processes,
        process_id=_FLAGS.process_id,
        auto_detect=_FLAGS.distributed,
        cpu_collectives=_FLAGS.cpu_collectives,
    )


def check_batch_size(batch_size: int, name: str) -> None:
    """Raises a ValueError unless ``batch_size`` splits evenly over every device of the job.

    The global batch is cut into ``process_count × local_device_count`` equal shares, one per
    device, so it has to be a multiple of the job's device count.

    Args:
      batch_size: a global batch size.
      name: the config field it comes from (``config.train.batch_size``, given as a flag in
        the error), or the argument's name.
    """
    processes, devices, local = jax.process_count(), jax.device_count(), jax.local_device_count()
    if batch_size % devices == 0:
        return
    lower = batch_size // devices * devices
    nearest = [m for m in (lower, lower + devices) if m > 0]
    per_process = batch_size // processes
    fewer = [d for d in range(1, local) if per_process % d == 0]
    or_fewer = (
        f", or run {fewer[-1]} device(s) per process (CUDA_VISIBLE_DEVICES on GPUs)"
        if fewer and batch_size % processes == 0
        else ""
    )
    setting = f"--{name}" if name.startswith("config.") else name  # a flag of train.py
    raise ValueError(
        f"{name}={batch_size} does not split over the {devices} devices of this job "
        f"({processes} process(es) x {local} local device(s)): set it to a multiple of "
        f"{devices}, e.g. {setting}={nearest[-1]} (nearest: "
        f"{' or '.join(map(str, nearest))}){or_fewer}."
    )


def mesh(devices=None) -> Mesh:
    """A one-axis mesh (axis :data:`AXIS`) over ``devices``, default every device of the job.

    Each process feeds only its own devices (:func:`shard_batch`), so the batch never
    crosses hosts; only the step's collectives (gradient and statistics means) do.
    """
    return Mesh(np.array(jax.devices() if devices is None else devices), (AXIS,))


def replicate(tree, on: Mesh):
    """Copies a host pytree (the same values on every process) onto every device of ``on``,
    as global arrays of the same shapes that the compiled steps take."""
    sharding = NamedSharding(on, PartitionSpec())
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
    )


def shard_batch(batch: dict, on: Mesh) -> dict:
    """This process's share of a global batch, from the input pipeline's NumPy arrays shaped
    ``[local_devices, per_device, ...]``, as global arrays ``[global_batch, ...]`` split over
    the devices of ``on`` (device ``d`` of this process gets row block ``d``).

    Raises:
      ValueError: an array not shaped ``[local_devices, per_device, ...]`` like the others
        (a flat ``[batch, ...]`` batch would otherwise be split along the wrong axis).
    """
    devices = len(on.local_devices)
    leading = {key: value.shape[:2] for key, value in batch.items()}
    if any(len(dims) < 2 or dims[0] != devices for dims in leading.values()) or (
        len(set(leading.values())) > 1
    ):
        shapes = ", ".join(f"{key} {value.shape}" for key, value in batch.items())
        raise ValueError(
            f"shard_batch takes arrays shaped [local_devices={devices}, per_device, ...], as "
            f"the input pipeline makes them; got {shapes}. Reshape a [batch, ...] array "
            f"with x.reshape({devices}, -1, *x.shape[1:])."
        )
    sharding = NamedSharding(on, PartitionSpec(AXIS))
    return {
        key: jax.make_array_from_process_local_data(sharding, value.reshape(-1, *value.shape[2:]))
        for key, value in batch.items()
    }


def local_rows(tree, on: Mesh):
    """The rows this process computed of global arrays split over ``on`` by the batch axis,
    as NumPy arrays ``[per_process, ...]`` (the inverse of :func:`shard_batch`, flattened)."""
    local = multihost_utils.global_array_to_host_local_array(tree, on, PartitionSpec(AXIS))
    return jax.tree.map(np.asarray, local)


def first_replica(tree):
    """One device's copy of a replicated pytree (the train state, the step's metrics), as
    host NumPy arrays of the same shapes.

    The values are copied straight from one device's buffer: indexing on device would
    dispatch a computation over every device, which in a multi-process job can block behind
    another process's collectives (a deadlock seen with orbax's save barrier on CPU).

    Args:
      tree: a pytree of replicated ``jax.Array`` (or NumPy arrays, returned as they are).

    Returns:
      The same pytree of NumPy arrays.
    """

    def one_device(x):
        return x.addressable_shards[0].data if isinstance(x, jax.Array) else x

    return jax.tree.map(np.asarray, jax.device_get(jax.tree.map(one_device, tree)))
