"""Writes horizon.ipynb without outputs.

python notebooks/build_horizon.py
"""

from _write import write_notebook
from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# The regret of per-step schedulers against the hindsight optimum\n\n"
        "Replays the Splitwise conversation trace (Poisson arrivals at 10 req/s) under "
        "three-stage, cuts four 8-step windows (the simulator's state at each cut is the start "
        "state), solves each window exactly with CP-SAT and replays three-stage and vllm-v1 "
        "from the same start state on the same arrivals. Small on purpose (8 requests per "
        "window, 3 s per solve): `stepopt horizon` runs the same pipeline at scale."
    ),
    new_code_cell(
        "import tempfile\n"
        "from dataclasses import replace\n"
        "from pathlib import Path\n\n"
        "from stepopt.horizon import Slo\n"
        "from stepopt.horizon.files import save_window\n"
        "from stepopt.horizon.windows import cut_windows, without_prefill_attention\n"
        "from stepopt.latency.presets import load_preset\n"
        "from stepopt.model import EngineConfig\n"
        "from stepopt.simulate.trace import load_trace\n"
        "from stepopt.testing.data import shared_data_dir\n\n"
        "work = Path(tempfile.mkdtemp(prefix='horizon_'))\n"
        "csv = shared_data_dir() / 'vidur/data/processed_traces/splitwise_conv.csv'\n"
        "trace = load_trace(csv, rate=10).cut(300, None)\n"
        "latency = without_prefill_attention(load_preset('a100/llama-2-7b/tp1'))\n"
        "slo = Slo(ttft_ms=200, tbt_ms=30)\n"
        "windows = cut_windows(trace, latency, EngineConfig(512, 8, 0, 64, 16, None), slo, 8,\n"
        "                      count=4, first=60, every=30)\n"
        "files = []\n"
        "for w in windows:\n"
        "    w = replace(w, requests=w.requests[:8])\n"
        "    files.append(work / f'{w.name}.json')\n"
        "    save_window(w, files[-1])\n"
        "    print(files[-1].name, len(w.requests), 'requests')"
    ),
    new_markdown_cell(
        "Solve every window and replay the policies: one row per (window, algorithm) in a "
        "DuckDB file (the table `horizon`, beside a gap study's `results`). Running the cell "
        "again finds the rows stored and does nothing."
    ),
    new_code_cell(
        "import pandas as pd\n\n"
        "from stepopt.horizon.study import horizon_rows, run_horizon_study\n\n"
        "db = work / 'horizon.duckdb'\n"
        "print(run_horizon_study(files, db, ['three-stage', 'vllm-v1'], time_limit=3))\n"
        "rows = pd.DataFrame(horizon_rows(db))\n"
        "rows[['window_file', 'algorithm', 'status', 'slo_met_weighted', 'slo_bound', 'regret',\n"
        "      'tokens', 'ttft_p99_ms']].assign(window_file=rows.window_file.map(lambda p: "
        "Path(p).stem))"
    ),
    new_markdown_cell(
        "The regret report: SLOs each policy leaves on the table per window, against the "
        "optimum (and against the bound where a window is not proven), the distribution, "
        "and the worst windows with the commands to inspect them."
    ),
    new_code_cell(
        "from stepopt.horizon.report import regret_plot, regret_summary\n\n"
        "summary = regret_summary(horizon_rows(db))\n"
        "for name, p in summary['policies'].items():\n"
        "    print(f\"{name:12s} regret mean {p['regret_mean']:.2f}  max {p['regret_max']}  \"\n"
        "          f\"windows with regret {p['windows_with_regret']}/{p['windows']}\")\n"
        "for w in summary['worst'][:3]:\n"
        "    print(w['algorithm'], 'lost', w['regret'], '->', w['commands'][0])\n"
        "regret_plot(summary, work / 'regret.png')\n"
        "assert all(r is None or r >= 0 for r in rows.regret)  # nothing beats the incumbent"
    ),
]


def main() -> None:
    write_notebook(CELLS, "horizon.ipynb")


if __name__ == "__main__":
    main()
