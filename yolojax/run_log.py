"""The files a training run writes into its workdir as it goes (process 0's): config.json
and classes.json at the start, then ``metrics.jsonl``, TensorBoard and the curves drawn
from them (``loss.png``, ``mAP.png``). Checkpoints are `yolojax.checkpoints`'.
"""

import contextlib
import shlex
from pathlib import Path

from yolojax import errors, plots
from yolojax import workdir as workdir_io
from yolojax.atomic_files import atomic_write_text, to_json
from yolojax.config import default_config
from yolojax.progress import tell


def _config_json(config) -> tuple[str, str]:
    """``config`` as ``config.json`` holds it, and the defaults' JSON, which stands in for a
    field a saved config lacks."""
    return config.to_json_best_effort(indent=2), default_config().to_json_best_effort()


def config_changes(config, workdir: Path) -> list[str]:
    """How ``config`` differs from the run's saved ``config.json``
    (:func:`yolojax.workdir.config_changes`; a field the saved one lacks counts as its
    default)."""
    return workdir_io.config_changes(workdir, *_config_json(config))


def listed_changes(changes: list[str]) -> str:
    """The first few of :func:`config_changes`, as one line."""
    return "; ".join(changes[:8]) + ("; ..." if len(changes) > 8 else "")


def prepare_workdir(
    config,
    info,
    workdir: Path,
    start_step: int,
    steps: tuple[int, int],
    *,
    verbose: bool = True,
):
    """Writes the run's config and class names into ``workdir``, drops what a crashed run
    logged after ``start_step``, and opens its TensorBoard log (process 0's part). A config
    that differs from the saved one is said (``verbose`` False: as a warning), with what
    it does to the learning-rate schedule. ``steps``: (steps per epoch, total steps)."""
    steps_per_epoch, total_steps = steps
    workdir.mkdir(parents=True, exist_ok=True)
    config_json, defaults_json = _config_json(config)
    # A finished run's config.json stays the config its checkpoint was trained with (if
    # it was lost, this config is the best there is).
    schedule_moves = []
    if start_step < total_steps or not (workdir / workdir_io.CONFIG_FILE).exists():
        changes, kept = workdir_io.save_config(workdir, config_json, start_step, defaults_json)
        outcome = f"Training goes on with the new values; the previous config is kept as {kept}"
        # A cosine schedule spans the run's steps: stretched over more, it is higher at this
        # step than it was. Piecewise drops and the warm-up are in epochs, counted in steps
        # of a batch: a new batch size moves them, and so does an epoch of another length
        # (a training set of another size: a folder that gained images, with the same config).
        changed = {change.split(":")[0] for change in changes}
        logged_epoch = _logged_steps_per_epoch(workdir, start_step)
        if logged_epoch not in (None, steps_per_epoch):
            schedule_moves.append(
                f"An epoch is now {errors.count(steps_per_epoch, 'step')}, {logged_epoch} "
                "before: epochs (the schedule's, metrics.jsonl's) count the new ones"
            )
        if (
            schedule_moves
            or "train.batch_size" in changed
            or (config.train.schedule == "cosine" and "train.num_epochs" in changed)
        ):
            schedule_moves.append(
                f"The learning-rate schedule now spans {total_steps} steps: from step "
                f"{start_step} the rate follows it, not the old one"
            )
        outcome = ". ".join([outcome, *schedule_moves, *_map_moves(workdir, changed)])
    else:
        changes = workdir_io.config_changes(workdir, config_json, defaults_json)
        outcome = (
            f"The run has already trained to step {start_step}, at or past the "
            f"{total_steps} steps this config asks for: no step is left to train with "
            "it, so config.json is left as it was"
        )
    if changes:
        tell(
            "The config differs from the one saved in this workdir: "
            + listed_changes(changes)
            + f". {outcome}.",
            printed=verbose,
        )
    elif schedule_moves:  # the same config, on a training set of another size
        tell(
            f"The training set has another size than when step {start_step} was saved. "
            + ". ".join(schedule_moves)
            + ".",
            printed=verbose,
        )
    atomic_write_text(workdir / workdir_io.CLASSES_FILE, to_json(list(info.class_names)))
    workdir_io.truncate_metrics(workdir, start_step)
    return workdir_io.TensorBoardWriter(workdir, start_step)


# Settings that change what the test mAP measures (its images, or the detections counted).
_MAP_SETTINGS = (
    "eval.score_threshold",
    "eval.iou_threshold",
    "eval.max_detections",
    "eval.pre_nms_top_k",
    "data.source",
    "data.folder",
    "data.eval_split",
    "data.max_eval_examples",
    "data.synthetic.num_test",
    "data.synthetic.seed",
    "data.synthetic.image_size",
    "data.synthetic.max_objects",
    "data.synthetic.min_object_size",
    "data.synthetic.max_object_size",
)


