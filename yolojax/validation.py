"""Argument checks shared by the public functions and the config's validation.

Each raises a ValueError that names the argument or config key and what it expected, before
anything is traced or computed (sizes are static under ``jit``).
"""

import contextlib
import math
import numbers

import jax
import numpy as np


def _is_int_at_least(value, low: int) -> bool:
    """An integer (NumPy integers too, bools not) ``>= low``."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= low


def check_int(name: str, value, low: int) -> int:
    """``value`` as an ``int`` if it is an integer ``>= low`` (NumPy integers too, bools not)."""
    if not _is_int_at_least(value, low):
        raise ValueError(f"{name} must be an int >= {low}; got {value!r}.")
    return int(value)


def check_positive_int(name: str, value) -> int:
    """``value`` as an ``int`` if it is a positive integer (NumPy integers too, bools not)."""
    if not _is_int_at_least(value, 1):
        raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    return int(value)


def check_choice(name: str, value, choices) -> None:
    """Raises unless ``value`` is one of ``choices`` (which the message lists)."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}; got {value!r}.")


def check_range(name: str, value, low: float, high: float) -> None:
    """Raises unless ``value`` is a Python int or float in ``[low, high]``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"{name} must be a number in [{low}, {high}]; got {value!r}.")


def check_threshold(name: str, value) -> None:
    """Raises unless ``value`` is a number in [0, 1]: a Python or NumPy number, a 0-d array,
    or a traced value under jit (a dynamic threshold, which cannot be checked)."""
    if isinstance(value, jax.core.Tracer):
        return
    number = None
    if not isinstance(value, bool | str | bytes) and np.ndim(value) == 0:
        with contextlib.suppress(TypeError, ValueError):  # None, an object: not a number
            number = float(value)
    if number is None:
        raise ValueError(f"{name} must be a number in [0, 1]; got {value!r}.")
    if math.isnan(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {value}.")
