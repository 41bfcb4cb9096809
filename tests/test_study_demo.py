"""``python -m stepopt.demo`` end to end, on a handful of problems."""

from __future__ import annotations

from stepopt.demo import main


def test_demo_writes_a_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["--count", "4", "--workers", "0", "--time-limit", "0.5", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "relative gap to the proven optimum" in text and "report.md" in text
    assert (out / "report" / "report.md").is_file()
    assert len(list((out / "problems").glob("p*.json"))) == 4
    assert main(args) == 0  # everything stored: nothing runs again
    assert "0 problems run, 4 already stored" in capsys.readouterr().err


def test_demo_does_not_import_the_cli():
    """The demo is a library user: it reaches the report through stepopt.console."""
    import ast
    import inspect

    import stepopt.demo

    tree = ast.parse(inspect.getsource(stepopt.demo))
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "stepopt.console" in modules
    assert not any(m and m.startswith("stepopt.cli") for m in modules)
