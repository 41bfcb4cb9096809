"""The problem model, problem files and generated problems."""

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stepopt.evaluate import HARD_RULES, Rule, evaluate
from stepopt.io import (
    decision_from_dict,
    decision_to_dict,
    load_problem,
    problem_from_dict,
    problem_hash,
    problem_to_dict,
    save_problem,
)
from stepopt.model import Decision, EngineConfig, Request
from stepopt.testing.factories import decode, make_problem, prefill, waiting
from stepopt.testing.strategies import problems


def test_request_phase_and_remaining():
    assert decode("d", 300).is_decode and decode("d", 300).remaining_prompt == 0
    p = prefill("p", 800, 128)
    assert not p.is_decode and p.remaining_prompt == 672


def test_engine_config_defaults_match_vllm_names():
    cfg = EngineConfig()
    assert (cfg.max_num_scheduled_tokens, cfg.max_num_running_reqs) == (8192, 256)
    assert (cfg.long_prefill_token_threshold, cfg.min_prefill_chunk) == (0, 64)
    assert (cfg.block_size, cfg.num_free_blocks) == (16, None)


def test_model_objects_are_immutable():
    r = decode("d")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.computed_tokens = 5  # type: ignore[misc]
    p = make_problem([r])
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.target_latency_ms = 3  # type: ignore[misc]


def test_hi_and_lo_follow_threshold_and_min_chunk():
    p = make_problem(long_prefill_token_threshold=256, min_prefill_chunk=64)
    assert p.hi(prefill("a", 1000, 0)) == 256 and p.lo(prefill("a", 1000, 0)) == 64
    assert p.hi(prefill("b", 1000, 970)) == 30 and p.lo(prefill("b", 1000, 970)) == 30
    assert p.hi(decode("d")) == p.lo(decode("d")) == 1
    q = make_problem()
    assert q.hi(prefill("a", 1000, 0)) == 1000


def test_waiting_order_and_free_slots():
    p = make_problem(
        [decode("d")],
        [waiting("b", arrival_time=2), waiting("a", arrival_time=2), waiting("z", priority=-3)],
        max_num_running_reqs=3,
    )
    assert [r.id for r in p.waiting_order] == ["z", "a", "b"]
    assert p.free_slots == 2


def test_decision_of_drops_zeros_and_counts():
    d = Decision.of({"a": 3, "b": 0, "c": 1})
    assert d.tokens == {"a": 3, "c": 1} and d.total_tokens == 4 and d.get("b") == 0
    assert decision_from_dict(decision_to_dict(d)) == d


def test_problem_file_round_trip_keeps_preset_reference(tmp_path):
    p = make_problem(
        [decode("d", 700, priority=2), prefill("p", 900, 100)],
        [waiting("w", 500, arrival_time=1.5)],
        num_free_blocks=40,
        objective="goodput",
        priority_mode="weighted",
    )
    path = tmp_path / "p.json"
    save_problem(p, path)
    assert json.loads(path.read_text())["latency_model"] == {"preset": "demo"}
    again = load_problem(path)
    assert again == p and problem_hash(again) == problem_hash(p)


def test_hash_changes_with_any_input():
    p = make_problem([decode("d")], [waiting("w")])
    changed = [
        p.with_changes(target_latency_ms=51.0),
        p.with_changes(objective="goodput"),
        p.with_changes(config=EngineConfig(block_size=32)),
        p.with_changes(waiting=(waiting("w", 801),)),
    ]
    hashes = {problem_hash(q) for q in changed}
    assert problem_hash(p) not in hashes and len(hashes) == len(changed)


@given(problems())
def test_generated_problems_round_trip_through_files(p):
    doc = json.loads(json.dumps(problem_to_dict(p)))
    again = problem_from_dict(doc)
    assert again == p
    assert problem_hash(again) == problem_hash(p)


@given(problems(), st.data())
def test_evaluator_on_random_decisions(p, data):
    ids = [r.id for r in p.requests] + ["ghost"]
    tokens = {i: data.draw(st.integers(-2, 60)) for i in data.draw(st.lists(st.sampled_from(ids)))}
    ev = evaluate(p, Decision(tokens))
    # Latency is the sum of its terms and ignores ids that are not in the problem.
    assert ev.latency_ns == ev.latency_breakdown_ns["total"]
    clean = {k: v for k, v in tokens.items() if k in p.by_id and v > 0}
    assert ev.latency_ns == p.latency.predict_ns(p, clean)
    assert ev.scheduled_tokens == sum(clean.values()) and ev.batch_size == len(clean)
    assert ev.feasible == (not ev.violations)
    if "ghost" in tokens:
        assert Rule.UNKNOWN_REQUEST in ev.rules()
    if sum(clean.values()) > p.config.max_num_scheduled_tokens:
        assert Rule.BUDGET in ev.rules()


@given(problems())
def test_the_empty_decision_breaks_no_hard_rule(p):
    ev = evaluate(p, Decision())
    assert not (ev.rules() & HARD_RULES)
    assert ev.latency_ns == p.latency.tokens(0) + p.latency.batch(0)


def test_request_accepts_optional_output_tokens():
    r = Request("x", 10, 0, output_tokens=7)
    assert r.output_tokens == 7


def test_request_fields_are_listed_once():
    """The file schema and the fast factory follow the dataclass: a new field is either in the
    schema or the schema test fails here, and the fast factory gives it its default."""
    from stepopt.io import RequestSpec
    from stepopt.model import make_request

    assert tuple(RequestSpec.model_fields) == tuple(f.name for f in dataclasses.fields(Request))
    fast = make_request("r", 100, 20, 3, 1.5, 7)
    assert fast == Request("r", 100, 20, 3, 1.5, 7) and type(fast) is Request
    assert make_request("w", 5) == Request("w", 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.priority = 0  # type: ignore[misc]


def test_rebuilt_requests_keep_every_field():
    from stepopt.scenarios.common import assign_priorities

    class AllHigh:  # rng stand-in: every request gets priority 2
        def random(self):
            return 0.0

        def integers(self, lo, hi):
            return 2

    r = Request("r", 100, 20, 0, 1.5, 7)
    (again,) = assign_priorities(AllHigh(), [r])
    assert again == dataclasses.replace(r, priority=2)


@pytest.mark.parametrize(
    ("computed", "n", "blocks"),
    [(0, 1, 1), (15, 1, 0), (16, 1, 1), (10, 22, 1), (10, 23, 2), (0, 0, 0)],
)
def test_new_blocks_counts_the_blocks_a_chunk_opens(computed, n, blocks):
    p = make_problem([prefill("p", 100, computed)], block_size=16)
    assert p.new_blocks(p.running[0], n) == blocks
    assert p.held_blocks(p.running[0]) == -(-computed // 16)
