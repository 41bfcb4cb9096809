"""Writes gap_study.ipynb without outputs.

python notebooks/build_gap_study.py
"""

from _write import write_notebook
from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# An optimality-gap study\n\n"
        "Generates steady-engine queue states from the Splitwise conversation trace (synthetic "
        "queues when the shared data is absent), runs the shipped heuristics and the exact "
        "CP-SAT solver on each on two worker processes, stores every result in a DuckDB file, "
        "then reads it with pandas and draws the report's plots. Small on purpose (well under "
        "a minute); `make demo` runs the same pipeline on a few hundred problems."
    ),
    new_code_cell(
        "import tempfile\n"
        "from pathlib import Path\n\n"
        "from stepopt.scenarios import GenerateOptions, default_presets, generate\n"
        "from stepopt.testing.data import shared_data_dir\n\n"
        "work = Path(tempfile.mkdtemp(prefix='gap_study_'))\n"
        "data = shared_data_dir()\n"
        "csv = None if data is None else data / 'vidur/data/processed_traces/splitwise_conv.csv'\n"
        "source = f'trace:{csv}' if csv is not None and csv.is_file() else 'synthetic'\n"
        "presets = default_presets()\n"
        "opts = GenerateOptions(count=24, seed=0, presets=presets, concurrency=16, max_waiting=16)\n"
        "records = generate(source, opts, work / 'problems')\n"
        "print(source.split('/')[-1], presets, len(records), 'problems')"
    ),
    new_markdown_cell(
        "Each problem's knobs (regime, load, target factor, ...) are in `manifest.json`; the "
        "runner copies them into every result row so that reports can break results down."
    ),
    new_code_cell(
        "import pandas as pd\n\n"
        "pd.DataFrame(records)[['file', 'regime', 'objective', 'priority_mode', 'load', "
        "'queue_size', 'target_ms', 'target_factor']].head(8)"
    ),
    new_markdown_cell(
        "Run the study: every heuristic and CP-SAT (0.5 s per problem) on every problem, "
        "judged by the evaluator. Running the cell again finds every row stored and does nothing."
    ),
    new_code_cell(
        "from stepopt.studies import StudyConfig, run_study\n\n"
        "cfg = StudyConfig(problems=work / 'problems', db=work / 'study.duckdb', workers=2, "
        "time_limit=0.5)\n"
        "run_study(cfg).to_dict()"
    ),
    new_markdown_cell(
        "One row per (problem, algorithm): status, latency, objective, the gap to the proven "
        "optimum (`gap`, only where CP-SAT proved it), the gap to its bound otherwise "
        "(`gap_bound`), times, and the dimensions."
    ),
    new_code_cell(
        "from stepopt.studies import load_dataframe\n\n"
        "df = load_dataframe(cfg.db)\n"
        "df[['algorithm', 'objective', 'regime', 'status', 'feasible', 'latency_ms', "
        "'target_ms', 'gap', 'gap_kind', 'decision_ms']].head(8)"
    ),
    new_code_cell(
        "heur = df[df.kind == 'heuristic']\n"
        "heur.pivot_table(index='algorithm', columns='objective', values='gap', "
        "aggfunc=['mean', 'max']).round(4)"
    ),
    new_markdown_cell("The report: the JSON summary as a table, then the three plots."),
    new_code_cell(
        "from stepopt.studies import write_report\n\n"
        "doc = write_report(cfg.db, work / 'report', by='regime')\n"
        "pd.DataFrame(doc['summary'])[['heuristic', 'objective', 'count', "
        "'share_proven_optimal', 'share_feasible', 'gap_mean', 'gap_p95', 'gap_max', "
        "'decision_ms_median', 'solve_ms_median']]"
    ),
    new_code_cell(
        "from IPython.display import Image, display\n\n"
        "for name in ('gap_cdf.png', 'performance_profile.png', 'gap_vs_load.png'):\n"
        "    display(Image(filename=str(work / 'report' / name)))"
    ),
]


def main() -> None:
    write_notebook(CELLS, "gap_study.ipynb")


if __name__ == "__main__":
    main()
