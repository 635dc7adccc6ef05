"""Orbax checkpoints in a workdir: the last K by step, and the best by the eval split's mAP.

Layout::

    workdir/checkpoints/<step>/{state,model}   the last ``keep`` saves
    workdir/best/<step>/{state,model}          the best save by mAP
    workdir/superseded/<kind>-<step>           a checkpoint a resumed run saved anew, or
                                               an earlier run's best when one starts over

Each checkpoint stores the train state and a small JSON ``model`` record (backbone, head,
classes, grid, boxes, image size, normalization; a checksum per array). Restoring compares
that record with the config first, so a checkpoint from another model is a clear error
rather than a shape traceback. Arrays are restored by name, so a train state whose
containers changed around the same arrays (an optax upgrade, a masked transform) still
resumes. Orbax writes each save into a temporary folder and renames it when complete, so a
crash mid-save leaves the previous checkpoints intact; a checkpoint that is damaged anyway
(truncated files, bytes changed on a bad disk, which the record's CRC-32 of every array
catches) is skipped with a warning and the next older one is used.

In a multi-process job every process calls save and restore with the same state; orbax
writes the files from process 0 and keeps the processes in step with barriers, so the
workdir has to be on a filesystem that every process sees.
"""

import contextlib
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from yolojax import errors, orbax_managers
from yolojax.checkpoint_arrays import (
    DamagedCheckpointError,
    array_checksums,
    array_shapes,
    check_checksums,
    is_model_array,
    restore_by_name,
)
from yolojax.workdir import (
    BEST_FOLDER,
    LATEST_FOLDER,
    SUPERSEDED_FOLDER,
    check_workdir,
    free_path,
    run_config_flag,
)

logger = logging.getLogger(__name__)

# Model fields that must agree between a checkpoint and the config that restores it.
MODEL_SIGNATURE_FIELDS = ("backbone", "head", "num_classes", "grid_size", "num_boxes")


class CheckpointMismatchError(ValueError):
    """The checkpoint was trained for another model than the config describes."""


# The status codes of tensorstore's write errors (a full disk: RESOURCE_EXHAUSTED).
_IO_STATUS = re.compile(
    r"(RESOURCE_EXHAUSTED|PERMISSION_DENIED|NOT_FOUND|UNAVAILABLE|DATA_LOSS|INTERNAL|UNKNOWN): "
)


# Tensorstore's read errors that name what the machine refused, not what the files hold.
_MACHINE_STATUS = re.compile(r"(RESOURCE_EXHAUSTED|PERMISSION_DENIED|UNAVAILABLE): ")


def _is_damage(error: Exception) -> bool:
    """Whether ``error`` says a checkpoint's files are damaged (cut short, missing, their
    bytes changed: an older checkpoint is restored instead), not that the machine refused to
    read them (memory, permissions: skipping a good checkpoint for an older one, which the
    resumed run then saves over, would lose its steps) or a bug. Tensorstore's errors on
    reading damaged arrays are ValueErrors (DATA_LOSS, OUT_OF_RANGE), as is a record that is
    not JSON; orbax's for a missing item is a KeyError."""
    if isinstance(error, DamagedCheckpointError | KeyError | FileNotFoundError | EOFError):
        return True
    return isinstance(error, ValueError) and not _MACHINE_STATUS.match(str(error))


class CheckpointSaveError(ValueError):
    """A checkpoint could not be written (a full disk, a folder removed or made read-only);
    the message names the last complete checkpoint, from which a rerun resumes."""


class NoCheckpointError(FileNotFoundError):
    """The workdir holds no (usable) checkpoint of the kind asked for."""


def has_saved_step(workdir: str | os.PathLike, which: str = LATEST_FOLDER) -> bool:
    """Whether ``workdir`` holds a saved latest checkpoint (``which=BEST_FOLDER``: a best
    one), looked up without opening it (or knowing the model): a folder named by its step
    (orbax's unfinished saves carry a suffix)."""
    folder = Path(workdir) / which
    return folder.is_dir() and any(path.name.isdigit() for path in folder.iterdir())


def parse_which(checkpoint: str | int) -> str | int:
    """'latest', 'best' or a step number, from a step given as an int or as its digits
    (``--checkpoint 12``).

    Raises:
      ValueError: anything else.
    """
    if isinstance(checkpoint, str) and checkpoint.isdigit():
        checkpoint = int(checkpoint)
    if checkpoint in ("latest", "best") or (
        isinstance(checkpoint, int) and not isinstance(checkpoint, bool) and checkpoint >= 0
    ):
        return checkpoint
    raise ValueError(f"checkpoint must be 'latest', 'best' or a step number; got {checkpoint!r}.")


