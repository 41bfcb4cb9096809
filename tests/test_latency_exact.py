"""The prefill attention table in exact rational arithmetic (no IEEE doubles)."""

from __future__ import annotations

import math
import random
from decimal import Decimal
from fractions import Fraction

import pytest

from stepopt.heuristics.common import attention_fn
from stepopt.latency.model import PrefillAttention, exact_coefficient


def _exact(alpha: str, beta: str, linear: str, chunk: int, cached: int) -> int:
    a, b, g = Fraction(alpha), Fraction(beta), Fraction(linear)
    return math.floor(a * chunk * cached + b * chunk * chunk + g * chunk)


def test_the_double_rounding_case_gives_the_exact_value():
    att = PrefillAttention(alpha_ns=0.7, beta_ns=2.3, grid=(64,))
    # 0.7 * 11 * 1 + 2.3 * 121 = 286 exactly; in doubles it is 285.99999999999994.
    assert 0.7 * 11 * 1 + 2.3 * 11 * 11 < 286
    assert att.exact_ns(11, 1) == 286
    assert att(11, 1, 11) == 286  # the table's end point
    assert att.curve(1, 11).ys == (0, 286)
    assert attention_fn(att)(11, 1, 11) == 286


@pytest.mark.parametrize(
    "value, expected",
    [
        (0.7, Fraction(7, 10)),
        (2.3, Fraction(23, 10)),
        (1.4382345795372729, Fraction("1.4382345795372729")),
        (3, Fraction(3)),
        (Fraction(1, 3), Fraction(1, 3)),
        (Decimal("0.1"), Fraction(1, 10)),
        ("7/10", Fraction(7, 10)),
    ],
)
def test_coefficients_are_the_decimals_written(value, expected):
    assert exact_coefficient(value) == expected


@pytest.mark.parametrize("bad", [-0.5, math.inf, math.nan, True])
def test_bad_coefficients_are_refused(bad):
    with pytest.raises(ValueError, match="alpha_ns"):
        PrefillAttention(alpha_ns=bad)


def _decimal(rng: random.Random) -> str:
    """A coefficient like the ones fitted presets and hand-written files hold."""
    digits = rng.choice([1, 2, 3, 6, 16])
    return str(round(rng.uniform(0, 50), digits)) if rng.random() < 0.9 else "0"


def test_random_tables_match_fraction_arithmetic():
    rng = random.Random(12)
    grid = (16, 64, 128, 256, 512)
    for _ in range(400):
        alpha, beta, linear = _decimal(rng), _decimal(rng), _decimal(rng)
        att = PrefillAttention(float(alpha), float(beta), grid, float(linear))
        fast = attention_fn(att)
        cached, remaining = rng.randrange(0, 20_000), rng.randrange(1, 700)
        curve = att.curve(cached, remaining)
        for x, y in zip(curve.xs, curve.ys, strict=True):
            assert y == _exact(alpha, beta, linear, x, cached)
        for chunk in {1, remaining, rng.randrange(1, remaining + 1)}:
            assert fast(chunk, cached, remaining) == att(chunk, cached, remaining)
            assert att.exact_ns(chunk, cached) == _exact(alpha, beta, linear, chunk, cached)


def test_adversarial_near_integers_match_fraction_arithmetic():
    """Coefficients with one decimal make many products land exactly on an integer, where a
    double one ulp below would floor to the integer below."""
    misses = 0
    for a10 in range(1, 30):
        for b10 in range(1, 30):
            alpha, beta = str(Fraction(a10, 10)), str(Fraction(b10, 10))
            att = PrefillAttention(a10 / 10, b10 / 10, (64,))
            for c in (3, 7, 11, 13, 30):
                for cached in (0, 1, 3, 10):
                    want = _exact(alpha, beta, "0", c, cached)
                    assert att.exact_ns(c, cached) == want
                    misses += math.floor(a10 / 10 * c * cached + b10 / 10 * c * c) != want
    assert misses > 0  # the doubles really do go wrong on this set


def test_equal_coefficients_written_differently_are_one_model():
    a = PrefillAttention(0.7, 2.3)
    b = PrefillAttention(Fraction(7, 10), "23/10")
    assert a == b and hash(a) == hash(b)
    assert PrefillAttention().is_zero and not PrefillAttention(linear_ns=1).is_zero


# --- curves that would give a negative step latency ---------------------------------------------


def test_first_negative_matches_a_scan():
    from stepopt.latency.pwl import PiecewiseLinear, first_negative

    rng = random.Random(4)
    for _ in range(300):
        n = rng.randrange(1, 5)
        xs = sorted(rng.sample(range(-5, 60), n))
        ys = [rng.randrange(-20, 200) for _ in xs]
        curve = PiecewiseLinear(tuple(xs), tuple(ys))
        scan = next((x for x in range(0, 5000) if curve(x) < 0), None)
        found = first_negative(curve)
        if scan is None:
            assert found is None or found[0] >= 5000
        else:
            assert found is not None and found[0] == scan and found[1] == curve(scan) < 0


def test_loading_a_model_rejects_a_negative_curve_naming_it():
    from stepopt.errors import InputError
    from stepopt.latency.documents import model_from_dict

    ok = {"tokens": {"x": [0, 10], "y_ns": [5, 50]}}
    model_from_dict(ok)
    with pytest.raises(InputError, match=r"^latency_model\.tokens: negative latency -40 ns at x=0"):
        model_from_dict({"tokens": {"x": [10, 20], "y_ns": [5, 50]}})
    with pytest.raises(InputError, match=r"^latency_model\.batch: .* at x=11 .*slopes down"):
        model_from_dict({**ok, "batch": {"x": [0, 1], "y_ns": [10, 9]}})
