"""absl's flag parsing for the command-line tools: the ``--config`` file loaded while the flags
are parsed, and every bad flag (a mistyped config field, a missing or broken config file, a
required flag left out) reported as one message, as absl reports a bad flag, with what to do.
"""

import argparse
import os
import re
import sys
import textwrap
import traceback as traceback_lib
from collections.abc import Callable
from pathlib import Path

import ml_collections
from absl import flags

# The repository's configs/ (not installed with the package: absent from a wheel install).
BUNDLED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


# The flags that name files or folders: given as --workdir=~/runs/a, the shell leaves the ~
# as it is (it expands a word's leading ~ only), and the run went into a folder named '~'
# beside the current one while its messages pointed to the home folder.
PATH_FLAGS = ("workdir", "voc_results")


def expand_path(text: str, name: str) -> str:
    """``text``, a path given on the command line as ``name``, with a leading ``~`` expanded.

    Raises:
      ValueError: it is empty (``--workdir="$RUN"`` with RUN unset), which would be the
        current folder.
    """
    if not text.strip():
        raise ValueError(f"{name} is empty: give a path (an empty one is the current folder)")
    return os.path.expanduser(text)


def path_argument(flag: str) -> Callable[[str], str]:
    """An argparse ``type`` for the path flag ``flag``: :func:`expand_path` of its value."""

    def path(text: str) -> str:
        try:
            return expand_path(text, flag)
        except ValueError as error:  # argparse names the flag first
            raise argparse.ArgumentTypeError(str(error).removeprefix(f"{flag} ")) from None

    return path


def _expand_paths() -> None:
    """:func:`expand_path` of every :data:`PATH_FLAGS` given, and the config's paths made
    absolute as a run saves them (``yolojax.config.make_paths_absolute``)."""
    for name in PATH_FLAGS:
        if name in flags.FLAGS and flags.FLAGS[name].value is not None:
            flags.FLAGS[name].value = expand_path(flags.FLAGS[name].value, f"--{name}")
    if "config" in flags.FLAGS and flags.FLAGS["config"].present:
        from yolojax.config import make_paths_absolute  # loaded with the config file already

        make_paths_absolute(flags.FLAGS.config)


def _without_none_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """``argv`` without its ``--config.<field>=None`` overrides (also ``none``, ``null``, and
    ``--config.<field> None``), and those fields. ml_collections parses the word as a value
    of the field's type: an int field failed ("invalid literal for int()": a data cap could
    not be lifted), a text field became the text 'None' (a folder of that name)."""
    kept, unset = [], []
    index = 0
    while index < len(argv):
        word = argv[index]
        index += 1
        match = re.fullmatch(r"--config\.([\w.]+)(=.*)?", word)
        if not match:
            kept.append(word)
            continue
        if match[2] is not None:
            value = match[2][1:]
        elif index < len(argv) and not argv[index].startswith("-"):
            value = argv[index]  # the value is the next word (a bool field's flag takes none)
        else:
            value = None
        if value is not None and value.lower() in ("none", "null"):
            unset.append(match[1])
            index += match[2] is None  # the next word, its value, is read too
        else:
            unset = [field for field in unset if field != match[1]]  # the last one given wins
            kept.append(word)  # its value, if the next word, is kept on the next turn
    return kept, unset


def _set_none(fields: list[str]) -> None:
    """Sets each of ``fields`` (dotted, in ``--config``) to None; an unknown one raises
    KeyError naming it, as ml_collections does for other overrides."""
    for field in fields:
        *sections, key = field.split(".")
        target = flags.FLAGS.config
        for name in sections:
            if name not in target:
                raise KeyError(f"'{name}'")
            target = target[name]
        if key not in target:
            raise KeyError(f"'{key}'")
        if hasattr(target[key], "keys"):  # a section: its fields, each, may be None
            flags_error(f"--config.{field}=None: {field} is a section; set its fields")
        target[key] = None


def flags_error(message: str) -> None:
    """Ends the command as absl ends it for a bad flag: ``message``, status 1."""
    print(f"FATAL Flags parsing error: {message}", file=sys.stderr)
    raise SystemExit(1)


def _config_arguments(argv: list[str]) -> list[str]:
    """The values given to ``--config`` in ``argv`` (``--config=X`` or ``--config X``)."""
    values = []
    for index, arg in enumerate(argv):
        if arg.startswith("--config="):
            values.append(arg.split("=", 1)[1])
        elif arg == "--config" and index + 1 < len(argv):
            values.append(argv[index + 1])
    return values