def model_signature(config) -> dict[str, Any]:
    """The fields of ``config`` that identify the network a checkpoint belongs to, and the
    input it expects (size; normalization, with which another run's weights still load but
    see other pixel values: a wrong mAP without an error)."""
    signature = {name: config.model[name] for name in MODEL_SIGNATURE_FIELDS}
    signature["image_size"] = config.data.image_size
    signature["normalization"] = config.data.normalization
    return signature


def _best_metric(metrics: dict[str, float]) -> float:
    value = metrics.get("mAP", float("nan"))
    return -math.inf if value is None or not math.isfinite(value) else value


class Checkpoints:
    """Saves and restores train states in ``workdir``.

    Args:
      workdir: the run's folder.
      signature: :func:`model_signature` of the config in use.
      keep: how many of the latest checkpoints to keep.
      read_only: for evaluation and inference: create nothing in ``workdir``.

    Raises:
      NotAFolderError: ``workdir`` is a file.
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        signature: dict[str, Any],
        keep: int = 3,
        *,
        read_only: bool = False,
    ):
        self.workdir = check_workdir(workdir)
        self.signature = signature
        self._latest = orbax_managers.manager(
            self.workdir, LATEST_FOLDER, read_only=read_only, max_to_keep=keep
        )
        self._best = orbax_managers.manager(
            self.workdir,
            BEST_FOLDER,
            read_only=read_only,
            max_to_keep=1,
            best_fn=_best_metric,
            best_mode="max",
        )

    def _set_aside(self, manager, step: int, why: str) -> None:
        """Moves ``manager``'s checkpoint of ``step`` to ``workdir/superseded/`` (kept, not
        deleted), warning ``why``."""
        source = manager.directory / str(step)
        target = free_path(self.workdir / SUPERSEDED_FOLDER / f"{manager.directory.name}-{step}")
        if jax.process_index() == 0:  # one process moves it; every process then re-reads
            target.parent.mkdir(exist_ok=True)
            source.rename(target)
            message = f"Moved the existing checkpoint {source} to {target}: {why}"
            errors.notice(message)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"yolojax set aside {manager.directory} {step}")
        manager.reload()

    def _save(self, manager, step: int, state, metrics=None) -> None:
        # A run has a checkpoint of a step it is about to save only when it resumed from an
        # older one, the newer ones being damaged (restore skipped them); orbax refuses to
        # save over a step that exists.
        if step in manager.all_steps():
            why = f"the run resumed from an earlier step and has reached step {step} again."
            self._set_aside(manager, step, why)
        host_state = jax.device_get(state)
        # The checksums let a restore tell bytes changed on disk from the saved state.
        record = {**self.signature, "checksums": array_checksums(host_state)}
        with self._save_errors():  # also the previous save's, which orbax reports here
            manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(host_state),
                    model=ocp.args.JsonSave(record),
                ),
                metrics=metrics,
                force=True,
            )

    @contextlib.contextmanager
    def _save_errors(self):
        """Turns a save that failed writing (orbax's error, after pages of its logged
        tracebacks) into a :class:`CheckpointSaveError` that says what is safe and what to do.
        Other errors (a bug) pass as they are."""
        try:
            yield
        except (OSError, ValueError) as error:
            # Tensorstore's I/O errors reach orbax's caller as ValueErrors with a status.
            if not isinstance(error, OSError) and not _IO_STATUS.match(str(error)):
                raise
            reason = errors.first_line(error)
            latest = self._latest.latest_step()  # orbax leaves an unfinished save out
            resume = (
                f"The last complete checkpoint is step {latest}: free space (or fix the folder) "
                "and rerun the same command to resume from it."
                if latest is not None
                else "No checkpoint was completed: rerunning starts over."
            )
            raise CheckpointSaveError(
                f"Saving a checkpoint in {self.workdir} failed ({reason}). {resume}"
            ) from error

    def save(self, step: int, state) -> None:
        """Saves ``state`` (unreplicated) as the checkpoint of ``step``."""
        self._save(self._latest, step, state)

    def save_if_best(self, step: int, state, metrics: dict[str, float]) -> None:
        """Saves ``state`` under ``best/`` if its ``metrics['mAP']`` is the best so far, or
        equals it at a later step: of equal mAPs (all 0 early on) the more trained is kept.
        Without an mAP (NaN: no ground truth) the first evaluated stays."""
        best = self._best.best_step()
        if best is not None:
            value, best_value = _best_metric(metrics), _best_metric(self._best.metrics(best) or {})
            # Not the same step again (a resumed run's catch-up evaluation), nor an earlier one
            # (a resume from an older checkpoint); orbax keeps the last saved of equal ones.
            later_tie = value == best_value > -math.inf and step > best
            if not (value > best_value or later_tie):
                return
        self._save(self._best, step, state, metrics={"mAP": _best_metric(metrics)})

    def latest_step(self) -> int | None:
        """The step of the newest checkpoint in ``checkpoints/``, or None if there is none."""
        return self._latest.latest_step()

    def set_aside_best(self) -> None:
        """Moves ``best/``'s checkpoints to ``superseded/``: call it when a run starts over
        (no checkpoint to resume from). They belong to an earlier run in this workdir, and
        would stay the best one of the new run whatever it reached (or of another model)."""
        for step in self._best.all_steps():
            self._set_aside(self._best, step, "no checkpoint to resume from: training starts over.")

    def check_model(self, which: str | int = "latest") -> None:
        """Raises what :meth:`restore` would for a checkpoint of another model (by the
        signature it saved), reading no arrays: evaluation checks it before it prepares a
        dataset (minutes for VOC). A checkpoint that cannot be read is left to the restore,
        which skips it or names it.

        Raises:
          NoCheckpointError: no checkpoint of the kind asked for.
          CheckpointMismatchError: the newest one belongs to another model.
        """
        manager, steps = self._resolve(which)
        if not steps:
            return  # the restore says what to do
        try:
            record = self._read_record(manager, steps[0])
        except Exception:  # damaged: the restore skips it, with a warning
            return
        self._check_signature(manager, steps[0], record)

    def _resolve(self, which: str | int):
        """(manager, candidate steps newest first) for 'latest', 'best' or a step number."""
        if which == "best":
            return self._best, list(reversed(self._best.all_steps()))
        steps = sorted(self._latest.all_steps(), reverse=True)
        if which == "latest":
            return self._latest, steps
        step = int(which)
        if step not in steps and step in self._best.all_steps():
            return self._best, [step]  # pruned from checkpoints/, kept as the best one
        if step not in steps:
            raise NoCheckpointError(
                f"No checkpoint for step {step} in {self.workdir / LATEST_FOLDER}; "
                f"available steps: {sorted(steps)}{self._best_step_named()}."
            )
        return self._latest, [step]

    def _best_step_named(self) -> str:
        """', and step N in best/ (--checkpoint best)' where best/ holds one, else ''."""
        best = self._best.all_steps()
        return f", and step {max(best)} in {BEST_FOLDER}/ (--checkpoint best)" if best else ""

    def _read_record(self, manager, step: int) -> dict:
        """The checkpoint's JSON record: the model signature, and the arrays' checksums."""
        saved = manager.restore(step, args=ocp.args.Composite(model=ocp.args.JsonRestore()))
        return dict(saved["model"])

    def _check_signature(self, manager, step: int, saved: dict) -> None:
        differences = {
            key: (saved[key], value)
            for key, value in self.signature.items()
            if key in saved and saved[key] != value  # absent: saved before it was recorded
        }
        if differences:
            details = ", ".join(
                f"{key}: checkpoint {old!r} vs config {new!r}"
                for key, (old, new) in differences.items()
            )
            raise CheckpointMismatchError(
                f"The checkpoint {manager.directory / str(step)} belongs to another model "
                f"({details}). {self._what_to_do()}"
            )

    def _check_layout(self, manager, step: int, metadata, abstract, model_only: bool) -> None:
        """Raises CheckpointMismatchError unless the saved arrays are the template's (with
        ``model_only``, its model's), by name and shape (orbax would restore arrays of
        another shape as saved: a crash at the first step)."""
        saved = array_shapes(metadata)
        wanted = array_shapes(abstract)
        if model_only:
            saved, wanted = (
                {name: shape for name, shape in shapes.items() if is_model_array(name)}
                for shapes in (saved, wanted)
            )
        if saved == wanted:
            return
        differences = [
            f"{name}: checkpoint {saved.get(name, 'absent')} vs config {wanted.get(name, 'absent')}"
            for name in sorted(saved.keys() | wanted.keys())
            if saved.get(name) != wanted.get(name)
        ]
        suspects = "a model size" + (
            ""
            if model_only
            else ", train.optimizer, train.freeze_backbone or train.grad_clip_norm (0 or not)"
        )
        raise CheckpointMismatchError(
            f"The checkpoint {manager.directory / str(step)} holds another train state than "
            f"the config builds ({len(differences)} arrays differ: "
            f"{'; '.join(differences[:3])}). Did {suspects} change? {self._what_to_do()}"
        )

    def _what_to_do(self) -> str:
        return (
            "Use the config the run was trained with, which it saved: "
            f"{run_config_flag(self.workdir)} (evaluate.py reads it when --config is left "
            "out; in Python, yolojax.config.load_run_config(workdir), which "
            "Detector.from_workdir uses when config is left out), or another --workdir."
        )

    def restore(self, template, which: str | int = "latest", *, model_only: bool = False):
        """Restores the newest usable checkpoint of the kind asked for.

        Args:
          template: an unreplicated state with the right structure, shapes and dtypes.
          which: 'latest', 'best' or a step number.
          model_only: for evaluation and inference: only the model's arrays (params,
            batch_stats) must fit ``template``; the rest (the optimizer's state) is restored
            where it fits and zeros otherwise, so that a config with other train fields than
            the run's (another optimizer) still restores its model.

        Returns:
          ``(state, step)``.

        Raises:
          NoCheckpointError: nothing usable to restore.
          CheckpointMismatchError: the checkpoint belongs to another model, or holds a train
            state of another layout (another optimizer, other layer sizes).
          errors.MachineError: the machine refused to read a checkpoint (memory,
            permissions), which is not skipped as a damaged one is.
        """
        manager, steps = self._resolve(which)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, jax.device_get(template))
        skipped, tried = [], set()
        while (step := next((s for s in steps if s not in tried), None)) is not None:
            tried.add(step)
            try:
                record = self._read_record(manager, step)
                self._check_signature(manager, step, record)
                metadata = manager.item_metadata(step)["state"]  # read once, for both
                if metadata is None:  # orbax reads a missing state/_METADATA as no arrays
                    raise DamagedCheckpointError("its state/_METADATA file is missing")
                self._check_layout(manager, step, metadata, abstract, model_only)
                state = restore_by_name(manager, step, metadata, abstract, model_only=model_only)
                check_checksums(record.get("checksums"), state, model_only=model_only)
            except CheckpointMismatchError:
                raise
            except Exception as error:
                if not os.path.lexists(manager.directory / str(step)):
                    # The run training in this workdir removed it meanwhile (it keeps the
                    # last few, and one best): not damage. Its newer ones are read next.
                    orbax_managers.listing(manager.reload)
                    steps = self._resolve(which)[1]
                    continue
                if not _is_damage(error):
                    if not isinstance(error, OSError | MemoryError | ValueError):
                        raise  # a bug: its traceback
                    raise errors.MachineError(
                        f"Cannot read the checkpoint {manager.directory / str(step)} "
                        f"({type(error).__name__}: {errors.first_line(error, limit=160)}): the "
                        "machine refused it (memory, permissions, a network file system), "
                        "and it is left as it is: fix that and rerun."
                    ) from error
                skipped.append(step)
                errors.notice(
                    f"Skipping damaged checkpoint {manager.directory / str(step)}: "
                    f"{type(error).__name__}: {errors.first_line(error, limit=160)}",
                )
                continue
            return state, step
        where = manager.directory
        if skipped:
            other_copy = ""
            if manager is self._latest and self._best.all_steps():
                other_copy = (
                    " For evaluation or inference, the best checkpoint is another copy: "
                    "--checkpoint best (evaluate.py, predict) or checkpoint='best'."
                )
            elif manager is self._best and self._latest.all_steps():
                other_copy = (
                    " For evaluation or inference, the latest checkpoints are other copies: "
                    "--checkpoint latest (evaluate.py, predict) or checkpoint='latest'."
                )
            raise NoCheckpointError(
                f"Every checkpoint in {where} is damaged (steps {skipped}): restore them from "
                f"a backup, or move the folder aside to start over.{other_copy}"
            )
        if manager is self._best and self._latest.all_steps():
            raise NoCheckpointError(
                f"No checkpoint in {where} yet: the best checkpoint is saved at each evaluation "
                "(every config.eval.every_epochs epochs, and at the end of training). Use the "
                "latest one meanwhile (--checkpoint latest, or checkpoint='latest')."
            )
        if self._best.all_steps():  # checkpoints/ deleted, best/ kept
            raise NoCheckpointError(
                f"No checkpoint in {where}{self._best_step_named()}: evaluate or detect with "
                "that one (checkpoint='best'); to train on, restore checkpoints/ from a backup."
            )
        raise NoCheckpointError(
            f"No checkpoint in {where}: train first (python train.py ...); a run in progress "
            "saves its first one after config.train.checkpoint_every_steps steps or at its "
            "first evaluation."
        )

    def wait(self) -> None:
        """Blocks until asynchronous saves are on disk.

        Raises:
          CheckpointSaveError: a save failed.
        """
        with self._save_errors():
            self._latest.wait_until_finished()
            self._best.wait_until_finished()

    def close(self) -> None:
        """Finishes asynchronous saves and lets go of orbax's managers."""
        self._latest.close()
        self._best.close()
