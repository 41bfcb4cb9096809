"""Window files, the CLI, the study run and the receding-horizon policy."""

from __future__ import annotations

import json

import pytest

from stepopt.cli import main
from stepopt.errors import InputError
from stepopt.horizon import evaluate_window, replay_policy, solve_window
from stepopt.horizon.files import load_window, window_from_dict, window_to_dict
from stepopt.horizon.windows import cut_windows, without_prefill_attention

MS = 1_000_000
# A running request whose prompt is computed (so it must have emitted, with token times).
RUN = {
    "id": "r",
    "prompt_tokens": 5,
    "output_tokens": 2,
    "arrival_ns": 0,
    "computed_tokens": 5,
    "emitted_tokens": 0,
}
LATENCY = {"tokens": {"x": [0, 64, 512], "y_ns": [4_000_000, 5_000_000, 20_000_000]}}


def doc(**changes):
    d = {
        "config": {
            "max_num_scheduled_tokens": 256,
            "max_num_running_reqs": 3,
            "min_prefill_chunk": 32,
        },
        "latency_model": LATENCY,
        "start_time_ns": 0,
        "steps": 6,
        "slo": {"ttft_ms": 60, "tbt_ms": 30},
        "running": [
            {
                "id": "r0",
                "prompt_tokens": 300,
                "output_tokens": 4,
                "arrival_ns": 0,
                "computed_tokens": 300,
                "emitted_tokens": 1,
                "first_token_ns": 0,
                "last_token_ns": 0,
            }
        ],
        "waiting": [{"id": "w0", "prompt_tokens": 400, "output_tokens": 3, "arrival_ns": 0}],
        "arrivals": [
            {
                "id": "a1",
                "prompt_tokens": 100,
                "output_tokens": 2,
                "arrival_ns": 12 * MS,
                "ttft_ms": 40,
            }
        ],
    }
    d.update(changes)
    return d


def test_round_trip_and_solve(tmp_path):
    w = window_from_dict(doc())
    again = window_from_dict(json.loads(json.dumps(window_to_dict(w))))
    assert again.requests == w.requests and again.slo == w.slo
    res = solve_window(w, time_limit_s=20)
    assert res.status == "OPTIMAL"
    assert evaluate_window(w, res.plan).key == res.evaluation.key
    for pol in ("three-stage", "sarathi"):
        _, ev = replay_policy(w, pol)
        assert ev.key <= res.evaluation.key  # nothing beats the proven optimum


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"slo": {"ttft_ms": -1, "tbt_ms": 30}}, "slo.ttft_ms"),
        (
            {"arrivals": [{"id": "a", "prompt_tokens": 5, "output_tokens": 1, "arrival_ns": 0}]},
            "arrivals[0].arrival_ns",
        ),
        (
            {"waiting": [{"id": "r0", "prompt_tokens": 5, "output_tokens": 1, "arrival_ns": 0}]},
            "waiting[0].id",
        ),
        (
            {"waiting": [{"id": "w", "prompt_tokens": 5, "output_tokens": 1, "arrival_ns": 1}]},
            "waiting[0].arrival_ns",
        ),
        ({"running": [RUN]}, "running[0].emitted_tokens"),
        ({"running": [{**RUN, "emitted_tokens": 1}]}, "running[0].first_token_ns"),
        (
            {"slo": {"ttft_ms": 1, "tbt_ms": 1, "ttft_ms_by_priority": {"x": 3}}},
            "slo.ttft_ms_by_priority",
        ),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_input_names_the_field(change, field):
    with pytest.raises(InputError) as exc:
        window_from_dict(doc(**change))
    assert str(exc.value).startswith(field + ":")
    assert "\n" not in str(exc.value)


def test_prefill_attention_is_refused_with_a_clear_error():
    d = doc(latency_model={**LATENCY, "prefill_attention": {"alpha_ns": 1.0, "beta_ns": 1.0}})
    with pytest.raises(InputError, match="prefill_attention"):
        solve_window(window_from_dict(d))


