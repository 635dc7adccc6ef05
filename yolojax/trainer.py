"""The training loop: ``train_and_evaluate(config, workdir)``, the whole job of ``train.py``.

It restores the latest checkpoint of ``workdir`` if there is one (same step, same data
order), trains with :func:`yolojax.train_lib.train_step` compiled over every device of the
job (data parallel), evaluates VOC mAP periodically (on the eval split, ``test`` or a
folder's ``validation``, and a fixed train subset to watch overfitting), keeps the last
checkpoints and the best by the eval split's mAP, and writes metrics (JSON lines +
TensorBoard) and loss/mAP plots into ``workdir``.

In a multi-process job (``yolojax.distributed``) every process runs this same loop on its
share of each global batch, and the step's collectives span every process's devices. Every
process takes part in evaluation and checkpoint saves (orbax writes from process 0); only
process 0 writes the other workdir files and prints progress. A preemption (SIGTERM) stops
every process after the same step, saved (:mod:`yolojax.preemption`).
"""

import contextlib
import copy
import dataclasses
import math
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
from tqdm import tqdm

from yolojax import (
    checkpoints,
    cpu_backend,
    distributed,
    errors,
    eval_lib,
    models,
    preemption,
    pretrained,
    run_log,
    train_lib,
)
from yolojax import workdir as workdir_io
from yolojax.config import make_paths_absolute, resolve_num_classes, validate_config
from yolojax.data import pipeline
from yolojax.progress import TrainingProgress, run_summary, tell, warnings_above_progress_bars
from yolojax.step_plan import StepPlan
from yolojax.train_lib import NonFiniteLossError


@dataclasses.dataclass(frozen=True)
class _Run:
    """What :func:`_set_up` prepared for the steps."""

    workdir: Path
    reports: bool  # process 0 of a verbose run: it prints the progress
    info: pipeline.DatasetInfo
    eval_batch: int  # the global evaluation batch
    plan: StepPlan
    ckpt: checkpoints.Checkpoints
    model: Any
    state: Any  # unreplicated, at start_step
    lr_schedule: Callable
    start_step: int  # the step restored; 0 for a run starting over
    log: run_log.RunLog
    lock: workdir_io.RunFolderLock  # held by process 0 until the run ends


def _restore_or_start_over(config, info, ckpt, workdir: Path, is_main: bool, reports: bool):
    """``(model, state, lr_schedule, start_step)``: the state of the latest checkpoint, or a
    fresh one (step 0) with what an earlier run left in ``workdir`` set aside (process 0;
    ``reports``: it says so)."""
    # As early as the step is known: a preemption notice from here on is acted on, including
    # one during the model's initialization (long for big models), restore and compile.
    # Again after a restore that fell back to an older, undamaged checkpoint.
    latest_step = ckpt.latest_step()
    preemption.report_resumed_step(latest_step or 0)
    model, state, lr_schedule = train_lib.initial_state(
        config, info.num_train_examples, fresh=latest_step is None, class_names=info.class_names
    )
    start_step = 0
    if latest_step is not None:
        try:
            state, start_step = ckpt.restore(state)
        except checkpoints.CheckpointMismatchError as error:
            # The user may have changed nothing: a config file's values change with yolojax
            # too (configs/shapes.py clips the gradient since 2026-12-06: Adam's state then
            # sits under the clip's, another layout). What changed is what to look at.
            changes = run_log.config_changes(config, workdir)
            if not changes:
                raise
            raise checkpoints.CheckpointMismatchError(
                f"{error} This config differs from the run's {workdir_io.CONFIG_FILE} in: "
                f"{run_log.listed_changes(changes)} (a config file's values can change with "
                "yolojax, as well as by your flags; the flag above gives the run's own)."
            ) from error
        state = state.replace(step=start_step)
        if start_step != latest_step:
            preemption.report_resumed_step(start_step)
        if reports:
            tqdm.write(f"Resuming from the checkpoint of step {start_step} in {workdir}.")
        _keep_the_weights_started_from(config, workdir, is_main, reports)
    else:  # starting over: what an earlier run in this workdir left is kept aside, not mixed in
        ckpt.set_aside_best()
        moved = workdir_io.set_aside_logs(workdir) if is_main else []
        if moved:  # process 0's
            tell(
                f"No checkpoint to resume from in {workdir}: training starts over. What an "
                f"earlier run logged there is kept in {moved[0].parent}: "
                + ", ".join(path.name for path in moved)
                + ".",
                printed=reports,
            )
    return model, state, lr_schedule, start_step


