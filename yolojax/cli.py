"""How the command-line tools report errors: the user's to fix as one paragraph, exit status 1.

The library raises documented errors whose messages say what is wrong and what to do
(``ValueError`` subclasses for bad configs, data, arguments and checkpoints of another model;
``FileNotFoundError`` subclasses for missing datasets, weights and checkpoints;
``FloatingPointError`` for a non-finite loss). A traceback of those adds nothing but buries
the message, so ``train.py``, ``evaluate.py`` and ``python -m yolojax.predict`` print the
message alone. Set ``YOLOJAX_TRACEBACK=1`` (or pass ``--verbosity=1`` to train.py or
evaluate.py) to get the traceback as well. docs/troubleshooting.md lists the common ones.

A mistyped config field (``--config.train.bach_size=8``) is reported like any other bad flag
by :func:`yolojax.command_flags.parse_flags`, with ml_collections' suggestion of the field
meant.
"""

import _thread
import contextlib
import gc
import logging
import os
import select
import signal
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import yaml
from absl import app, flags
from absl import logging as absl_logging

from yolojax import command_flags, errors, huge_pages

# TensorFlow (tf.data only) logs at INFO level when it is imported; that is noise in a
# command's progress output. Warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
# What `import tensorflow` (2.21) prints on stderr whatever that level: absl's logging,
# which nothing has set up while TensorFlow's native libraries load, writes their INFO lines
# there, and two libraries say each line once: four lines before every command's first word
# of output (import_tensorflow drops them). TF_ENABLE_ONEDNN_OPTS=0 would hide the oneDNN
# one but halves the input pipeline's images/s here (its image ops use oneDNN).
_TENSORFLOW_IMPORT_NOTICES = (
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"] oneDNN custom operations are on.",
)
# Where the stop handler writes (see _stop): the real stderr while fd 2 is captured.
_stderr_fd = 2

# The base classes of every error the library documents as the user's to fix.
# What a command reports as one paragraph: bad input, a missing file, and what the machine
# refused where yolojax writes (errors.MachineError), not a bug's traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError, errors.MachineError)
TRACEBACK_ENV = "YOLOJAX_TRACEBACK"
# Where error messages send the user: the checkout's page by its path, which holds from any
# working folder (docs/ too is not installed with the package).
TROUBLESHOOTING_PAGE = Path(__file__).resolve().parents[1] / "docs" / "troubleshooting.md"


class _FailedRestoreNoise(logging.Filter):
    """Drops what the in-flight reads of a failed checkpoint restore print afterwards.

    When orbax fails to restore a damaged checkpoint it closes its event loop while
    tensorstore reads of the other arrays are still in flight. Each read then fails to
    report back: Python prints an "Event loop is closed" traceback per array (about a
    hundred for a small model), and asyncio logs "Task exception was never retrieved" with
    the read's error. The restore's own warning already names the damaged checkpoint.
    """

    def filter(self, record: logging.LogRecord) -> bool:  # for the 'asyncio' logger
        return not str(record.msg).startswith("Task exception was never retrieved")

    @staticmethod
    def is_noise(unraisable) -> bool:  # for sys.unraisablehook
        error = unraisable.exc_value
        return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


