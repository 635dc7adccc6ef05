"""Wording shared by the library's messages, and the category of its notices."""

import errno
import os
import re
import shlex
import signal
import sys
import warnings


class Notice(UserWarning):
    """A warning that is a notice for the user (a checkpoint set aside, a damaged one skipped,
    Ctrl-C ignored by a background job), not a fault in the code: the command-line tools
    print it as ``Warning: <message>`` (`yolojax.cli`)."""


# Frames in this folder are the library's: a notice names the line that called into it.
_PACKAGE_FOLDER = os.path.dirname(os.path.abspath(__file__)) + os.sep


def notice(message: str) -> None:
    """Warns with :class:`Notice`, from the first line outside yolojax on the stack (a
    script's call of the library): Python shows that line with the message, where one of
    yolojax's own would read as a fault in it."""
    frame, stacklevel = sys._getframe(1), 2  # 2: notice's caller
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_FOLDER):
        frame, stacklevel = frame.f_back, stacklevel + 1
    warnings.warn(message, Notice, stacklevel=stacklevel)


class MachineError(OSError):
    """What the machine refused where yolojax writes (a full disk, a read-only or unusable
    folder), named with the folder and what to do: the command-line tools print it as one
    paragraph, as they print bad input. Other OSErrors keep their traceback."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's, ``kill``) during a command's work, outside the training steps
    (which save the step reached: :mod:`yolojax.preemption`). Raised where Ctrl-C raises
    ``KeyboardInterrupt``, it stops the work as Ctrl-C does, cleaning up what must be (a
    dataset's unfinished preparation, the run folder's lock), and the command exits with
    status 143, as one killed by SIGTERM."""


# What a command stopped by a signal says, by the signal (then "." or where to resume from).
STOPPED_BY = {signal.SIGINT: "Interrupted", signal.SIGTERM: "Stopped on SIGTERM"}


def stop_signal(kind: type[KeyboardInterrupt]) -> int:
    """The signal behind an interrupt of type ``kind``: SIGTERM for :class:`Terminated`,
    else SIGINT (Ctrl-C)."""
    return signal.SIGTERM if issubclass(kind, Terminated) else signal.SIGINT


# The errors of a full disk (or quota), where freeing space is the remedy.
_OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)


# The system's words for a full disk, as other libraries' errors quote them.
_OUT_OF_SPACE_WORDS = {code: os.strerror(code) for code in _OUT_OF_SPACE}


def out_of_space(error: BaseException) -> OSError | None:
    """The OSError of a full disk (ENOSPC) or quota (EDQUOT) that ``error``, another
    library's error, reports in its message ("write() failed: No space left on device", as
    ArrayRecord's writer raises it, a RuntimeError; TensorFlow's ``ResourceExhaustedError``);
    None if it reports no such thing."""
    for code, words in _OUT_OF_SPACE_WORDS.items():
        if words in str(error):
            return OSError(code, words)
    return None


def machine_error(
    action: str, error: OSError, setting: str, then: str = "", *, holding: str = ""
) -> MachineError:
    """``error`` (what the machine refused) as a `MachineError` worded "Cannot ``action``
    (its type: its reason, the file): free space, or choose another ``setting``." for a full
    disk, else "choose another ``setting``, one you can write.", followed by ``then``; for
    ``raise ... from error``.

    ``holding``: a folder of work that another ``setting`` would not have (a run's
    checkpoints): the advice is then to free space, or to make that folder writable or copy
    it to one that is, not to choose another."""
    if holding and error.errno in _OUT_OF_SPACE:
        advice = "free space."
    elif holding:
        advice = (
            f"make {holding} writable, or copy it to a folder you can write and pass that as "
            f"{setting}."
        )
    elif error.errno in _OUT_OF_SPACE:
        advice = f"free space, or choose another {setting}."
    else:
        advice = f"choose another {setting}, one you can write."
    reason = error.strerror or str(error)
    if error.strerror and error.filename:  # str(error) names it already
        reason += f": {error.filename}"
    return MachineError(
        f"Cannot {action} ({type(error).__name__}: {reason}): {advice}"
        + (f" {then}" if then else "")
    )


def check_utf8_path(setting: str, path: str | os.PathLike) -> None:
    """Raises ValueError if ``path``, ``setting``'s folder, is not valid UTF-8 (a name in
    another encoding, such as Latin-1, which Python keeps as surrogates): TensorFlow,
    orbax's tensorstore and ArrayRecord cannot open it, and failed deep in their C++
    bindings ("Unable to cast Python instance of type <class 'str'>"), after the work began."""
    try:
        os.fsdecode(path).encode()
    except UnicodeEncodeError:
        raise ValueError(
            f"{setting} {os.fsdecode(path)!a} is not valid UTF-8 (a name in another encoding, "
            "such as Latin-1), which TensorFlow and orbax cannot open: rename the folder, or "
            "pass one named in UTF-8."
        ) from None


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of ``error``'s message (its type's name if it has none), for a one-line
    report of an error from another library, whose messages can run to pages. Without
    tensorstore's annotations (its JSON spec, a thousand characters after the reason), nor
    the terminal's escape codes (torch's bold type), which a log file would show as such.
    Longer than ``limit`` characters, it keeps its end, where the system's words are ("No
    space left on device")."""
    message = _TERMINAL_CODES.sub("", str(error))
    line = (message.strip().splitlines() or [type(error).__name__])[0]
    line = _TENSORSTORE_ANNOTATIONS.split(line, maxsplit=1)[0]
    return line if len(line) <= limit else "..." + line[-limit:]


# A terminal's escape sequences (ANSI CSI: bold, colours), as in "\x1b[1mdo those steps\x1b[0m".
_TERMINAL_CODES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")

# What tensorstore appends to an error's reason: " [tensorstore_spec='{...}']",
# " [source locations='...']".
_TENSORSTORE_ANNOTATIONS = re.compile(r" \[(?:tensorstore_spec|source locations)=")


def first_few(names, shown: int = 3) -> str:
    """The first ``shown`` of ``names``, comma-separated, then ``, ...`` if there are more."""
    names = list(names)
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``1 image``, ``3 images`` (``plural``: for a noun that does not take an s)."""
    return f"{number} {noun if number == 1 else plural or noun + 's'}"


def class_names_flag(names) -> str:
    """``--config.data.class_names="('a', 'b')"`` for ``names``, to paste into a POSIX
    shell: quoted whole by shlex where a name holds a quote, ``$``, a backtick or ``\\``."""
    names = tuple(names)
    if any(char in name for name in names for char in "'\"$`\\"):
        return shlex.quote(f"--config.data.class_names={names!r}")
    return f'--config.data.class_names="{names!r}"'
