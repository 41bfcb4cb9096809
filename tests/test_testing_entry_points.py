"""User heuristics by entry point (group ``stepopt.heuristics``) and by ``module:function``.

A real distribution is built in a temporary site directory (a module plus its ``dist-info``
with ``entry_points.txt``) and put on ``sys.path``: ``importlib.metadata`` discovers it like an
installed package.
"""

from __future__ import annotations

import textwrap

import pytest

from stepopt.cli import main
from stepopt.errors import InputError, UnknownNameError
from stepopt.evaluate import evaluate
from stepopt.heuristics.base import get_heuristic, heuristic_names
from stepopt.io import save_problem
from stepopt.testing import assert_gap_within
from stepopt.testing.factories import decode, linear_latency, make_problem, prefill, waiting

MODULE = "stepopt_ep_demo_heuristics"

SOURCE = '''
from stepopt.model import Decision

LOADED = True

def decodes_only(problem, extra: int = 0):
    """Every running decode, plus ``extra`` tokens for the first running prefill."""
    tokens = {r.id: 1 for r in problem.running_decodes}
    if extra and problem.running_prefills:
        tokens[problem.running_prefills[0].id] = extra
    return Decision.of(tokens)
'''

ENTRY_POINTS = f"""
[stepopt.heuristics]
ep-decodes-only = {MODULE}:decodes_only
ep-broken = {MODULE}_missing:nothing
three-stage = {MODULE}:decodes_only
"""


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    (root / f"{MODULE}.py").write_text(SOURCE)
    info = root / "stepopt_ep_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stepopt-ep-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delitem(__import__("sys").modules, MODULE, raising=False)
    return root


@pytest.fixture
def problem():
    return make_problem(
        [decode("d0", 100), decode("d1", 90), prefill("p0", 300, 100)],
        [waiting("w0", 200)],
        latency=linear_latency(per_token_ns=50_000, base_ns=5_000_000),
        target_ms=8.0,
        max_num_scheduled_tokens=256,
        min_prefill_chunk=16,
    )


def test_entry_point_heuristic_is_listed_and_runs(site, problem):
    import sys

    names = heuristic_names()
    assert {"ep-decodes-only", "ep-broken", "three-stage"} <= set(names)
    assert MODULE not in sys.modules  # listing names imports no plug-in
    fn = get_heuristic("ep-decodes-only")
    assert fn.__module__ == MODULE  # the plug-in's own callable, keyword parameters intact
    assert fn(problem, extra=16).scheduled() == {"d0": 1, "d1": 1, "p0": 16}
    assert get_heuristic("ep-decodes-only") is fn


def test_builtin_name_wins_over_a_plugin(site):
    assert get_heuristic("three-stage").__module__ == "stepopt.heuristics.three_stage"


def test_broken_entry_point_fails_with_its_name(site):
    with pytest.raises(InputError) as info:
        get_heuristic("ep-broken")
    msg = str(info.value)
    assert "'ep-broken'" in msg and f"{MODULE}_missing:nothing" in msg
    assert "failed to load: ModuleNotFoundError" in msg


def test_unknown_name_lists_plugins_too(site):
    with pytest.raises(UnknownNameError) as info:
        get_heuristic("nope")
    assert "ep-decodes-only" in info.value.valid and "three-stage" in info.value.valid


def test_cli_accepts_the_plugin_by_name(site, problem, tmp_path, capsys):
    path = tmp_path / "p.json"
    save_problem(problem, path)
    code = main(["heuristic", str(path), "--name", "ep-decodes-only", "-p", "extra=16", "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert '"p0": 16' in out
    assert main(["heuristic", str(path), "--name", "ep-broken"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: heuristic: entry point 'ep-broken'") and "\n" not in err


def test_studies_and_assertions_accept_the_plugin_by_name(site, problem):
    from stepopt.studies.worker import get_heuristic as study_resolve

    assert study_resolve("ep-decodes-only")(problem) == get_heuristic("ep-decodes-only")(problem)
    report = assert_gap_within("ep-decodes-only", [problem], max_gap=1.0)
    assert report.heuristic == "ep-decodes-only" and len(report.scored) == 1


def test_import_path(site, problem):
    fn = get_heuristic(f"{MODULE}:decodes_only")
    assert evaluate(problem, fn(problem)).feasible
    assert get_heuristic("stepopt.heuristics.three_stage:three_stage") is get_heuristic(
        "three-stage"
    )


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
        (f"{MODULE}:missing", f"module '{MODULE}' has no attribute 'missing'"),
        (f"{MODULE}:LOADED", "is not callable"),
        (":f", "expected a name or module:function"),
    ],
)
def test_import_path_errors_name_the_problem(site, name, needle):
    with pytest.raises(InputError, match=needle) as info:
        get_heuristic(name)
    assert str(info.value).startswith("heuristic: ")


def test_plugins_follow_sys_path(tmp_path, monkeypatch):
    """A plug-in installed while the process runs is seen; one whose path is gone is not."""
    assert "ep-late" not in heuristic_names()
    root = tmp_path / "late"
    info = root / "stepopt_ep_late-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stepopt-ep-late\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[stepopt.heuristics]\nep-late = stepopt.heuristics.three_stage:three_stage\n"
    )
    with monkeypatch.context() as m:
        m.syspath_prepend(str(root))
        assert "ep-late" in heuristic_names()
        assert get_heuristic("ep-late") is get_heuristic("three-stage")
    assert "ep-late" not in heuristic_names()


def test_get_heuristic_takes_a_module_path_everywhere_a_name_is_taken():
    from stepopt.heuristics.base import get_heuristic
    from stepopt.heuristics.three_stage import three_stage

    assert get_heuristic("stepopt.heuristics.three_stage:three_stage") is three_stage
