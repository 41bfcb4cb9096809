"""Bounds on every number a user gives, in one place.

The evaluator computes latencies as exact integers, CP-SAT works in int64 and the MILP solvers
in doubles (exact integers up to 2**53), so a number past these bounds would overflow a solver or
silently lose precision. Every bound is far beyond a real engine (context windows of millions of
tokens, steps of seconds); files, flags and traces are checked against them at the edge and the
problem schema states them.
"""

from __future__ import annotations

import math
import unicodedata

from stepopt.errors import InputError

MAX_TOKENS = 1 << 24  # 16,777,216: prompt/computed/output tokens, token budget, chunk sizes
MAX_REQUESTS = 1 << 20  # requests in a step, max_num_running_reqs
MAX_BLOCKS = 1 << 40  # KV blocks (num_free_blocks, --kv-blocks)
MAX_PRIORITY = 1 << 20  # |priority| (weights 1 + max - p stay small)
# A target is at least 1 ns and at most 1e15 ns (11.6 days, below 2**53 / 8: |L - T| stays exact).
MIN_TARGET_MS = 1e-6
MAX_TARGET_MS = 1e9
MAX_TIME_S = 4e9  # arrival times (s): in ns they still fit an int64
MAX_SEED = (1 << 63) - 1
MAX_ID_LENGTH = 1024

# Characters that would break a table or a log line, or reorder the text shown around them.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def bad_id_char(text: str) -> str | None:
    """The first character of ``text`` an id must not hold (control, line separator, bidi
    control, lone surrogate), as ``U+XXXX``; None when the id is clean."""
    for ch in text:
        if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):
            return f"U+{ord(ch):04X}"
    return None


def check_id(text: str, field: str) -> str:
    """``text`` as a request id, or a one-line error naming the bad character."""
    bad = bad_id_char(text)
    if bad is not None:
        raise InputError(field, f"ids must not contain control or bidi characters ({bad})", text)
    return text


def finite(value: float, field: str) -> float:
    """``value`` when it is a finite number (flags and trace cells; files are checked whole)."""
    if not math.isfinite(value):
        raise InputError(field, "must be a finite number", value)
    return value


def check_target_ms(value: float, field: str) -> float:
    """A target latency in ms: finite, at least 1 ns, at most :data:`MAX_TARGET_MS`."""
    finite(value, field)
    if not MIN_TARGET_MS <= value <= MAX_TARGET_MS:
        raise InputError(
            field, f"must be between {MIN_TARGET_MS:g} ms (1 ns) and {MAX_TARGET_MS:g} ms", value
        )
    return value


def check_time_limit(value: float | None, field: str = "--time-limit") -> float | None:
    """A solver time limit in seconds: None (no limit) or finite and > 0."""
    if value is None:
        return None
    finite(value, field)
    if not value > 0:
        raise InputError(field, "must be > 0 seconds", value)
    return value


def check_seed(value: int, field: str = "--seed") -> int:
    if not 0 <= value <= MAX_SEED:
        raise InputError(field, "must be an integer in 0..2**63-1", value)
    return value


def check_int(value: int, field: str, lo: int, hi: int) -> int:
    """``value`` in ``lo..hi`` or a one-line error naming the range."""
    if not lo <= value <= hi:
        raise InputError(field, f"must be in {lo}..{hi}", value)
    return value


def whole_number(text: str, field: str, lo: int, hi: int = MAX_TOKENS) -> int:
    """A count from a CSV cell (``374`` or ``374.0``): ``12.5``, ``nan``, ``inf`` and values
    outside ``lo..hi`` are one-line errors, never truncated."""
    try:
        value = float(text)
    except ValueError:
        raise InputError(field, "not a number", text) from None
    if not math.isfinite(value) or value != int(value):
        raise InputError(field, "must be a whole number", text)
    return check_int(int(value), field, lo, hi)


def seconds(text: str, field: str) -> float:
    """A time in seconds from a CSV cell: finite, in ``0..MAX_TIME_S``."""
    try:
        value = float(text)
    except ValueError:
        raise InputError(field, "not a number", text) from None
    if not (math.isfinite(value) and 0 <= value <= MAX_TIME_S):
        raise InputError(field, f"must be a finite number of seconds in 0..{MAX_TIME_S:g}", text)
    return value