def _config_argument(argv: list[str]) -> str | None:
    """The value given to ``--config`` in ``argv``, or None."""
    given = _config_arguments(argv)
    return given[0] if given else None


def _config_file(argv: list[str]) -> str:
    """The ``--config`` file's path in ``argv``, without its ``:variant``; '' if none."""
    return (_config_argument(argv) or "").split(":", 1)[0]


def _overrides_of(argv: list[str], field: str) -> list[str]:
    """The ``--config.<key>=...`` arguments of ``argv`` whose key has ``field`` as a part."""
    return [
        arg
        for arg in argv
        if arg.startswith("--config.") and field in arg[len("--config.") :].split("=")[0].split(".")
    ]


def _flag_error_report(error: Exception, argv: list[str]) -> str:
    """absl's report of a bad flag, with a hint for an override given without --config; a
    required flag left out is named with what it is for."""
    message = str(error)
    missing = _REQUIRED_FLAG_MISSING.fullmatch(message)
    if missing and missing.group(1) in flags.FLAGS:
        name = missing.group(1)
        return f"--{name} is required: {flags.FLAGS[name].help}\nPass --help to see the flags."
    if "\n" in message:
        message = "\n" + textwrap.indent(message, "  ")
    name = getattr(error, "flagname", "")
    if name.startswith("config.") and _config_argument(argv) is None:
        message += (
            f"\n--{name} overrides a field of the --config file, and there is none: for a run's "
            "own config, add --config configs/run.py:WORKDIR."
        )
    return message + "\nPass --help to see the flags."


# absl's validator of flags.mark_flag_as_required, whose error names the flag in its text only.
_REQUIRED_FLAG_MISSING = re.compile(
    r"flag --(\S+)=None: Flag --\1 must have a value other than None\."
)


def _get_config_failure(error: Exception) -> str | None:
    """The exception a ``--config`` file's ``get_config()`` raised (``"ValueError: ..."``),
    which ml_collections reports as a flag error with the whole traceback; else None."""
    message = str(error)
    if "Error whilst parsing config file" not in message:
        return None
    return message.strip().splitlines()[-1].strip()


def _config_file_line(error: BaseException, config_file: str) -> int | None:
    """The line of the ``--config`` file where ``error`` was raised (its own code failed,
    not an override of a field it lacks), or None."""
    path = os.path.realpath(config_file)
    lines = [
        frame.lineno
        for frame in traceback_lib.extract_tb(error.__traceback__)
        if os.path.realpath(frame.filename) == path
    ]
    return lines[-1] if lines else None


# ConfigDict's error for setting a field a locked config lacks, which goes on to quote every
# field of the section.
_LOCKED_FIELD = re.compile(r'Key "([^"]+)" does not exist and cannot be added since the config')

