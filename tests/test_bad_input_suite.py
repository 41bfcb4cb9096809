"""Every command against every class of bad input: exit 2, one line naming the field, never a
traceback. The table is run in-process (fast); a representative subset also as real processes
of the console script, where a traceback or a stray line would show as it does to a user."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from stepopt.cli import main

GOOD = {
    "config": {"max_num_scheduled_tokens": 512},
    "latency_model": {"preset": "demo"},
    "target_latency_ms": 30,
    "running": [{"id": "a", "prompt_tokens": 100, "computed_tokens": 120}],
    "waiting": [{"id": "b", "prompt_tokens": 300, "priority": 1, "arrival_time": 2.0}],
}
TRACE = "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,100,5\n0.1,200,3\n"

# A user's module of heuristics, written next to the test's files (and put on sys.path).
USER_MODULE = """
from stepopt import Decision

def returns_none(problem):
    return None

def needs_two(problem, other):
    return Decision({})

def takes_nothing():
    return Decision({})

def raises(problem):
    raise ValueError("no idea")

def scaled(problem, factor: float = 1.0):
    return Decision({})
"""


def problem_text(**changes: object) -> str:
    doc = copy.deepcopy(GOOD)
    for path, value in changes.items():
        node = doc
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[int(k)] if k.isdigit() else node[k]
        node[int(keys[-1]) if keys[-1].isdigit() else keys[-1]] = value
    return json.dumps(doc)


@dataclass
class Env:
    d: Path

    def file(self, name: str, text: str | bytes) -> str:
        p = self.d / name
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text, encoding="utf-8")
        return str(p)

    @property
    def good(self) -> str:
        return self.file("good.json", json.dumps(GOOD))

    @property
    def decision(self) -> str:
        return self.file("d.json", json.dumps({"tokens": {"a": 1}}))

    @property
    def trace(self) -> str:
        return self.file("t.csv", TRACE)

    def problems(self) -> str:
        d = self.d / "set"
        d.mkdir(exist_ok=True)
        (d / "p00000.json").write_text(json.dumps(GOOD))
        return str(d)


NOT_UTF8 = json.dumps(GOOD).replace('"a"', '"\udcff"', 1).encode("utf-8", "surrogateescape")

Args = Callable[[Env], list[str]]
# name -> (argv builder, needles that the one error line must contain)
CASES: dict[str, tuple[Args, list[str]]] = {
    # ---- files that are not what they claim ---------------------------------------------
    "evaluate non-utf8": (
        lambda e: ["evaluate", e.file("p.json", NOT_UTF8), e.decision],
        ["not UTF-8", "0xff"],
    ),
    "solve non-utf8": (lambda e: ["solve", e.file("p.json", NOT_UTF8)], ["not UTF-8"]),
    "heuristic non-utf8": (lambda e: ["heuristic", e.file("p.json", NOT_UTF8)], ["not UTF-8"]),
    "frontier non-utf8": (
        lambda e: ["frontier", e.file("p.json", NOT_UTF8), "--targets", "20"],
        ["not UTF-8"],
    ),
    "simulate non-utf8 trace": (
        lambda e: ["simulate", e.file("t.csv", TRACE.encode() + b"\xff,1,1\n")],
        ["trace", "not UTF-8"],
    ),
    "generate non-utf8 trace": (
        lambda e: [
            "scenarios",
            "generate",
            "--source",
            "trace:" + e.file("t.csv", TRACE.encode() + b"\xfe,1,1\n"),
            "-o",
            str(e.d / "o"),
        ],
        ["source", "not UTF-8"],
    ),
    "decision non-utf8": (
        lambda e: ["evaluate", e.good, e.file("d.json", b'{"tokens": {"\xff": 1}}')],
        ["not UTF-8"],
    ),
    "study.toml non-utf8": (
        lambda e: ["study", "run", e.file("s.toml", b"[study]\nsolver = '\xff'\n")],
        ["study", "not UTF-8"],
    ),
    # ---- numbers that are not finite, or beyond what the arithmetic represents ----------
    "target Infinity": (
        lambda e: ["solve", e.file("p.json", problem_text().replace("30", "Infinity", 1))],
        ["target_latency_ms", "finite"],
    ),
    "target .inf in YAML": (
        lambda e: [
            "evaluate",
            e.file("p.yaml", "target_latency_ms: .inf\nlatency_model: {preset: demo}\n"),
            e.decision,
        ],
        ["target_latency_ms", "finite"],
    ),
    "target 1e300": (
        lambda e: ["solve", e.file("p.json", problem_text(target_latency_ms=1e300))],
        ["target_latency_ms", "1e+300"],
    ),
    "target 1e-9 ms (0 ns)": (
        lambda e: ["heuristic", e.file("p.json", problem_text(target_latency_ms=1e-9))],
        ["target_latency_ms", "1e-09"],
    ),
    "computed_tokens 1e18 to highs": (
        lambda e: [
            "solve",
            "-s",
            "highs",
            e.file("p.json", problem_text(running__0__computed_tokens=10**18)),
        ],
        ["running[0].computed_tokens", "16777216"],
    ),
    "block_size 1e18": (
        lambda e: [
            "frontier",
            e.file("p.json", problem_text(config__block_size=10**18)),
            "--targets",
            "20",
        ],
        ["config.block_size"],
    ),
    "num_free_blocks 1e18": (
        lambda e: ["solve", e.file("p.json", problem_text(config__num_free_blocks=10**18))],
        ["config.num_free_blocks"],
    ),
    "priority 1e12": (
        lambda e: ["solve", e.file("p.json", problem_text(waiting__0__priority=10**12))],
        ["waiting[0].priority"],
    ),
    "arrival NaN": (
        lambda e: [
            "evaluate",
            e.file("p.json", problem_text().replace("2.0", "NaN")),
            e.decision,
        ],
        ["waiting[0].arrival_time", "finite"],
    ),
    "arrival -Infinity": (
        lambda e: ["solve", e.file("p.json", problem_text().replace("2.0", "-Infinity"))],
        ["waiting[0].arrival_time", "finite"],
    ),
    "beta_ns Infinity": (
        lambda e: [
            "solve",
            e.file(
                "p.json",
                problem_text(
                    latency_model={
                        "tokens": {"x": [0, 100], "y_ns": [10, 20]},
                        "prefill_attention": {"beta_ns": 1.0},
                    }
                ).replace('"beta_ns": 1.0', '"beta_ns": Infinity'),
            ),
        ],
        ["latency_model.prefill_attention.beta_ns", "finite"],
    ),
    "curve negative below its first breakpoint": (
        lambda e: [
            "solve",
            e.file(
                "p.json",
                problem_text(latency_model={"tokens": {"x": [64, 128], "y_ns": [100, 1000]}}),
            ),
        ],
        ["latency_model.tokens", "negative latency -800 ns at x=0", "first breakpoint x=64"],
    ),
    "batch curve sloping down": (
        lambda e: [
            "evaluate",
            e.file(
                "p.json",
                problem_text(
                    latency_model={
                        "tokens": {"x": [0, 100], "y_ns": [10, 20]},
                        "batch": {"x": [0, 1, 8], "y_ns": [0, 700, 0]},
                    }
                ),
            ),
            e.decision,
        ],
        ["latency_model.batch", "at x=9", "slopes down from x=1"],
    ),
    "decision tokens 1e30": (
        lambda e: ["evaluate", e.good, e.file("d.json", '{"tokens": {"a": 1e30}}')],
        ["tokens.a", "1e+30"],  # parsed as a float: not an integer
    ),
    # ---- keys and ids -------------------------------------------------------------------
    "duplicate key": (
        lambda e: [
            "evaluate",
            e.file(
                "p.json",
                problem_text().replace(
                    '"target_latency_ms": 30', '"target_latency_ms": 30, "target_latency_ms": 40'
                ),
            ),
            e.decision,
        ],
        ["target_latency_ms", "twice"],
    ),
    "duplicate key in YAML": (
        lambda e: [
            "solve",
            e.file(
                "p.yaml",
                "latency_model: {preset: demo}\ntarget_latency_ms: 3\ntarget_latency_ms: 4\n",
            ),
        ],
        ["target_latency_ms", "twice"],
    ),
    "id with newline": (
        lambda e: ["heuristic", e.file("p.json", problem_text(running__0__id="a\nb"))],
        ["running[0].id", "U+000A"],
    ),
    "id with NUL": (
        lambda e: ["solve", e.file("p.json", problem_text(waiting__0__id="b\x00"))],
        ["waiting[0].id", "U+0000"],
    ),
    "id with bidi override": (
        lambda e: [
            "evaluate",
            e.file("p.json", problem_text(running__0__id="a\u202e")),
            e.decision,
        ],
        ["running[0].id", "U+202E"],
    ),
    "decision id with newline": (
        lambda e: ["evaluate", e.good, e.file("d.json", '{"tokens": {"a\\nb": 1}}')],
        ["tokens", "U+000A"],
    ),
    # ---- flags --------------------------------------------------------------------------
    "solve --time-limit nan": (
        lambda e: ["solve", e.good, "--time-limit", "nan"],
        ["--time-limit", "finite"],
    ),
    "solve --time-limit inf": (
        lambda e: ["solve", e.good, "--time-limit", "inf"],
        ["--time-limit", "finite"],
    ),
    "solve --time-limit -1": (
        lambda e: ["solve", e.good, "--time-limit", "-1"],
        ["--time-limit", "> 0"],
    ),
    "frontier --time-limit nan": (
        lambda e: ["frontier", e.good, "--targets", "20", "--time-limit", "nan"],
        ["--time-limit"],
    ),
    "frontier --targets inf": (
        lambda e: ["frontier", e.good, "--targets", "20,inf"],
        ["--targets", "finite"],
    ),
    "frontier --targets 1e-9": (
        lambda e: ["frontier", e.good, "--targets", "1e-9"],
        ["--targets", "1 ns"],
    ),
    "simulate --target-ms inf": (
        lambda e: ["simulate", e.trace, "--target-ms", "inf"],
        ["--target-ms", "finite"],
    ),
    "simulate --time-limit nan": (
        lambda e: ["simulate", e.trace, "--policy", "exact", "--time-limit", "nan"],
        ["--time-limit"],
    ),
    "simulate --seed -1": (lambda e: ["simulate", e.trace, "--seed", "-1"], ["--seed"]),
    "simulate --rate inf": (lambda e: ["simulate", e.trace, "--rate", "inf"], ["--rate", "finite"]),
    "simulate --duration nan": (
        lambda e: ["simulate", e.trace, "--duration", "nan"],
        ["--duration"],
    ),
    "simulate --budget 1e18": (
        lambda e: ["simulate", e.trace, "--budget", str(10**18)],
        ["max_num_scheduled_tokens"],
    ),
    "simulate --kv-blocks 0": (lambda e: ["simulate", e.trace, "--kv-blocks", "0"], ["kv_blocks"]),
    "simulate --target-rule adaptive inf": (
        lambda e: ["simulate", e.trace, "--target-rule", "adaptive:base=inf,min=1,queue=4"],
        ["target-rule base", "finite"],
    ),
    "generate --seed -1": (
        lambda e: ["scenarios", "generate", "--seed", "-1", "-o", str(e.d / "o")],
        ["--seed"],
    ),
    "generate --target-ms inf": (
        lambda e: ["scenarios", "generate", "--target-ms", "inf", "-o", str(e.d / "o")],
        ["--target-ms", "finite"],
    ),
    "generate --count -1": (
        lambda e: ["scenarios", "generate", "--count", "-1", "-o", str(e.d / "o")],
        ["--count"],
    ),
    "study run --time-limit nan": (
        lambda e: ["study", "run", "--problems", e.problems(), "--time-limit", "nan"],
        ["--time-limit"],
    ),
    "unknown option": (lambda e: ["solve", e.good, "--colour"], ["--colour", "stepopt solve"]),
    "flag of the wrong type": (
        lambda e: ["solve", e.good, "--tolerance-ns", "lots"],
        ["--tolerance-ns", "stepopt solve"],
    ),
    "missing argument": (lambda e: ["evaluate", e.good], ["DECISION"]),
    # ---- traces -------------------------------------------------------------------------
    "trace 12.5 tokens (simulate)": (
        lambda e: ["simulate", e.file("t.csv", TRACE + "0.2,12.5,3\n")],
        ["trace line 4.num_prefill_tokens", "whole number", "12.5"],
    ),
    "trace 12.5 tokens (generate)": (
        lambda e: [
            "scenarios",
            "generate",
            "--source",
            "trace:" + e.file("t.csv", TRACE + "0.2,300,12.5\n"),
            "-o",
            str(e.d / "o"),
        ],
        ["line 4.num_decode_tokens", "whole number"],
    ),
    "trace nan arrival": (
        lambda e: ["simulate", e.file("t.csv", TRACE + "nan,10,3\n")],
        ["trace line 4.arrived_at"],
    ),
    "trace short row": (
        lambda e: ["simulate", e.file("t.csv", TRACE + "0.3,10\n")],
        ["trace line 4"],
    ),
    "trace 1e18 tokens": (
        lambda e: ["simulate", e.file("t.csv", TRACE + f"0.3,{10**18},3\n")],
        ["trace line 4.num_prefill_tokens"],
    ),
    # ---- user heuristics ----------------------------------------------------------------
    "heuristic builtins:print": (
        lambda e: ["heuristic", e.good, "-n", "builtins:print"],
        ["heuristic", "built-in"],
    ),
    "heuristic returns None": (
        lambda e: ["heuristic", e.good, "-n", "user_heur:returns_none"],
        ["heuristic", "returned NoneType"],
    ),
    "heuristic of two arguments": (
        lambda e: ["heuristic", e.good, "-n", "user_heur:needs_two"],
        ["heuristic", "2 positional"],
    ),
    "heuristic of no argument": (
        lambda e: ["heuristic", e.good, "-n", "user_heur:takes_nothing"],
        ["heuristic", "cannot be called"],
    ),
    "heuristic that raises": (
        lambda e: ["heuristic", e.good, "-n", "user_heur:raises"],
        ["user_heur:raises", "ValueError", "no idea"],
    ),
    "heuristic parameter nan": (
        lambda e: ["heuristic", e.good, "-n", "user_heur:scaled", "-p", "factor=nan"],
        ["--param", "factor", "finite"],
    ),
    "heuristic unknown parameter": (
        lambda e: ["heuristic", e.good, "-n", "sarathi", "-p", "chunk=5"],
        ["--param", "chunk", "chunk_size"],
    ),
    "simulate policy returns None": (
        lambda e: ["simulate", e.trace, "--policy", "user_heur:returns_none"],
        ["returned NoneType"],
    ),
    "frontier heuristic returns None": (
        lambda e: [
            "frontier",
            e.good,
            "--targets",
            "20",
            "--heuristics",
            "user_heur:returns_none",
            "-s",
            "none",
        ],
        ["returned NoneType"],
    ),
    # ---- where results go ---------------------------------------------------------------
    "heuristic -o directory": (
        lambda e: ["heuristic", e.good, "-o", str(e.d)],
        ["--output", "is a directory"],
    ),
    "solve -o missing parent": (
        lambda e: ["solve", e.good, "-o", str(e.d / "no" / "d.json")],
        ["--output", "does not exist"],
    ),
    "export -o directory": (
        lambda e: ["export", e.good, "-o", str(e.d)],
        ["--output", "is a directory"],
    ),
    "export --map missing parent": (
        lambda e: ["export", e.good, "-o", str(e.d / "m.lp"), "--map", str(e.d / "x" / "m")],
        ["--map", "does not exist"],
    ),
    "simulate -o missing parent": (
        lambda e: ["simulate", e.trace, "-o", str(e.d / "no" / "plan.parquet")],
        ["--output", "does not exist"],
    ),
    "simulate --plot unknown suffix": (
        lambda e: ["simulate", e.trace, "--plot", str(e.d / "cmp.xyz")],
        ["--plot", "unknown figure format", "png"],
    ),
    "frontier --plot directory": (
        lambda e: ["frontier", e.good, "--targets", "20", "--plot", str(e.d)],
        ["--plot", "is a directory"],
    ),
    "frontier --plot no suffix": (
        lambda e: ["frontier", e.good, "--targets", "20", "--plot", str(e.d / "fig")],
        ["--plot", "unknown figure format"],
    ),
    "latency fit -o missing parent": (
        lambda e: [
            "latency",
            "fit",
            str(e.d),
            "--gpu",
            "a100",
            "--model",
            "llama-2-7b",
            "--tp",
            "1",
            "-o",
            str(e.d / "no" / "x.json"),
        ],
        ["--output", "does not exist"],
    ),
    "latency plot unknown suffix": (
        lambda e: ["latency", "plot", "demo", "--data", str(e.d), "-o", str(e.d / "f.docx")],
        ["--output", "unknown figure format"],
    ),
    "generate -o a file": (
        lambda e: ["scenarios", "generate", "--count", "1", "-o", e.good],
        ["--out", "not a directory"],
    ),
    "generate over a problem set": (
        lambda e: ["scenarios", "generate", "--count", "1", "-o", e.problems()],
        ["out", "already holds a problem set", "--force"],
    ),
    "study report -o a file": (
        lambda e: ["study", "report", e.good, "-o", e.good],
        ["--out", "not a directory"],
    ),
    "import-solution -o directory": (
        lambda e: ["import-solution", e.good, e.good, "--map", e.good, "-o", str(e.d)],
        ["--output", "is a directory"],
    ),
    # ---- studies ------------------------------------------------------------------------
    "study.toml time_limit fast": (
        lambda e: ["study", "run", e.file("s.toml", '[study]\ntime_limit = "fast"\n')],
        ["study.time_limit", "number", "fast"],
    ),
    "study.toml time_limit nan": (
        lambda e: ["study", "run", e.file("s.toml", "[study]\ntime_limit = nan\n")],
        ["study.time_limit", "finite"],
    ),
    "study.toml workers true": (
        lambda e: ["study", "run", e.file("s.toml", "[study]\nworkers = true\n")],
        ["study.workers", "integer"],
    ),
    "study.toml solver_params not a table": (
        lambda e: ["study", "run", e.file("s.toml", "solver_params = 3\n")],
        ["solver_params", "table"],
    ),
    "study.toml scenarios seed -1": (
        lambda e: ["study", "run", e.file("s.toml", "[scenarios]\nseed = -1\n")],
        ["scenarios.seed"],
    ),
    "study.toml unknown key": (
        lambda e: ["study", "run", e.file("s.toml", "[study]\nworkerz = 2\n")],
        ["[study]", "unknown key", "workerz"],
    ),
    "study report of another schema": (
        lambda e: ["study", "report", _other_schema_db(e)],
        ["db", "not a study database", "problem_hash"],
    ),
    "study report of a non-database": (
        lambda e: ["study", "report", e.file("x.duckdb", "just text\n")],
        ["db"],
    ),
    "import-solution with another problem's map": (
        lambda e: [
            "import-solution",
            e.good,
            e.good,
            "--map",
            e.file("m.json", '{"format": "stepopt-milp-map", "problem_hash": "x"}'),
        ],
        ["--map", "another problem"],
    ),
}


def _other_schema_db(e: Env) -> str:
    import duckdb

    path = e.d / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE results (x INTEGER)")
    con.close()
    return str(path)


@pytest.fixture
def env(tmp_path, monkeypatch):
    (tmp_path / "user_heur.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return Env(tmp_path)


def check_one_line(err: str, needles: list[str]) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_in_process(case, env, capsys):
    build, needles = CASES[case]
    code = main(build(env))
    err = capsys.readouterr().err
    assert code == 2, err
    check_one_line(err, needles)


# Each class once as a real process: what a user's terminal gets, start-up included.
SUBPROCESS_CASES = [
    "evaluate non-utf8",
    "target Infinity",
    "duplicate key",
    "id with newline",
    "solve --time-limit nan",
    "heuristic returns None",
    "simulate --plot unknown suffix",
    "study.toml time_limit fast",
    "unknown option",
]


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_bad_input_as_a_real_process(case, env):
    build, needles = CASES[case]
    proc = subprocess.run(
        [sys.executable, "-m", "stepopt", *build(env)],
        capture_output=True,
        text=True,
        cwd=env.d,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    check_one_line(proc.stderr, needles)
    assert proc.stdout == ""


def test_unreachable_dask_scheduler_is_one_line(env, capsys, monkeypatch):
    pytest.importorskip("distributed")
    import stepopt.studies.executors as ex

    monkeypatch.setattr(ex, "DASK_CONNECT_TIMEOUT_S", 0.5)
    argv = [
        "study",
        "run",
        "--problems",
        env.problems(),
        "--db",
        str(env.d / "s.duckdb"),
        "--executor",
        "dask://127.0.0.1:9",
        "-q",
    ]
    assert main(argv) == 2
    check_one_line(capsys.readouterr().err, ["executor", "127.0.0.1:9", "dask scheduler"])


def test_generate_with_force_replaces_the_set(env, capsys):
    out = env.problems()
    assert (
        main(
            [
                "scenarios",
                "generate",
                "--count",
                "2",
                "--preset",
                "demo",
                "-o",
                out,
                "--force",
                "--json",
            ]
        )
        == 0
    )
    assert sorted(p.name for p in Path(out).iterdir()) == [
        "manifest.json",
        "p00000.json",
        "p00001.json",
    ]
