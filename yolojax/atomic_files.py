"""Files written whole or not at all: a reader (or a crash) never sees one half-written.

atomic_write_text(path, to_json(record))  # the old file or the new, never a mix
"""

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path


def _process_umask() -> int:
    # os.umask can only be read by setting it; done once at import, before a run starts the
    # threads (orbax's writers) that a brief umask of 0 could affect.
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


# The mode open() gives a new file; mkstemp's temporary files are 0600 instead.
_NEW_FILE_MODE = 0o666 & ~_process_umask()


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """Why files cannot be written into ``folder`` (made, with its parents, where missing),
    or None if they can, as far as can be told without writing: its nearest existing folder
    (or the file or dangling link in its place) is named. Creates nothing.

    Returns:
      None, or ``"X is a file"``, ``"X is a link to T, which does not exist: create that
      folder (or mount the disk it is on)"`` or ``"X is read-only to this user"``.
    """
    folder = Path(folder).absolute()
    existing = next(
        path for path in (folder, *folder.parents) if path.exists() or path.is_symlink()
    )
    if not existing.exists():  # a link to nothing, which mkdir takes for a file
        return (
            f"{existing} is a link to {os.path.realpath(existing)}, which does not exist: "
            "create that folder (or mount the disk it is on)"
        )
    if not existing.is_dir():
        return f"{existing} is a file"
    if not os.access(existing, os.W_OK | os.X_OK):  # also False on a read-only mount
        return f"{existing} is read-only to this user"
    return None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` so readers see the old or the new file, never a mix.

    The file gets the mode ``open`` would give it (0644 under the usual umask 022).
    """
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to ``path`` as `atomic_write_text` writes text: whole or not at all."""
    atomic_write_files({path: data})


def atomic_write_files(files: Mapping[str | os.PathLike, bytes]) -> None:
    """Writes each ``{path: data}`` of ``files`` as `atomic_write_bytes` does, and all of them
    or none: each is written whole beside its path before the first is renamed into place, so
    a write that fails (a full disk) leaves every one as it was, not some new files beside
    some old ones (only the renames, which take no space, could be cut short)."""
    written = {}  # {temporary file: its path}
    try:
        for path, data in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            written[tmp] = path
            os.fchmod(fd, _NEW_FILE_MODE)  # as readable as the run's other files
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in written.items():
            os.replace(tmp, path)
    except BaseException:
        for tmp in written:
            Path(tmp).unlink(missing_ok=True)
        raise


def jsonable(value):
    """Plain Python values for JSON, recursively; NaN and inf become null (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(record) -> str:
    """``record`` as indented, strictly valid JSON (see :func:`jsonable`)."""
    return json.dumps(jsonable(record), indent=2, allow_nan=False) + "\n"
