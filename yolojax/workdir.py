"""Files a run keeps in its workdir, written so a crash never leaves one half-written.

* ``config.json``: the run's config, replaced atomically (write a temp file, then rename);
  a run resumed with other settings keeps the one it replaces (:func:`save_config`).
* ``classes.json``: the dataset's class names in label order (for inference elsewhere).
* ``metrics.jsonl``: one JSON object per line, appended and flushed line by line; a reader
  drops a torn last line, and :func:`truncate_metrics` rewinds the log to a restored step
  so a resumed run does not log the same steps twice.
* ``tensorboard/``: the same scalars for TensorBoard, rewound the same way.
* ``superseded/``: what a run set aside rather than delete (a checkpoint saved anew, an
  earlier run's logs and best checkpoint when one starts over).

:func:`check_workdir` checks a ``--workdir`` before anything is read or written there, and
:func:`lock_run_folder` keeps a second training run out of it while one writes there.
"""

import contextlib
import errno
import json
import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path

from yolojax import errors
from yolojax.atomic_files import atomic_write_text, jsonable, unwritable_reason

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

CONFIG_FILE = "config.json"
CLASSES_FILE = "classes.json"
METRICS_FILE = "metrics.jsonl"
CURVE_FILES = ("loss.png", "mAP.png")  # the training curves, drawn anew from metrics.jsonl
# The folders of the latest checkpoints and of the best one (yolojax.checkpoints').
LATEST_FOLDER, BEST_FOLDER = "checkpoints", "best"
TENSORBOARD_FOLDER = "tensorboard"
EVAL_FOLDER = "eval"  # evaluate.py's results


class NotAFolderError(ValueError):
    """The workdir given is a file, or (for training) cannot be written or holds files of
    its own that a run would write over."""


# What a run sets aside: a checkpoint a resumed run saves anew (checkpoints.Checkpoints), an
# earlier run's logs when one starts over (set_aside_logs).
SUPERSEDED_FOLDER = "superseded"


def check_workdir(workdir: str | os.PathLike, *, writable: bool = False) -> Path:
    """``workdir`` as an absolute path, if it is a folder or does not exist yet.

    Args:
      workdir: the run's folder.
      writable: for training: also check that it can be written (created: its nearest
        existing parent), and that it holds none of the files a run writes over
        (``config.json``, ``classes.json``, ``loss.png``, ``mAP.png``) unless it is a
        run's folder (it has ``checkpoints/``, or its ``config.json`` is a run's).

    Raises:
      NotAFolderError: it is a file, or ``writable`` and it cannot be written
        (:func:`yolojax.atomic_files.unwritable_reason`) or holds such files of its own.
      ValueError: its path is not valid UTF-8 (:func:`yolojax.errors.check_utf8_path`).
    """
    workdir = Path(workdir).absolute()
    errors.check_utf8_path("The workdir", workdir)
    if workdir.exists() and not workdir.is_dir():
        raise NotAFolderError(
            f"The workdir {workdir} is a file, not a folder: pass a folder for the run "
            "(train.py creates it)."
        )
    if writable:
        reason = unwritable_reason(workdir)
        if reason is not None:
            raise NotAFolderError(
                f"The workdir {workdir} cannot be written: {reason}. A run saves its "
                "checkpoints there: pass another --workdir (to resume a run elsewhere, copy "
                "its folder there)."
            )
        if workdir.is_dir() and not is_run_folder(workdir):
            _refuse_files_written_over(workdir)
    return workdir


class RunInProgressError(errors.MachineError):
    """Another training run is writing the workdir: two would write over each other's
    checkpoints and logs."""


class RunFolderLock:
    """An exclusive lock on a run folder (``flock`` on the folder itself), held by the
    process that trains there. The kernel lets go of it when the process ends, however it
    ends (a killed run leaves no stale lock); :meth:`release` lets go of it before."""

    def __init__(self, descriptor: int | None):
        self._descriptor = descriptor

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None