# absl's flags that print help and exit, and the alias -h.
HELP_FLAGS = {"help", "helpshort", "helpfull", "helpxml", "?", "h"}


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, for ``app.run(main, flags_parser=parse_flags)``.

    ml_collections reports an unknown ``--config.<field>`` with an AttributeError, or a
    KeyError for an unknown section, and a traceback three exceptions deep; it loads the
    ``--config`` file only when the config is first used, so a mistyped path surfaced as a
    traceback mid-run. This loads the config here and prints what is wrong as absl prints
    other bad flags. An error of the file's ``get_config()`` (an unknown variant) is its
    one line, not the traceback ml_collections wraps it in.
    """
    # -h, the usual short form of absl's -? (else an unknown flag); app.run defined --help.
    if "help" in flags.FLAGS and "h" not in flags.FLAGS:
        flags.DEFINE_alias("h", "help", flag_values=flags.FLAGS)
    given = _config_arguments(argv)
    if len(given) > 1:  # absl would load the last one and drop the others without a word
        flags_error(
            f"--config is given {len(given)} times ({', '.join(given)}); a run takes one "
            "config file: keep one, and change its fields with --config.<field>=VALUE."
        )
    try:
        parsed, unset = _without_none_overrides(argv)
        try:
            remaining = flags.FLAGS(parsed)
        except SystemExit as exit_request:
            # absl's --help and its kin exit 1 once the help is printed, as asked, which a
            # script reads as a failure. (A --config file may exit too: left as it is.)
            asked = {arg.lstrip("-").split("=")[0] for arg in argv[1:]} & HELP_FLAGS
            if asked and exit_request.code == 1:
                raise SystemExit(0) from exit_request
            raise
        except flags.Error as error:  # reported here: parsing again would define flags twice
            failure = _get_config_failure(error)
            if failure is not None:
                flags_error(f"the --config file's get_config() failed: {failure}")
            flags_error(_flag_error_report(error, argv))
        if "config" in flags.FLAGS and flags.FLAGS["config"].present:
            flags.FLAGS.config.keys()  # loads the file and applies the overrides
            if not isinstance(flags.FLAGS.config, ml_collections.ConfigDict):
                flags_error(
                    "the --config file's get_config() returned a "
                    f"{type(flags.FLAGS.config).__name__}, not an ml_collections.ConfigDict: "
                    "start from a bundled config's (from configs import shapes; config = "
                    "shapes.get_config()) or yolojax.config.default_config(), set the fields "
                    "to change, and return it."
                )
            _set_none(unset)
        elif unset:
            flags_error(f"--config.{unset[0]}=None overrides a field of no --config file")
        try:
            _expand_paths()
        except ValueError as error:
            flags_error(str(error))
        return remaining
    except (AttributeError, KeyError) as error:
        message = error
        while isinstance(message, BaseException) and message.args:  # KeyError in AttributeError
            message = message.args[0]
        config_file = _config_file(argv)
        line = _config_file_line(error, config_file) if config_file else None
        if line is not None:  # the file's own code, such as a field it reads that is not there
            # ConfigDict's message quotes the field already; a dict's KeyError holds the key.
            quoted = str(message).startswith("'")
            locked = _LOCKED_FIELD.match(str(message))
            if locked:  # a field set that the section lacks: its name, not the whole section
                advice = str(message).partition("\n")[2]  # 'Did you mean ...'
                message = f"'{locked.group(1)}' is no field of that section" + (
                    "\n" + advice if advice else ""
                )
            flags_error(
                f"the --config file's get_config() failed: {config_file}, line {line}: "
                f"{type(error).__name__}: {message if quoted or locked else repr(message)}"
            )
        if "get_config" in str(message):
            flags_error(f"the --config file has no get_config() function ({message}).")
        field, _, advice = str(message).partition("\n")  # "'batchsize'", 'Did you mean ...'
        given = _overrides_of(argv, field.strip("'"))
        flags_error(
            f"no such config field {field}{' in ' + ', '.join(given) if given else ''}\n"
            f"{advice + chr(10) if advice else ''}The fields and their defaults are in "
            "yolojax/config.py, yolojax/data/config.py and, for model, "
            "yolojax/models/__init__.py (MODEL_DEFAULTS); train.py --print_config lists them."
        )
    except BrokenPipeError:
        # --help's text into `| head` with unbuffered stdout (python -u, PYTHONUNBUFFERED):
        # no fault of the config's, for cli.closed_stdout_ends_quietly to end quietly.
        raise
    except OSError as error:
        config_file = _config_file(argv)
        if config_file and not os.path.exists(config_file):
            bundled = sorted(BUNDLED_CONFIGS.glob("[!_]*.py"))
            flags_error(
                f"cannot load the --config file: No such file or directory: {config_file!r}"
                + (
                    f". The bundled configs: {', '.join(f'configs/{p.name}' for p in bundled)}"
                    " (from the repository root)."
                    if bundled
                    else "."
                )
            )
        # ml_collections re-raises the file's error as a generic 'not available' OSError,
        # whose first line names its flag's internal name ('config_config').
        lines = str(error.__cause__ or error).splitlines()
        flags_error(
            "cannot load the --config file: "
            + "\n".join(line for line in lines if "Failed loading config file" not in line)
        )
    except SyntaxError as error:
        flags_error(
            f"the --config file is not valid Python: {error.filename}, line {error.lineno}: "
            f"{error.msg}\n    {(error.text or '').strip()}"
        )
    except Exception as error:  # the file's own code failed (a NameError, an ImportError...)
        hint = ""
        if (_config_argument(argv) or "").endswith(".json"):  # JSON's null: a NameError
            hint = (
                "\n--config takes a Python file with get_config(), such as configs/shapes.py. "
                "A run's config.json is not one: use --config configs/run.py:WORKDIR for it "
                "(evaluate.py reads it by itself when --config is left out)."
            )
        flags_error(f"cannot load the --config file: {type(error).__name__}: {error}{hint}")
