"""Orbax's CheckpointManager as yolojax's checkpoints use it (`yolojax.checkpoints`): beside
the run's other manager (its own barriers), leaving preemption to the training loop, and
listing its step folders beside a run that removes old ones while another process reads.
"""

from pathlib import Path

import orbax.checkpoint as ocp


class Manager(ocp.CheckpointManager):
    """An orbax manager that leaves JAX's preemption service to the training loop.

    Orbax asks the service whether a step reached the preemption sync point when a save
    starts and again when an asynchronous save finishes, from its own thread. The service
    keeps each process's last reported step: reported there after training moved on, an
    earlier step would become the one the processes agree to stop after, and the loop, past
    it, would never stop (:mod:`yolojax.preemption`). The trainer saves with ``force`` and
    decides on preemption itself.
    """

    def reached_preemption(self, step: int) -> bool:
        del step
        return False


def manager(workdir: Path, name: str, *, read_only: bool, **options) -> ocp.CheckpointManager:
    """An orbax manager of ``workdir/name``, safe to use next to the run's other manager.

    A read-only manager creates no folder and leaves the temporary folders of saves in
    progress alone (a training run may be writing while another process evaluates).

    In a multi-process job every process calls save and restore; orbax writes from process 0
    only and synchronizes the processes with barriers named after the checkpoint folder,
    which is the step for both managers. At an evaluation both managers save the same step,
    so each needs its own barrier prefix, or the two saves wait on each other's barriers.
    """
    return listing(
        lambda: Manager(
            workdir / name,
            # Registered up front so that a checkpoint's metadata can be read before its arrays.
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "model": ocp.JsonCheckpointHandler(),
            },
            options=ocp.CheckpointManagerOptions(
                create=not read_only,
                cleanup_tmp_directories=not read_only,
                multiprocessing_options=ocp.options.MultiprocessingOptions(
                    barrier_sync_key_prefix=name
                ),
                **options,
            ),
        )
    )


def listing(read):
    """``read()``: a manager's start or reload, which lists its step folders and reads each
    one's details, once more if a folder vanished in between (the run training in the
    workdir removes its older checkpoints as it saves new ones)."""
    for attempt in range(3):
        try:
            return read()
        except FileNotFoundError:
            if attempt == 2:
                raise