def _keep_the_weights_started_from(config, workdir: Path, is_main: bool, reports: bool) -> None:
    """Sets ``config.model.pretrained`` back to what the resumed run started from, as its
    config.json says (process 0 says so): the field is read when a run starts only, and
    changed on a resume, it would be saved as weights the run never had."""
    try:
        saved = workdir_io.read_saved_config(workdir)["model"]["pretrained"]
    except (KeyError, TypeError):  # none saved, or unreadable: said later
        return
    # A relative path is a run's of before 2026-12-06 (config.json's paths are absolute since):
    # relative to a folder unknown here, it is left to the config changes' report.
    relative = isinstance(saved, str) and saved and not os.path.isabs(saved)
    if isinstance(saved, str) and not relative and saved != config.model.pretrained:
        if is_main:
            tell(
                f"config.model.pretrained={config.model.pretrained!r} is left as it was, "
                f"{saved!r}: the weights a run starts from are read when it starts, and this one "
                "resumes from its checkpoint. To start from other weights, use another --workdir.",
                printed=reports,
            )
        config.model.pretrained = saved


def _set_up(config, workdir: str, verbose: bool) -> _Run:
    """Checks ``config`` and ``workdir``, reads the dataset's info, restores the latest
    checkpoint (or starts over) and writes the run's config and class names."""
    validate_config(config)
    make_paths_absolute(config)  # as config.json keeps them
    is_main = jax.process_index() == 0
    reports = is_main and verbose
    for notice in (
        cpu_backend.bfloat16_notice(config.model.dtype),
        models.coarse_map_notice(config.model, config.data.image_size),
    ):
        if notice and is_main:
            tell(notice, printed=reports)
    # Only process 0 writes: a check that failed in another process alone would leave
    # process 0 waiting at the first barrier.
    workdir_io.check_workdir(workdir, writable=is_main)
    # Before any data is prepared: a batch that does not split over the devices names the
    # numbers to change.
    distributed.check_batch_size(config.train.batch_size, "config.train.batch_size")
    # So are the weights a run starts from (ImageNet's, another run's), unless a checkpoint is
    # saved: resuming restores every value (an empty checkpoints/ is a run stopped before its
    # first save).
    if not checkpoints.has_saved_step(workdir):
        pretrained.check_start(config)
    eval_batch = eval_lib.eval_batch_size(config)
    workdir = Path(workdir)
    info = pipeline.get_dataset_info(config.data)
    resolve_num_classes(config, info.class_names)
    if config.data.source == "voc_folder":  # what the folder gave, recorded in config.json
        # Its held-out split: a resume or evaluate.py keeps evaluating on it whatever a
        # later version's default.
        if config.data.eval_split is None:
            config.data.eval_split = info.eval_split_name
        # The classes found in its .xml files, fixed for the run: the run opens the folder
        # again (its train and eval iterators, a resume), and read anew they were every .xml
        # file parsed again, and a class added or renamed mid-run renumbered the model's
        # classes.
        if config.data.class_names is None:
            config.data.class_names = tuple(info.class_names)
    # Before the checkpoint folders are made: a split smaller than a batch leaves nothing.
    steps_per_epoch, total_steps = train_lib.steps_for(config, info.num_train_examples)
    # Before the checkpoint managers, whose start clears the temporary folders of saves.
    lock = workdir_io.lock_run_folder(workdir) if is_main else workdir_io.RunFolderLock(None)
    ckpt = None
    try:
        ckpt = checkpoints.Checkpoints(
            workdir, checkpoints.model_signature(config), keep=config.train.keep_checkpoints
        )
        model, state, lr_schedule, start_step = _restore_or_start_over(
            config, info, ckpt, workdir, is_main, reports
        )
        tensorboard = None
        if is_main:
            with run_log.workdir_write_errors(workdir, start_step):
                tensorboard = run_log.prepare_workdir(
                    config,
                    info,
                    workdir,
                    start_step,
                    (steps_per_epoch, total_steps),
                    verbose=verbose,
                )
    except BaseException:  # a checkpoint of another model, an unwritable workdir: no run
        if ckpt is not None:
            ckpt.close()  # its orbax managers' threads, which train_and_evaluate would close
        lock.release()
        raise
    return _Run(
        workdir=workdir,
        reports=reports,
        info=info,
        eval_batch=eval_batch,
        plan=StepPlan(config, steps_per_epoch, total_steps),
        ckpt=ckpt,
        model=model,
        state=state,
        lr_schedule=lr_schedule,
        start_step=start_step,
        log=run_log.RunLog(
            workdir,
            tensorboard,
            steps_per_epoch=steps_per_epoch,
            eval_split=info.eval_split_name,
        ),
        lock=lock,
    )


