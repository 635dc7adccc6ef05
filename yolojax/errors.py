"""Wording shared by the library's error messages."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of ``error``'s message (its type's name if it has none), for a one-line
    report of an error from another library, whose messages can run to pages. Longer than
    ``limit`` characters, it keeps its end, where the system's words are ("No space left on
    device")."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line if len(line) <= limit else "..." + line[-limit:]