class _OrbaxTracebacks(logging.Filter):
    """Keeps orbax's error lines but not their tracebacks (for the 'absl' logger).

    A failed save (a full disk) logs the same error with a traceback from each of orbax's
    threads, about 300 lines for one save, before the save's error reaches the command,
    which reports it as one paragraph (:class:`yolojax.checkpoints.CheckpointSaveError`).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if f"{os.sep}orbax{os.sep}" in record.pathname:
            record.exc_info = record.exc_text = None
        return True


_ORBAX_TRACEBACKS = _OrbaxTracebacks()  # one instance: adding it again changes nothing


@contextlib.contextmanager
def _quiet_failed_restores():
    noise, previous_hook = _FailedRestoreNoise(), sys.unraisablehook
    logging.getLogger("absl").addFilter(_ORBAX_TRACEBACKS)

    def unraisable_hook(unraisable):
        if not noise.is_noise(unraisable):
            previous_hook(unraisable)

    sys.unraisablehook = unraisable_hook
    logging.getLogger("asyncio").addFilter(noise)
    # An error propagates from the yield and leaves the filters in place: the command is
    # about to exit, and the reads may still report while it prints the error and exits.
    yield
    logging.getLogger("asyncio").removeFilter(noise)
    logging.getLogger("absl").removeFilter(_ORBAX_TRACEBACKS)
    sys.unraisablehook = previous_hook


def usage_error(message: str) -> None:
    """Ends a command whose flags are wrong as absl ends it for a bad flag: the message and
    where the help is, not the 30 lines of help that ``app.UsageError`` prints first."""
    command_flags.flags_error(f"{message}\nPass --help to see the flags.")


def config_text(config) -> str:
    """``config`` as YAML, every section and field in order (``--print_config``), tuples as
    plain lists: ml_collections' own text tags them ``!!python/tuple``."""

    def plain(value):
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [plain(item) for item in value]
        return value

    return yaml.safe_dump(plain(config.to_dict()), sort_keys=False, allow_unicode=True)


@contextlib.contextmanager
def _plain_library_warnings():
    """Prints yolojax's own warnings as ``Warning: <message>``.

    They are notices for the user (`yolojax.errors.Notice`: a checkpoint set aside, Ctrl-C
    ignored by a background job); the file, line number and source line that Python adds
    would read as a fault in the code. Other warnings (other packages', and NumPy's or
    JAX's raised in yolojax's code) keep Python's format. So do the warnings yolojax's
    modules log (a VOC folder's skipped images, a likely misspelt class), which absl's
    handler would print as ``W1205 18:22:00.054 140231961832320 voc_folder.py:334] ...``.
    """
    default = warnings.formatwarning

    def formatwarning(message, category, filename, lineno, line=None):
        if issubclass(category, errors.Notice):
            return f"Warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = formatwarning
    plain_logs = _PlainLoggedWarnings()
    absl_logging.get_absl_handler().addFilter(plain_logs)
    try:
        yield
    finally:
        warnings.formatwarning = default
        absl_logging.get_absl_handler().removeFilter(plain_logs)


class _PlainLoggedWarnings(logging.Filter):
    """On absl's log handler: prints the warnings that yolojax's own loggers log as
    ``Warning: <message>`` in place of absl's line; all else passes as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith("yolojax"):
            return True
        print(f"Warning: {record.getMessage()}", file=sys.stderr)
        return False


def _troubleshooting() -> str:
    """The troubleshooting page, by a path that holds from any working folder."""
    if TROUBLESHOOTING_PAGE.is_file():
        return str(TROUBLESHOOTING_PAGE)
    return "docs/troubleshooting.md of yolojax"


@contextlib.contextmanager
def command_errors(*, traceback: bool = False):
    """Runs a command's body, reporting errors as a command-line tool should.

    A :data:`USER_ERRORS` exception becomes its message on stderr and exit status 1, Ctrl-C
    exit status 130 without a traceback (SIGTERM, :class:`yolojax.errors.Terminated`: 143),
    training stopped by a signal (:class:`yolojax.preemption.TrainingStopped`) its message
    and 128 + the signal's number, and the tracebacks that a failed checkpoint restore
    leaves behind are not printed.

    Args:
      traceback: re-raise user errors instead (as does a ``$YOLOJAX_TRACEBACK`` other than
        '' or '0').
    """
    # Imported here: it loads JAX, which a command imports only after launch().
    from yolojax.preemption import TrainingStopped

    with _interrupts_exit_with_their_status():
        try:
            with _quiet_failed_restores(), _plain_library_warnings():
                yield
        except TrainingStopped as stop:  # a KeyboardInterrupt, with its own status
            print(stop, file=sys.stderr)
            raise SystemExit(stop.exit_status) from None
        except USER_ERRORS as error:
            if traceback or os.environ.get(TRACEBACK_ENV, "0") not in ("", "0"):
                raise
            print(
                f"Error: {type(error).__name__}: {error}\n(What to do about each error: "
                f"{_troubleshooting()}. For the traceback, set {TRACEBACK_ENV}=1.)",
                file=sys.stderr,
            )
            raise SystemExit(1) from None


@contextlib.contextmanager
def _interrupts_exit_with_their_status():
    """Ctrl-C (or SIGTERM, :class:`yolojax.errors.Terminated`) is the user's or the
    scheduler's doing: no traceback, but what was said of it (where the last checkpoint is)
    or "Interrupted.", and exit status 128 + the signal's number."""
    try:
        yield
    except KeyboardInterrupt as interrupt:
        by = errors.stop_signal(type(interrupt))
        print(interrupt.args[0] if interrupt.args else f"{errors.STOPPED_BY[by]}.", file=sys.stderr)
        raise SystemExit(128 + by) from None