class _EvaluationCutShort(Exception):
    """A stop signal came during an evaluation of the steps; its step is saved already."""


class _Evaluator:
    """Evaluates the model on the devices: VOC mAP on the eval split (and on a fixed train
    subset, to watch overfitting), which keeps best/ and is logged and reported.

    Args:
      config: the run's config.
      run: the run's setup (:func:`_set_up`).
      evaluate_batch: the compiled evaluation step (:func:`yolojax.eval_lib.make_eval_step`).

    Attributes:
      stop_signals: while the steps run, their :class:`yolojax.preemption.StopSignals`: a
        signal cuts an evaluation short (:class:`_EvaluationCutShort`) at its next batch.
    """

    def __init__(self, config, run: _Run, evaluate_batch):
        self.config, self.run, self.evaluate_batch = config, run, evaluate_batch
        self.stop_signals: preemption.StopSignals | None = None
        # Opened once, read at every evaluation: made anew at each, the splits and their
        # pipelines kept about 21 KiB each an evaluation with no end (pipeline.EvalBatches).
        self.eval_batches = pipeline.EvalBatches(config.data, global_batch_size=run.eval_batch)
        self.train_subset = None
        if config.eval.train_subset:
            self.train_subset = pipeline.EvalBatches(
                config.data,
                global_batch_size=run.eval_batch,
                split="train",
                max_examples=config.eval.train_subset,
            )

    def evaluate(self, step: int, on_devices, *, last: bool = False) -> dict:
        """Evaluates the saved ``step`` (the model ``on_devices``): keeps it as best/ if it is,
        logs, reports and draws the curves. Returns the results plus ``step``.

        Raises:
          _EvaluationCutShort: a stop signal came before its last batch was through, or, for
            the ``last`` step, before its results were (after them, the run has finished).
        """
        results, scalars = self._results(on_devices)
        if last and self.stop_signals is not None and self.stop_signals.run_finished():
            raise _EvaluationCutShort  # in its last batch: the signal said the rerun evaluates
        # best/ on disk before the log says the step was evaluated: a resumed run evaluates
        # again only the steps the log lacks, so a kill in between would have lost best/.
        self._save_if_best(step, on_devices, results)
        self.run.ckpt.wait()
        self.run.log.record(step, scalars)
        self._report(step, results, scalars.get("train_mAP"))
        self.run.log.draw_curves()  # the curves so far, to watch a long run by
        return {**results, "step": step}

    def evaluate_again(self, step: int, on_devices) -> dict:
        """Evaluates a finished run's final checkpoint, ``step``, once more: best/ and the
        report, not the log (its results are there already). Returns them plus ``step``."""
        if self.run.reports:
            tqdm.write(
                f"The run has already trained to step {step}; evaluating that "
                "checkpoint again (its results are logged already: these are not)."
            )
        results, scalars = self._results(on_devices)
        results["step"] = step
        self._save_if_best(step, on_devices, results)  # one a kill may have left unsaved
        self._report(step, results, scalars.get("train_mAP"))
        return results

    def _results(self, on_devices) -> tuple[dict, dict]:
        """(test set results, the scalars to log) for the model on the devices."""
        config, info, evaluate_batch = self.config, self.run.info, self.evaluate_batch
        results = eval_lib.evaluate(
            evaluate_batch,
            on_devices,
            self._until_stopped(self.eval_batches),
            config,
            info.class_names,
            progress=f"Evaluating ({info.eval_split_name})" if self.run.reports else "",
            total=info.num_eval_examples,
        )
        scalars = {"test_mAP": results["mAP"], "test_mAP_area": results["mAP_area"]}
        if eval_lib.has_ground_truth(results):  # else the loss of finding nothing, anywhere
            scalars |= {f"test_{term}": value for term, value in results["loss"].items()}
        if self.train_subset is not None:
            train_results = eval_lib.evaluate(
                evaluate_batch,
                on_devices,
                self._until_stopped(self.train_subset),
                config,
                info.class_names,
                progress="Evaluating (train subset)" if self.run.reports else "",
                total=min(config.eval.train_subset, info.num_train_examples),
            )
            scalars["train_mAP"] = train_results["mAP"]
        return results, scalars

    def _until_stopped(self, batches):
        """``batches``, until a stop signal comes: a preempted job should not spend its grace
        period evaluating. (A multi-process job's processes agree on a stop only after a step:
        theirs evaluate to the end.)"""
        for batch in batches:
            if self.stop_signals is not None and self.stop_signals.received is not None:
                raise _EvaluationCutShort
            yield batch

    def _save_if_best(self, step: int, on_devices, results: dict) -> None:
        """Saves ``step`` as best/ if its mAP is the best so far."""
        state = distributed.first_replica(on_devices)
        self.run.ckpt.save_if_best(step, state, {"mAP": results["mAP"]})

    def _report(self, step: int, results: dict, train_map: float | None) -> None:
        """Prints the evaluation's line (process 0, when verbose)."""
        if not self.run.reports:
            return
        split = self.run.info.eval_split_name
        if eval_lib.has_ground_truth(results):
            train = f"; train subset mAP {train_map:.4f}" if train_map is not None else ""
            tqdm.write(
                f"step {step}: {split} mAP {results['mAP']:.4f} "
                f"(area {results['mAP_area']:.4f}), loss {results['loss']['loss']:.3f}{train}"
                f"{eval_lib.nonfinite_warning(results)}"
            )
        else:  # "mAP nan" said nothing of why, or of what best/ then holds
            tqdm.write(
                f"step {step}: {eval_lib.no_ground_truth(split)}, and best/ "
                "keeps the first evaluated checkpoint: "
                f"{eval_lib.annotated_split_advice(self.config.data)}."
                f"{eval_lib.nonfinite_warning(results)}"
            )


