"""Heuristic parameters given as text (CLI -p, simulator policy specs) are typed or refused."""

import pytest

from stepopt.errors import InputError
from stepopt.heuristics.base import coerce_params, get_heuristic
from stepopt.simulate.policies import make_policy


def test_values_take_the_type_of_the_default_or_the_annotation():
    three = get_heuristic("three-stage")
    assert coerce_params(three, {"full_scan": "TRUE"}, "p") == {"full_scan": True}
    sarathi = get_heuristic("sarathi")  # chunk_size: int | None = None
    assert coerce_params(sarathi, {"chunk-size": "512"}, "p") == {"chunk_size": 512}


@pytest.mark.parametrize(
    ("name", "raw", "needle"),
    [
        ("three-stage", {"full_scan": "maybe"}, "full_scan takes true or false"),
        ("three-stage", {"reserve_full_prompt": "1"}, "takes true or false"),
        ("sarathi", {"chunk_size": "abc"}, "chunk_size takes an integer"),
        ("sarathi", {"budget": "5"}, "unknown parameter 'budget'; valid: chunk_size"),
    ],
)
def test_bad_values_are_one_line_errors(name, raw, needle):
    with pytest.raises(InputError, match=needle):
        coerce_params(get_heuristic(name), raw, "--param")


def test_untyped_parameters_are_read_as_bool_int_float_or_text():
    def h(problem, a, b, c, d):  # no defaults, no annotations
        raise AssertionError

    got = coerce_params(h, {"a": "false", "b": "7", "c": "0.5", "d": "fifo"}, "p")
    assert got == {"a": False, "b": 7, "c": 0.5, "d": "fifo"}


def test_simulator_policy_specs_use_the_same_rules():
    assert make_policy("sarathi[chunk_size=256]").name == "sarathi[chunk_size=256]"
    with pytest.raises(InputError, match="takes true or false"):
        make_policy("three-stage[reserve_full_prompt=yes]")