def _map_moves(workdir: Path, changed: set[str]) -> list[str]:
    """What a change of the settings the test mAP depends on does to best/ and mAP.png (the
    notice's sentence, or none)."""
    moved = sorted(changed & set(_MAP_SETTINGS))
    if not moved:
        return []
    return [
        f"The test mAP is measured otherwise from here on ({', '.join(moved)}): best/ and "
        "mAP.png weigh it against the mAPs before, which may be higher or lower for that "
        f"alone. To compare, evaluate best/ as it is measured now: python evaluate.py "
        f"--workdir {shlex.quote(str(workdir))} --checkpoint best"
    ]


def _logged_steps_per_epoch(workdir: Path, start_step: int) -> int | None:
    """The steps per epoch of the run that logged ``metrics.jsonl`` up to ``start_step``
    (from its last record's step and epoch), or None without such a record."""
    records = [
        record
        for record in workdir_io.read_metrics(workdir)
        if 0 < record.get("step", 0) <= start_step and record.get("epoch")
    ]
    return round(records[-1]["step"] / records[-1]["epoch"]) if records else None


@contextlib.contextmanager
def workdir_write_errors(workdir: Path, start_step: int):
    """A run's first writes into its workdir that fail (a full disk, a read-only mount) as
    one error that names the workdir and says what a rerun does."""
    try:
        yield
    except OSError as error:
        if start_step:  # another --workdir would start over: this one holds the checkpoints
            then, holding = f"Then rerun: it resumes from step {start_step}.", str(workdir)
        else:
            then, holding = "The same command then starts the run.", ""
        raise errors.machine_error(
            f"write the run's files in {workdir}", error, "--workdir", then, holding=holding
        ) from error


class RunLog:
    """What process 0 logs of the run: ``metrics.jsonl``, TensorBoard, and the curves drawn
    from them (``loss.png``, ``mAP.png``); the other processes write none of it.

    Args:
      workdir: the run's folder.
      tensorboard: the run's TensorBoard log; None in the other processes.
      steps_per_epoch: to log each record's epoch.
      eval_split: the eval split's name, for the mAP curve.
    """

    def __init__(
        self,
        workdir: Path,
        tensorboard: workdir_io.TensorBoardWriter | None,
        *,
        steps_per_epoch: int,
        eval_split: str,
    ):
        self.workdir, self.tensorboard = workdir, tensorboard
        self.steps_per_epoch, self.eval_split = steps_per_epoch, eval_split
        self.curves_drawn = True  # whether loss.png and mAP.png show every record logged so far

    def evaluated_steps(self) -> set[int]:
        """The steps whose evaluation ``metrics.jsonl`` holds (read by every process)."""
        return {r["step"] for r in workdir_io.read_metrics(self.workdir) if "test_mAP" in r}

    def record(self, step: int, scalars: dict) -> None:
        """Logs ``scalars`` of ``step`` to ``metrics.jsonl`` and TensorBoard.

        Raises:
          errors.MachineError: the workdir refused the write (a full disk).
        """
        if self.tensorboard is not None:
            try:
                workdir_io.append_metrics(
                    self.workdir, {"step": step, "epoch": step / self.steps_per_epoch, **scalars}
                )
                self.tensorboard.write(step, scalars)
            except OSError as error:
                raise errors.machine_error(
                    f"log step {step} in {self.workdir}",
                    error,
                    "--workdir",
                    "Then rerun: it resumes from the last checkpoint.",
                    holding=str(self.workdir),
                ) from error
            self.curves_drawn = False

    def draw_curves(self) -> None:
        """loss.png and mAP.png of the records so far; a failure (a full disk) only warns:
        the plots are for watching, and training (or the error on its way out) goes on."""
        if self.tensorboard is not None and not self.curves_drawn:
            try:
                plots.plot_training_curves(self.workdir, eval_split=self.eval_split)
                self.curves_drawn = True
            except OSError as error:
                errors.notice(f"Could not draw the training curves: {error}")

    def close(self) -> None:
        """Closes the TensorBoard log and draws the curves of every record (for a stopped or
        failed run too: its curves up to there)."""
        if self.tensorboard is not None:
            try:
                self.tensorboard.close()
            except OSError as error:  # a full disk: the error that stopped the run is told
                errors.notice(f"Could not close the TensorBoard log: {error}")
        self.draw_curves()