def _train_steps(
    run: _Run, on_devices, batches, train_step, *, progress, evaluator, stop_signals
) -> dict:
    """Trains from ``run.start_step`` to the last step, logging, saving and evaluating after
    each step as ``run.plan`` says.

    Returns:
      The last step's evaluation (see :meth:`_Evaluator.evaluate`).

    Raises:
      yolojax.preemption.TrainingStopped: ``stop_signals`` received a signal; the step
        reached is saved, and its evaluation, if one was due or still going through its
        images, left to the rerun (one past its images finishes).
    """
    evaluator.stop_signals = stop_signals
    for step in range(run.start_step + 1, run.plan.total_steps + 1):
        on_devices, metrics = train_step(on_devices, next(batches))
        progress.add(step, metrics)
        due = run.plan.after(step, stop_requested=stop_signals.should_stop(step))
        if due.log:
            run.log.record(step, progress.flush())
        if due.epoch_line:
            progress.end_epoch(step)
        if due.save:  # before the evaluation, which may be cut short
            run.ckpt.save(step, distributed.first_replica(on_devices))
        stop = due.stop
        if due.evaluate:
            try:
                results = evaluator.evaluate(step, on_devices, last=due.last)
            except _EvaluationCutShort:
                stop = True
            else:
                # A signal once its batches were through stops at this step, evaluated; the
                # last step's evaluation has finished the run.
                stop = not due.last and stop_signals.should_stop(step)
        if stop:  # the save completes in `finally`, before this reaches the caller
            raise preemption.TrainingStopped(
                stop_signals.received,
                step,
                run.workdir / checkpoints.LATEST_FOLDER,
                last=due.last,
            )
    return results  # the last step is always evaluated


def _latest_checkpoint(run: _Run, *, wait: bool = True) -> tuple[int | None, Path]:
    """The latest saved step (None before the first), once the saves under way are written
    (unless not ``wait``: those written so far), and the folder of the latest checkpoint."""
    if wait:
        run.ckpt.wait()
    return run.ckpt.latest_step(), run.workdir / checkpoints.LATEST_FOLDER