def import_tensorflow() -> None:
    """Imports TensorFlow without the notices its native libraries print on stderr as they
    load: the "oneDNN custom operations are on" line and absl's warning before it, each
    twice. The rest of what the import prints there is printed once it is done, in its
    order, and a Ctrl-C or SIGTERM meanwhile still says so (:func:`launch`). Where
    ``TF_CPP_MIN_LOG_LEVEL=0`` asks for TensorFlow's INFO lines nothing is held: set it to
    see what a process that dies inside the import (a crash in native code) printed there.
    """
    hold = "tensorflow" not in sys.modules and os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "0"
    with _stderr_held(dropping=_TENSORFLOW_IMPORT_NOTICES) if hold else contextlib.nullcontext():
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def _stderr_held(dropping: tuple[bytes, ...]):
    """Holds what is written to file descriptor 2 in a temporary file, and writes it there
    when the block ends, less the lines that hold one of ``dropping``."""
    global _stderr_fd
    sys.stderr.flush()
    try:
        real_stderr = os.dup(2)
    except OSError:  # no stderr (a daemon's closed): nothing to hold, nothing shown
        yield
        return
    try:
        with tempfile.TemporaryFile() as held:
            _stderr_fd = real_stderr  # first: a signal may come between these lines
            os.dup2(held.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(real_stderr, 2)
                _stderr_fd = 2
                held.seek(0)
                kept = b"".join(line for line in held if not any(text in line for text in dropping))
                while kept:
                    kept = kept[os.write(2, kept) :]
    finally:
        os.close(real_stderr)


def start(argv: list[str]) -> None:
    """The first line of an absl command's ``main``: refuses stray positional arguments,
    and lowers the log level to WARNING unless ``--verbosity`` was given (orbax logs every
    checkpoint save at INFO; ``--verbosity=0`` shows them)."""
    if len(argv) > 1:
        usage_error(f"unexpected arguments {argv[1:]}: every setting is a --flag.")
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)


def ignore_stop_signals() -> None:
    """From here on the process ignores SIGTERM and Ctrl-C, until it exits.

    For a command whose work is done and saved (``train.py`` passes it to the trainer as
    ``on_finished``, which calls it before letting go of the signals): the interpreter's
    shutdown with JAX and TensorFlow loaded takes a second or more, and a scheduler's
    SIGTERM then would end it with status 143, which reads as a preempted job. A Python
    handler would not do: Python puts back the default action of each signal it handled
    early in its shutdown, while an ignored signal stays ignored. (A shutdown that hangs
    still ends on SIGKILL.)
    """
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, signal.SIG_IGN)


# Whether the command has begun its work (:func:`work_starts`); until then a stop signal exits.
_working = False
# During the work: the stop signal to send again, if any (see _sending_again).
_send_again: int | None = None


