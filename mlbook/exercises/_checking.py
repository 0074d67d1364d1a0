"""What every checker shares: the failure it raises, comparisons that explain, the registry.

A checker calls the student's function on several cases, compares each answer with the
package's reference in float64, and raises :class:`ExerciseFailed` at the first difference,
with a message in words. Known mistakes are recognised by computing what they would give
(``mistakes``) and naming the one the answer matches. The reference's values are never
returned, printed in full or attached to the exception: a failure shows shapes, dtypes and
the first differing entry, no more.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

#: Tolerances a correct float32 implementation passes on the checkers' small cases.
RTOL, ATOL = 1e-4, 1e-5


class ExerciseFailed(AssertionError):
    """The student's function differs from what the exercise asks; the message says how."""


@dataclass(frozen=True)
class Exercise:
    """One coding exercise: the checker's name, where it is, and what it takes."""

    checker: str
    chapter: str
    title: str
    minutes: int
    prerequisites: str
    checker_fn: Callable = field(repr=False, compare=False)


#: checker name -> :class:`Exercise`, in the order the modules register them.
EXERCISES: dict[str, Exercise] = {}


def exercise(chapter: str, title: str, minutes: int, prerequisites: str):
    """Register a checker; it prints one line when the student's function passes."""

    def register(check: Callable) -> Callable:
        @functools.wraps(check)
        def run(fn: Callable, *args, **kwargs) -> None:
            if not callable(fn):
                raise ExerciseFailed(f"{check.__name__} takes your function itself (e.g. "
                                     f"{check.__name__}(my_function)), got {type(fn).__name__}")
            cases = check(fn, *args, **kwargs)
            print(f"{check.__name__}: passed ({cases} cases). Well done.")

        EXERCISES[check.__name__] = Exercise(check.__name__, chapter, title, minutes,
                                             prerequisites, run)
        return run

    return register


def call(fn: Callable, *args, what: str = "your function", **kwargs):
    """``fn(*args, **kwargs)``, turning a stub or a crash into a message about the student's code.

    The traceback of an error inside the student's function stays attached (``from``), so the
    line that failed is still shown under the message.
    """
    name = getattr(fn, "__name__", "")
    if name.isidentifier():  # the student's own name for it, e.g. my_inner_update
        what = name
    try:
        out = fn(*args, **kwargs)
    except NotImplementedError as error:
        raise ExerciseFailed(f"{what} is not written yet (it raised NotImplementedError"
                             f"{': ' + str(error) if str(error) else ''}); replace the stub's "
                             "body with your code") from None
    except ExerciseFailed:
        raise
    except Exception as error:
        raise ExerciseFailed(f"{what} raised {type(error).__name__}: {error}") from error
    if out is None:
        raise ExerciseFailed(f"{what} returned None: did you forget the return statement?")
    return out


def as_tensor(value, what: str) -> torch.Tensor:
    """The student's answer as a float64 tensor, or a message saying what it is instead."""
    if isinstance(value, np.ndarray | float | int) and not isinstance(value, bool):
        value = torch.as_tensor(value)
    if not isinstance(value, torch.Tensor):
        raise ExerciseFailed(f"{what} should be a tensor, got {type(value).__name__}")
    return value


def _matches(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), rtol=rtol,
                                                      atol=atol, equal_nan=False))


def compare(received, expected: torch.Tensor, what: str,
            mistakes: Mapping[str, torch.Tensor] | None = None, case: str = "",
            rtol: float = RTOL, atol: float = ATOL, dtype_kind: str | None = "float") -> None:
    """Raise :class:`ExerciseFailed` unless ``received`` matches ``expected``.

    Parameters
    ----------
    received
        The student's answer (a tensor, an array or a number).
    expected
        The reference's answer.
    what
        What the value is, in words ("the prototypes").
    mistakes
        ``description -> what that mistake would give``: when the answer matches one, the
        description is the message.
    case
        The case being tried, in words ("5-way 1-shot, shuffled labels").
    dtype_kind
        ``"float"`` or ``"int"``: the kind of dtype required (``None``: any).
    """
    where = f" ({case})" if case else ""
    received = as_tensor(received, what)
    received = received.detach().cpu()
    expected = expected.detach().cpu()
    if dtype_kind == "float" and not received.is_floating_point():
        raise ExerciseFailed(f"{what}{where} should be a floating-point tensor, got dtype "
                             f"{received.dtype}")
    if dtype_kind == "int" and (received.is_floating_point() or received.is_complex()
                                or received.dtype == torch.bool):
        raise ExerciseFailed(f"{what}{where} should hold integers (int64), got dtype "
                             f"{received.dtype}")
    if received.is_floating_point() and not received.isfinite().all():
        raise ExerciseFailed(f"{what}{where} contains NaN or infinite values")
    for description, wrong in (mistakes or {}).items():
        if (_matches(received, wrong.detach().cpu(), rtol, atol)
                and not _matches(received, expected, rtol, atol)):
            raise ExerciseFailed(f"{what}{where}: {description}")
    if received.shape != expected.shape:
        raise ExerciseFailed(f"{what}{where} has shape {tuple(received.shape)}, expected "
                             f"{tuple(expected.shape)}")
    if _matches(received, expected, rtol, atol):
        return
    r, e = received.double(), expected.double()
    bad = ~torch.isclose(r, e, rtol=rtol, atol=atol)
    index = tuple(int(i) for i in bad.nonzero()[0]) if r.ndim else ()
    largest = float((r - e).abs().max())
    at = f" at index {index}" if index else ""
    raise ExerciseFailed(
        f"{what}{where}: {int(bad.sum())} of {r.numel()} entries differ from the expected "
        f"values; the first{at} is {float(r[index]):.6g} where {float(e[index]):.6g} was "
        f"expected (largest difference {largest:.3g}; shape {tuple(r.shape)}, dtype "
        f"{received.dtype})"
    )


def require(condition: bool, message: str) -> None:
    """Raise :class:`ExerciseFailed` with ``message`` unless ``condition``."""
    if not condition:
        raise ExerciseFailed(message)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