def _interrupted(
    interrupt: KeyboardInterrupt, run: _Run, *, wait: bool = True
) -> KeyboardInterrupt:
    """What a Ctrl-C that interrupted at once raises, or a SIGTERM before the steps
    (:class:`yolojax.errors.Terminated`, of the same type): where to resume from. ``wait``:
    for the saves under way first (not for an interrupt of that wait)."""
    what = errors.STOPPED_BY[errors.stop_signal(type(interrupt))]
    last, folder = _latest_checkpoint(run, wait=wait)
    return type(interrupt)(
        f"{what}. The last checkpoint, step {last}, is in {folder}: "
        "rerun the same command to resume from it."
        if last is not None
        else f"{what} before the first checkpoint: rerunning starts over."
    )


def _wait_for_saves(run: _Run) -> None:
    """Waits for the saves under way; a second Ctrl-C meanwhile (the first's stop saving its
    step) says where the last checkpoint is, as one during the steps does."""
    try:
        run.ckpt.wait()
    except KeyboardInterrupt as interrupt:
        raise _interrupted(interrupt, run, wait=False) from interrupt


def _stopped_by_nonfinite(error: NonFiniteLossError, run: _Run) -> NonFiniteLossError:
    """What a non-finite step raises: which step, the checkpoint left, and what to change."""
    bad_step, loss = error.args
    last, folder = _latest_checkpoint(run)
    return NonFiniteLossError(
        "Training stopped: "
        + (
            f"the loss of step {bad_step} is {loss} (not finite). "
            if not math.isfinite(loss)  # else the gradients' norm overflowed
            else f"the gradients of step {bad_step} are not finite (its loss: {loss:.4g}). "
        )
        + (
            f"The last good checkpoint (step {last}) in {folder} is intact. "
            if last is not None
            else "It came before the first checkpoint: rerunning starts over. "
        )
        + "Lower config.train.learning_rate, set config.train.grad_clip_norm (e.g. 10), "
        "or set config.train.skip_nonfinite=True to skip such steps."
    )


def _steps_and_evaluations(config, run: _Run, signals_caught, closing) -> dict:
    """Compiles the steps, trains from ``run.start_step`` to the end and evaluates: the
    last evaluation's results (see :meth:`_Evaluator.evaluate`). A resumed run first
    evaluates its step if that evaluation was cut short; a finished run evaluates its last
    checkpoint again.

    Args:
      signals_caught: holds SIGTERM and Ctrl-C (:class:`yolojax.preemption.StopSignals`)
        from the first step on.
      closing: closes the progress bar on the way out.
    """
    start_step, total_steps = run.start_step, run.plan.total_steps
    mesh = distributed.mesh()
    train_step = train_lib.make_train_step(run.model, config, run.lr_schedule, mesh)
    evaluator = _Evaluator(config, run, eval_lib.make_eval_step(run.model, config, mesh))
    if run.reports:
        summary = run_summary(
            config,
            run.info,
            run.state.params,
            steps_per_epoch=run.plan.steps_per_epoch,
            total_steps=total_steps,
            eval_every=run.plan.eval_every,
        )
        tqdm.write(summary)
    on_devices = distributed.replicate(run.state, mesh)
    train_iter = pipeline.make_train_iterator(
        config.data,
        global_batch_size=config.train.batch_size,
        seed=config.seed,
        start_step=start_step,
    )
    batches = (distributed.shard_batch(batch, mesh) for batch in train_iter)
    progress = TrainingProgress(config, run.plan, start_step, shows=run.reports)
    closing.callback(progress.close)
    results = None
    if (
        start_step
        and run.plan.due_for_evaluation(start_step)
        and start_step not in run.log.evaluated_steps()
    ):
        # Saved, but its evaluation was cut short (a crash, or a stop that skipped it).
        # A signal during it stops at once: nothing is left to save.
        if run.reports:
            tqdm.write(f"Evaluating step {start_step}, which was saved but not evaluated.")
        results = evaluator.evaluate(start_step, on_devices)
    # Above the progress bar where there is one; a quiet run leaves warnings as they are.
    with warnings_above_progress_bars() if run.reports else contextlib.nullcontext():
        if start_step < total_steps:
            # From the first step until the last checkpoint is written: a signal once the
            # last step is evaluated (the final save) lets the run finish, exit status 0.
            stop_signals = signals_caught.enter_context(preemption.StopSignals())
            results = _train_steps(
                run,
                on_devices,
                batches,
                train_step,
                progress=progress,
                evaluator=evaluator,
                stop_signals=stop_signals,
            )
    if results is None:  # the run had finished: report its final checkpoint again
        results = evaluator.evaluate_again(start_step, on_devices)
    return results