def launch() -> None:
    """The first thing a command does, before it imports JAX (``import yolojax`` does not).

    It restarts the command with huge pages for malloc where that makes XLA:CPU faster
    (:func:`yolojax.huge_pages.restart_with_huge_pages`), before loading JAX twice would
    cost a second, and until :func:`work_starts` a Ctrl-C or SIGTERM ends it at once, with
    status 130 or 143 and a line saying so: while a command starts (imports, flags,
    restoring a checkpoint to read) it has nothing to save or clean up, and the
    KeyboardInterrupt Python would raise is easily lost there. JAX runs a garbage-collection
    callback of its own; an exception raised inside one is only printed ("Exception ignored
    in: <function _xla_gc_callback ...>"), and the command went on, as if Ctrl-C had not
    been pressed: imports run it often. (During the work, where one lands there far more
    rarely, :func:`work_starts` delivers it again.) A command that started with either
    signal ignored (Ctrl-C, in a background job) keeps ignoring it, and a handler of
    another's is kept. In a multi-process job JAX's preemption service takes SIGTERM over
    (``jax.distributed.initialize``), as training needs (:mod:`yolojax.preemption`).
    """
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _stop)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _stop)
    huge_pages.restart_with_huge_pages()


def _stop(signal_number, frame) -> None:
    global _send_again
    if _working:
        if _dropped_there(frame):
            _sending_again(signal_number)
            return
        _send_again = None
        # As Python's own handler raises for Ctrl-C: the command reports it.
        raise KeyboardInterrupt if signal_number == signal.SIGINT else errors.Terminated
    # os.write: the handler may run while the main thread is inside a write to sys.stderr,
    # where another would raise "reentrant call".
    os.write(_stderr_fd, f"{errors.STOPPED_BY[signal_number]}.\n".encode())
    os._exit(128 + signal_number)  # no exception that a callback could swallow


def work_starts() -> None:
    """From here on a Ctrl-C is a KeyboardInterrupt, and SIGTERM an
    :class:`yolojax.errors.Terminated` (one), see :func:`launch`: the command's work
    (training, evaluating, writing drawings) stops as it has to, saving or cleaning up what
    it must, and :func:`command_errors` reports it. (During the training steps the trainer
    takes both signals over, to save the step reached first.) One raised where Python drops
    it, in a garbage-collection callback (JAX runs one), is sent again, to land in the work.
    """
    global _working
    if _working:
        return
    _working = True
    previous_hook = sys.unraisablehook

    def unraisable_hook(unraisable):
        # Where _dropped_there cannot tell (a __del__, a weakref's callback), Python hands
        # the dropped KeyboardInterrupt here: the signal is sent again.
        if issubclass(unraisable.exc_type, KeyboardInterrupt):
            _sending_again(errors.stop_signal(unraisable.exc_type))
        else:
            previous_hook(unraisable)

    sys.unraisablehook = unraisable_hook


def _dropped_there(frame) -> bool:
    """Whether ``frame`` (where a signal interrupted the main thread) runs inside a
    garbage-collection callback (JAX runs one) or an unraisable hook: Python only prints
    an exception raised there, and the work would go on as if Ctrl-C had not been pressed."""

    def code(function):
        return getattr(getattr(function, "__func__", function), "__code__", None)

    dropping = {code(callback) for callback in gc.callbacks} | {code(sys.unraisablehook)}
    while frame is not None:
        if frame.f_code in dropping:
            return True
        frame = frame.f_back
    return False


def _sending_again(signal_number: int) -> None:
    """Sends the main thread ``signal_number`` every 10 ms, from another thread, until its
    handler has raised where the exception is not dropped (which clears ``_send_again``).
    From the main thread the handler would run at once, where it would be dropped again."""
    global _send_again
    if _send_again is not None:
        return  # a sender runs already
    _send_again = signal_number
    main_thread = threading.main_thread().ident

    def send() -> None:
        global _send_again
        while _send_again is not None:
            time.sleep(0.01)
            if _send_again is not None:
                signal.pthread_kill(main_thread, signal_number)
            if signal.getsignal(signal_number) is not _stop:
                break  # another handler (no launch()) would not say it raised: once only
        _send_again = None

    _thread.start_new_thread(send, ())  # (threading's start() would wait for the thread)


