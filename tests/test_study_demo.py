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
