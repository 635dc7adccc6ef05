"""Argument checks shared by the public functions and the config's validation.

Each raises a ValueError that names the argument or config key and what it expected, before
anything is traced or computed (sizes are static under ``jit``).
"""

import contextlib
import math
import numbers
import operator

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


# check_number's bounds, in its keyword order.
_COMPARISONS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


def check_number(name: str, value, *, above=None, at_least=None, below=None, at_most=None) -> None:
    """Raises unless ``value`` is a finite Python int or float (bools not) within the bounds
    given: ``value > above``, ``value >= at_least``, ``value < below``, ``value <= at_most``.

    The message names ``name`` and the bounds: ``config.train.learning_rate must be a finite
    number > 0; got -1.0.``
    """
    bounds = [
        (sign, bound)
        for sign, bound in zip(_COMPARISONS, (above, at_least, below, at_most), strict=True)
        if bound is not None
    ]
    is_number = not isinstance(value, bool) and isinstance(value, int | float)
    if not (
        is_number
        and math.isfinite(value)
        and all(_COMPARISONS[sign](value, bound) for sign, bound in bounds)
    ):
        wanted = " and ".join(f"{sign} {bound}" for sign, bound in bounds)
        raise ValueError(f"{name} must be a finite number {wanted}".rstrip() + f"; got {value!r}.")


def check_flags(name: str, array: np.ndarray) -> np.ndarray:
    """``array`` of bool or of numbers 0 and 1 as bool; any other number (a count or an
    index passed by mistake), which would silently become True, is refused."""
    if array.size and array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be bool or 0/1, got dtype {array.dtype}")
    if array.dtype.kind != "b" and np.any((array != 0) & (array != 1)):
        raise ValueError(f"{name} must be bool or 0/1, got values {np.unique(array)[:5]}")
    return array.astype(bool)


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


def check_finite(name: str, array: np.ndarray) -> None:
    """Raises ValueError, naming ``name``, if a value of ``array`` is NaN or infinite."""
    if not np.isfinite(array).all():
        raise ValueError(f"{name} must be finite, got NaN or infinity")


def known_values(array) -> np.ndarray | None:
    """``array`` as NumPy where its values are known, None where they are traced (under
    jit or vmap): the value checks of the public functions run outside traces only."""
    try:
        return np.asarray(array)
    except jax.errors.TracerArrayConversionError:
        return None


def device_axis_hint(name: str, ndim: int, expected_ndim: int) -> str:
    """For an array of one axis more than expected, most likely a pipeline batch's leading
    device axis: what to pass instead (else "")."""
    if ndim != expected_ndim + 1:
        return ""
    return (
        " The input pipeline's batches are (devices, per_device, ...): pass "
        f"{name}[0] (the first device's) or {name}.reshape(-1, *{name}.shape[2:])."
    )