# The status of a command whose output's reader went away: a shell's tools end so, killed by
# SIGPIPE (Python ignores the signal, and raises BrokenPipeError instead).
CLOSED_STDOUT_STATUS = 128 + signal.SIGPIPE


def _drop_stdout() -> None:
    """Points stdout at /dev/null: what Python still holds of it would raise BrokenPipeError
    again when the interpreter flushes it at exit ("Exception ignored ...")."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)  # stdout's descriptor holds /dev/null now


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reader has closed it (``poll`` reports an error on the
    writing end; a failed write may have left nothing in the buffer to fail again)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), stdout no file
        return False


def _stdout_flushed() -> bool:
    """Flushes stdout; False (and it is dropped) where its reader has gone away."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()
        return False
    return True


@contextlib.contextmanager
def closed_stdout_ends_quietly():
    """A command whose output's reader stops reading (``... | head -3``) ends as the
    shell's own tools do then: at once, without a word, status 141 (128 + SIGPIPE), not
    with a BrokenPipeError traceback. A command that failed keeps its own status."""
    try:
        yield
    except BrokenPipeError:
        if _stdout_flushed():  # (a failed flush has dropped stdout)
            if not _stdout_reader_gone():
                raise  # another pipe's (a child process's, a socket's): an error of its own
            _drop_stdout()
        raise SystemExit(CLOSED_STDOUT_STATUS) from None
    except SystemExit as exit_request:
        if not _stdout_flushed() and exit_request.code in (0, None):
            raise SystemExit(CLOSED_STDOUT_STATUS) from None
        raise
    if not _stdout_flushed():
        raise SystemExit(CLOSED_STDOUT_STATUS)


def run(main) -> None:
    """``absl.app.run(main)`` with :func:`command_flags.parse_flags`, for the command-line
    tools (which call :func:`launch` first).

    A command that fails exits at once with its status: the reader threads of a failed
    checkpoint restore may still be running, and would otherwise print their closed-event-
    loop tracebacks while the interpreter shuts down, after the error message. One whose
    output's reader went away (``| head``) ends quietly (:func:`closed_stdout_ends_quietly`).
    """
    with closed_stdout_ends_quietly(), failures_exit_at_once():
        app.run(main, flags_parser=command_flags.parse_flags)


@contextlib.contextmanager
def ends_at_once_when_it_fails():
    """For an argparse command run without :func:`launch` and :func:`command_errors` (the
    benchmarks): ``| head`` ends quietly (:func:`closed_stdout_ends_quietly`), and a Ctrl-C
    says "Interrupted." and exits with status 130 at once, as a failure does
    (:func:`failures_exit_at_once`). Before, a Ctrl-C while a benchmark compiled printed its
    traceback and the interpreter's shutdown took 2.5-4.8 s, once of 3 ending in a
    segmentation fault (``python -m benchmarks.train_step``)."""
    with (
        closed_stdout_ends_quietly(),
        failures_exit_at_once(),
        _interrupts_exit_with_their_status(),
    ):
        yield


@contextlib.contextmanager
def failures_exit_at_once():
    """A command that ends with a failure status (an error, a Ctrl-C: 130, a SIGTERM: 143)
    exits at once, its output flushed, without the interpreter's shutdown: an XLA compile
    that a signal interrupted the wait for runs on in JAX's threads, and the shutdown freed
    the devices under it (predict, SIGTERM while its model compiled: a segmentation fault 4
    times in 6, after 1-2.6 s). One that succeeds no longer stops on a signal."""
    try:
        yield
    except SystemExit as exit_request:
        if exit_request.code in (0, None):
            ignore_stop_signals()
            raise
        _stdout_flushed()
        sys.stderr.flush()
        os._exit(exit_request.code if isinstance(exit_request.code, int) else 1)