def test_cli_solve_replay_schema_and_errors(tmp_path, capsys):
    f = tmp_path / "w.json"
    f.write_text(json.dumps(doc()))
    assert main(["horizon", "solve", str(f), "--json", "--time-limit", "20"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "OPTIMAL" and out["slo_gap"] == 0
    assert main(["horizon", "replay", str(f), "--policy", "sarathi"]) == 0
    assert main(["schema", "--kind", "window"]) == 0
    assert "stepopt window problem" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc(steps=-3)))
    assert main(["horizon", "solve", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: steps:") and len(err.strip().splitlines()) == 1


def test_windows_cut_from_a_trace_run_and_resume(tmp_path, capsys):
    from stepopt.horizon.files import save_window
    from stepopt.horizon.problem import Slo
    from stepopt.horizon.report import regret_summary
    from stepopt.horizon.study import horizon_rows, run_horizon_study
    from stepopt.latency.presets import load_preset
    from stepopt.model import EngineConfig
    from stepopt.simulate.trace import make_trace

    tr = make_trace(
        [300, 200, 900, 120, 500, 64], [5, 3, 4, 6, 2, 3], [0.0, 0.001, 0.002, 0.03, 0.05, 0.06]
    )
    lat = without_prefill_attention(load_preset("demo"))
    ws = cut_windows(
        tr, lat, EngineConfig(512, 4, 0, 64, 16, None), Slo(120, 40), 4, count=2, first=1, every=3
    )
    assert len(ws) == 2
    paths = []
    for w in ws:
        p = tmp_path / f"{w.name}.json"
        save_window(w, p)
        assert load_window(p).requests == w.requests
        paths.append(p)
    db = tmp_path / "h.duckdb"
    got = run_horizon_study(paths, db, ["three-stage", "vllm-v1"], time_limit=20)
    assert got == {"windows": 2, "skipped": 0, "solved": 2}
    again = run_horizon_study(paths, db, ["three-stage", "vllm-v1"], time_limit=20)
    assert again == {"windows": 2, "skipped": 2, "solved": 0}
    rows = horizon_rows(db)
    assert len(rows) == 6
    for r in rows:
        assert r["regret"] is None or r["regret"] >= 0  # the incumbent is never beaten
    s = regret_summary(rows)
    assert set(s["policies"]) == {"three-stage", "vllm-v1"}
    assert main(["horizon", "report", "--db", str(db), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["windows"] == 2
    worst = tmp_path / "worst"
    assert main(["horizon", "report", "--db", str(db), "--save-worst", str(worst)]) == 0
    assert (worst / "commands.sh").is_file()
    for f in worst.glob("*.window.json"):  # each saved window loads and solves again
        assert load_window(f).steps == 4


def test_receding_horizon_policy_in_the_simulator():
    from stepopt.latency.presets import load_preset
    from stepopt.model import EngineConfig
    from stepopt.simulate.engine import SimConfig, simulate
    from stepopt.simulate.policies import make_policy
    from stepopt.simulate.targets import FixedTarget
    from stepopt.simulate.trace import make_trace

    tr = make_trace([300, 200, 120], [3, 2, 2], [0.0, 0.001, 0.02])
    pol = make_policy("horizon:2[ttft_ms=200,tbt_ms=50]", time_limit=5.0)
    res = simulate(
        tr,
        pol,
        load_preset("demo"),
        FixedTarget(50),
        SimConfig(engine=EngineConfig(512, 4, 0, 64, 16, None)),
    )
    assert res.stats["finished"] == 3  # every decision passed the simulator's validation
    assert pol.stats.decisions == res.num_steps
    # Replayed over a window from its start state, and compared with the optimum.
    w = window_from_dict(doc())
    _, ev = replay_policy(w, "horizon:3[ttft_ms=60,tbt_ms=30]", time_limit=5.0)
    assert ev.feasible
    assert ev.key <= solve_window(w, time_limit_s=20).evaluation.key
    with pytest.raises(InputError, match="horizon takes"):
        make_policy("horizon:2[speed=3]")