def train_and_evaluate(
    config, workdir: str, *, on_finished: Callable[[], None] | None = None, verbose: bool = True
) -> dict:
    """Trains and evaluates the model described by ``config`` in ``workdir``.

    Re-running with the same ``workdir`` resumes from its latest checkpoint. SIGTERM or a
    first Ctrl-C during the steps or their evaluations, the last's included, saves the step
    reached and stops, leaving its evaluation to the rerun (:mod:`yolojax.preemption`).

    Args:
      config: the run's config (``configs/*.py``'s ``get_config()``), validated here; left
        unchanged (the run's, its fields filled in, is saved as ``workdir/config.json``).
      workdir: the run's folder: checkpoints, metrics, curves.
      on_finished: called with no arguments once the run has finished and everything is
        saved, while the trainer still holds SIGTERM and Ctrl-C; not called on a stop or an
        error. ``train.py`` passes :func:`yolojax.cli.ignore_stop_signals`, so that a
        scheduler's SIGTERM from then on, its shutdown included, cannot end the process
        with a preemption's exit status.
      verbose: print the run's summary, progress (a bar on a terminal, and a line per
        epoch), evaluations and outcome; False prints none of it (a sweep in a notebook):
        the same is in ``metrics.jsonl``. Warnings are still shown, among them what a
        user is to know either way (a changed config, an earlier run's logs set aside), and
        so is a dataset's preparation, the first time.

    Returns:
      The last evaluation's results (see :func:`yolojax.eval_lib.evaluate`), plus ``step``.

    Raises:
      yolojax.preemption.TrainingStopped: SIGTERM or Ctrl-C stopped training; its checkpoint
        is saved. A ``KeyboardInterrupt``: an ``except Exception`` lets it through.
      KeyboardInterrupt: a second Ctrl-C (or one in a multi-process job) interrupted at once;
        :class:`yolojax.errors.Terminated` (one) where ``cli.launch`` made SIGTERM one
        (``train.py``), and it came before the steps or during the save it was asking for.
      NonFiniteLossError: a step's loss or gradients were not finite (and
        ``train.skip_nonfinite`` is off).
    """
    # The run fills in and changes fields (paths made absolute, num_classes=0 resolved): the
    # caller's config stays as given, for the next run of a sweep.
    config = copy.deepcopy(config)
    run = _set_up(config, workdir, verbose)
    with contextlib.ExitStack() as signals_caught:
        # Closed on the way out, an error's or a Ctrl-C's too (the last first).
        with contextlib.ExitStack() as closing:
            closing.callback(run.lock.release)  # last: once everything is written
            closing.callback(run.log.close)
            closing.callback(run.ckpt.close)
            closing.callback(_wait_for_saves, run)  # the saves under way are written
            try:
                results = _steps_and_evaluations(config, run, signals_caught, closing)
            except preemption.TrainingStopped:  # says where its step is saved already
                raise
            except KeyboardInterrupt as interrupt:
                # The message travels with the exception (train.py prints it as its last
                # line), and the cause keeps where the interrupt came.
                raise _interrupted(interrupt, run) from interrupt
            except NonFiniteLossError as error:
                raise _stopped_by_nonfinite(error, run) from None
        if on_finished is not None:  # before StopSignals lets go: no moment without either
            on_finished()
    if run.reports:
        finished_before = run.start_step >= run.plan.total_steps
        saved = "Nothing left to train; the run is in" if finished_before else "Saved in"
        print(
            f"{saved} {run.workdir}: checkpoints/ (the last {config.train.keep_checkpoints}), "
            f"best/ (the best {run.info.eval_split_name} mAP), metrics.jsonl, loss.png, "
            f"mAP.png, tensorboard/. Evaluate with: python evaluate.py --workdir "
            f"{shlex.quote(str(run.workdir))} (the last checkpoint; --checkpoint best: best/)"
        )
    return results