def lock_run_folder(workdir: Path) -> RunFolderLock:
    """Creates ``workdir`` if need be and locks it for the training run of this process.

    Raises:
      RunInProgressError: another process holds the lock: a train.py on the same folder
        (still running, or a scheduler's requeued job beside the old one). Without the
        lock, the second run's start deleted the first one's save in progress, and both
        appended every step to metrics.jsonl.
    """
    if fcntl is None:  # Windows: no flock; the folder is not guarded
        return RunFolderLock(None)
    workdir.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(workdir, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise RunInProgressError(
            f"Another training run is writing {workdir}: two runs in one folder write over "
            "each other's checkpoints and logs. Let it finish, or stop it (Ctrl-C, or kill "
            "-TERM, saves the step it reached) and rerun to resume; or pass another --workdir."
        ) from None
    except OSError:  # a file system without locks (some network ones): not guarded
        os.close(descriptor)
        return RunFolderLock(None)
    return RunFolderLock(descriptor)


def is_run_folder(workdir: Path) -> bool:
    """Whether ``workdir`` has a run's checkpoints/ or config.json (a JSON object with a
    config's sections). A run's config.json edited into something else is still a run's."""
    checkpoints = workdir / LATEST_FOLDER
    # A run's holds only folders named by their step (orbax's unfinished saves: a suffix
    # after it), or nothing yet; another project's checkpoints/ holds files of its own.
    if checkpoints.is_dir() and all(
        re.match(r"\d+(\.|$)", path.name) for path in checkpoints.iterdir()
    ):
        return True
    config = read_saved_config(workdir)
    return config is not None and {"model", "data", "train"} <= config.keys()


def _refuse_files_written_over(workdir: Path) -> None:
    """Raises NotAFolderError naming the files of ``workdir`` (not a run's folder) that a
    training run would write over: they are someone else's."""
    taken = [
        name for name in (CONFIG_FILE, CLASSES_FILE, *CURVE_FILES) if (workdir / name).exists()
    ]
    if taken:
        raise NotAFolderError(
            f"The workdir {workdir} holds {', '.join(taken)}, which a training run writes "
            f"over, but it is not a yolojax run's folder (it has neither a run's "
            f"{LATEST_FOLDER}/ nor a run's {CONFIG_FILE}). "
            "Pass a new or empty folder as --workdir, or move those files elsewhere first."
        )


def _flat(tree: Mapping, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Fields that a run of an earlier yolojax saved and that are gone, with why that run's
# config.json still reads as it was meant.
_RETIRED_FIELDS = {
    # The devkit's +1 pixel (configs/voc.py set it): the pipeline's VOC boxes are continuous
    # since 2026-12-06 (data.pipeline.continuous_boxes), for which the IoU without it is the
    # devkit's. VOCEvaluator keeps plus_one, for boxes in the devkit's own convention.
    ("eval", "plus_one"),
}


def _drop_retired_fields(saved: dict) -> None:
    """Removes the fields yolojax no longer has from ``saved``, a config.json's object (a
    resumed run's config does not differ by them)."""
    for section, key in _RETIRED_FIELDS:
        if isinstance(saved.get(section), dict):
            saved[section].pop(key, None)


def parse_saved_config(workdir: str | os.PathLike) -> dict:
    """The run's ``config.json`` as a JSON object, less its retired fields.

    Raises:
      OSError: there is none, or it cannot be read.
      ValueError: it is not JSON.
      TypeError: it is not a JSON object.
    """
    saved = json.loads((Path(workdir) / CONFIG_FILE).read_text())
    if not isinstance(saved, dict):
        raise TypeError(f"the file should be a JSON object, not {saved!r}")
    _drop_retired_fields(saved)
    return saved


def read_saved_config(workdir: str | os.PathLike) -> dict | None:
    """:func:`parse_saved_config`, or None where it raises (callers that must say why use
    ``yolojax.config.load_run_config``)."""
    try:
        return parse_saved_config(workdir)
    except (OSError, ValueError, TypeError):
        return None


def config_changes(
    workdir: str | os.PathLike, config_json: str, defaults_json: str = "{}"
) -> list[str]:
    """How ``config_json`` differs from the run's saved ``config.json``, field by field:
    ``'train.batch_size: 16 -> 32'``; empty when nothing changed or none is saved (or it
    cannot be read). A field the saved config lacks (added to yolojax since) counts as
    having its value in ``defaults_json``, the value the run had in effect."""
    saved = read_saved_config(workdir)
    if saved is None:  # none yet, or unreadable: nothing to keep
        return []
    previous = _flat(json.loads(defaults_json)) | _flat(saved)
    current = _flat(json.loads(config_json))
    return [
        f"{key}: {previous.get(key, '(absent)')} -> {current.get(key, '(absent)')}"
        for key in sorted(previous.keys() | current.keys())
        if previous.get(key) != current.get(key)
    ]


def run_config_flag(workdir: str | os.PathLike) -> str:
    """``--config configs/run.py:WORKDIR``, the flag that gives a command the config the run
    in ``workdir`` saved, shell-quoted so that it pastes whatever the path holds."""
    return f"--config {shlex.quote(f'configs/run.py:{workdir}')}"


def save_config(
    workdir: str | os.PathLike, config_json: str, step: int, defaults_json: str = "{}"
) -> tuple[list[str], Path | None]:
    """Writes ``config.json``; if the previous one (the run's, from before ``step``) differs,
    keeps it as ``config.before_step_<step>.json`` first (``.1``, ... if that is taken).

    Returns:
      The differences (:func:`config_changes`, with ``defaults_json``) and where the
      previous config was kept (None if it was not).
    """
    path = Path(workdir) / CONFIG_FILE
    changes, kept = config_changes(workdir, config_json, defaults_json), None
    if changes:
        kept = free_path(path.with_name(f"config.before_step_{step}.json"))
        atomic_write_text(kept, path.read_text())
    atomic_write_text(path, config_json)
    return changes, kept


def append_metrics(workdir: str | os.PathLike, record: Mapping) -> None:
    """Appends one record (a flat mapping with a ``step``) to ``metrics.jsonl``."""
    line = json.dumps(jsonable(record), allow_nan=False)
    with open(Path(workdir) / METRICS_FILE, "a") as f:
        f.write(line + "\n")
        f.flush()


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
    """All complete records of ``metrics.jsonl`` (a torn last line is ignored)."""
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a crash mid-write
    return records


def free_path(path: Path) -> Path:
    """``path``, or ``path`` with ``.1``, ``.2``, ... appended: the first that does not exist."""
    candidate, suffix = path, 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.{suffix}")
        suffix += 1
    return candidate


def set_aside_logs(workdir: str | os.PathLike) -> list[Path]:
    """Moves what an earlier run logged in ``workdir`` (``metrics.jsonl``, ``tensorboard/``,
    ``eval/``) into ``workdir/superseded/``, for a run starting over there: TensorBoard
    would show both runs' events as one. Returns where each went."""
    moved = []
    for name in (METRICS_FILE, TENSORBOARD_FOLDER, EVAL_FOLDER):
        path = Path(workdir) / name
        if path.exists():
            target = free_path(Path(workdir) / SUPERSEDED_FOLDER / name)
            target.parent.mkdir(exist_ok=True)
            path.rename(target)
            moved.append(target)
    return moved


def truncate_metrics(workdir: str | os.PathLike, last_step: int) -> None:
    """Keeps only records with ``step <= last_step`` (and drops torn lines), atomically."""
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return
    kept = [r for r in read_metrics(workdir) if r.get("step", 0) <= last_step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def _rewind_event_file(tf, path: Path, last_step: int) -> None:
    """Rewrites the TensorBoard event file ``path`` (a TFRecord file of ``Event`` protos)
    without its events after ``last_step`` and a torn last record, atomically; a file with
    neither is left as it is."""
    kept, dropped = [], False
    try:
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            if tf.compat.v1.Event.FromString(record).step <= last_step:
                kept.append(record)
            else:
                dropped = True
    except tf.errors.DataLossError:  # a record torn by a crash mid-write
        dropped = True
    if not dropped:
        return
    temporary = path.with_name(".rewinding")  # TensorBoard reads any name with 'tfevents'
    with tf.io.TFRecordWriter(str(temporary)) as writer:
        for record in kept:
            writer.write(record)
    os.replace(temporary, path)


class TensorBoardWriter:
    """Scalars to ``workdir/tensorboard`` through ``tf.summary`` (TensorFlow is a dependency
    already, for tf.data).

    A run that starts at ``start_step`` (resumed from its checkpoint; 0 for a new run) first
    drops the events a crashed run logged after it (it trains those steps again):
    TensorBoard would draw both, a line that doubles back. As :func:`truncate_metrics` does
    for ``metrics.jsonl``.

    The event file is created at the first :meth:`write`: a run stopped before it logged
    anything leaves no folder behind, which the next start would set aside as an earlier
    run's log (:func:`set_aside_logs`).
    """

    def __init__(self, workdir: str | os.PathLike, start_step: int):
        import tensorflow as tf  # imported only where it is used

        self._tf = tf
        self._folder = Path(workdir) / TENSORBOARD_FOLDER
        for path in sorted(self._folder.glob("*tfevents*")):
            _rewind_event_file(tf, path, start_step)
        self._writer = None

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        """Logs each scalar at ``step`` (None values are left out) and flushes the file.

        Raises:
          OSError: the file system refused the write (a full disk: ENOSPC).
        """
        with self._file_errors():
            if self._writer is None:
                self._writer = self._tf.summary.create_file_writer(str(self._folder))
            with self._writer.as_default():
                for name, value in scalars.items():
                    if value is not None:
                        self._tf.summary.scalar(name, float(value), step=step)
            self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file, if any; raises OSError as :meth:`write`."""
        if self._writer is None:
            return
        with self._file_errors():
            self._writer.close()

    @contextlib.contextmanager
    def _file_errors(self):
        """TensorFlow's errors of the file system (``ResourceExhaustedError: ... No space
        left on device``, 30 lines with its traceback) as the OSError they are."""
        try:
            yield
        except self._tf.errors.OpError as error:
            full = errors.out_of_space(error)
            raise OSError(full.errno if full else errno.EIO, error.message) from error


def load_class_names(workdir) -> list[str] | None:
    """The class names the trainer saved in ``workdir/classes.json``; None if it saved none.

    Raises:
      ValueError: the file is not a list of names.
    """
    path = Path(workdir) / CLASSES_FILE
    if not path.exists():
        return None
    try:
        names = json.loads(path.read_text())
    except ValueError:
        names = None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ValueError(
            f"{path} is not a list of class names: train.py writes the run's; restore it, or "
            "delete it to name the classes class_<i>."
        )
    return names
