"""Multi-host start-up through JAX's own distributed runtime (``jax.distributed``).

Flags (shared by train.py and evaluate.py): ``--coordinator_address``, ``--num_processes``,
``--process_id``. Without them, a single process runs on its local devices; on a cluster
that JAX detects (SLURM, for example) ``--distributed`` alone initializes from the
environment.
"""

import jax
from absl import flags

_FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the multi-host flags on absl's global flag registry."""
    flags.DEFINE_bool(
        "distributed", False, "Initialize jax.distributed (auto-detects SLURM and similar)."
    )
    flags.DEFINE_string(
        "coordinator_address", None, "host:port of process 0, for a manual multi-host start."
    )
    flags.DEFINE_integer("num_processes", None, "Number of processes (hosts) in the job.")
    flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).")


def initialize_from_flags() -> None:
    """Calls ``jax.distributed.initialize`` when the flags ask for a multi-process job."""
    if _FLAGS.coordinator_address is not None:
        if _FLAGS.num_processes is None or _FLAGS.process_id is None:
            raise flags.ValidationError(
                "--coordinator_address needs --num_processes and --process_id too."
            )
        jax.distributed.initialize(
            coordinator_address=_FLAGS.coordinator_address,
            num_processes=_FLAGS.num_processes,
            process_id=_FLAGS.process_id,
        )
    elif _FLAGS.distributed:
        jax.distributed.initialize()
