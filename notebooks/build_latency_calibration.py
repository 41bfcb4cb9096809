"""Writes latency_calibration.ipynb without outputs.

python notebooks/build_latency_calibration.py
"""

from _write import write_notebook
from nbformat.v4 import new_code_cell, new_markdown_cell

CELLS = [
    new_markdown_cell(
        "# Calibrating the step latency model on real GPU profiles\n\n"
        "Loads Vidur's profile of CodeLlama-34B on two A100s (TP 2), fits the piecewise-linear "
        "latency model, plots it against the measured points, checks it on held-out mixed "
        "batches and shows the online refit. Needs the shared data folder "
        "(`../shared/data` next to the repository, or `STEPOPT_SHARED_DATA`)."
    ),
    new_code_cell(
        "from stepopt.testing.data import shared_data_dir\n"
        "from stepopt.latency.profiles import load_profile\n"
        "from stepopt.latency.fit import LatencyFitter\n\n"
        "data = shared_data_dir()\n"
        "assert data is not None, 'shared data folder not found (set STEPOPT_SHARED_DATA)'\n"
        "profiling = data / 'vidur' / 'data' / 'profiling'\n"
        "profile = load_profile(profiling, 'a100', 'codellama-34b', 2)\n"
        "len(profile.mlp), len(profile.attention.decode), len(profile.attention.prefill)"
    ),
    new_markdown_cell(
        "Fit: breakpoints of the token curve chosen by dynamic programming over the measured "
        "token grid, attention by least squares on relative error. `fit` returns the fitter; "
        "fitted attributes end in `_`."
    ),
    new_code_cell(
        "fitter = LatencyFitter(max_segments=16).fit(profile)\n"
        "model = fitter.model_\n"
        "print('token breakpoints:', model.tokens.xs)\n"
        "print(f'held-out MAPE of the token-wise part: {fitter.holdout_mape_pct_:.2f} %')\n"
        "print('decode attention ps per context token:', model.decode_context_ps)\n"
        "print('prefill alpha, beta, linear (ns):', model.prefill.alpha_ns, "
        "model.prefill.beta_ns, model.prefill.linear_ns, '| kernel:', fitter.kernel_)\n"
        "att = fitter.attention_fit_\n"
        "print(f'prefill attention held-out MAPE, no cached tokens: "
        "{att.prefill_nocache_holdout_mape_pct_:.2f} %')"
    ),
    new_code_cell(
        "%matplotlib inline\n"
        "from stepopt.latency.plot import plot_fit\n\n"
        "fig = plot_fit(model, profile)"
    ),
    new_markdown_cell(
        "Mixed batches built from held-out attention rows, against the sum of measured medians "
        "(how Vidur composes a step)."
    ),
    new_code_cell(
        "from stepopt.latency.quality import batches_mape_pct, mixed_batches\n\n"
        "batches = mixed_batches(profile, fitter, n=300, seed=0)\n"
        "print(f'mixed-batch MAPE: {batches_mape_pct(batches):.2f} %')\n"
        "b = batches[0]\n"
        "print(b.decodes, 'decodes @', b.context, '+ chunks', b.chunks, '->', "
        "round(b.truth_ns / 1e6, 1), 'ms measured,', round(b.predicted_ns / 1e6, 1), 'ms model')"
    ),
    new_markdown_cell(
        "Online refit: a model that starts 20 % slow corrects itself from measured steps once "
        "its rolling error passes 5 %."
    ),
    new_code_cell(
        "import numpy as np\n"
        "from dataclasses import replace\n"
        "from stepopt.latency.pwl import PiecewiseLinear\n"
        "from stepopt.latency.online import OnlineLatencyModel, StepAggregates\n\n"
        "stale = replace(model, tokens=PiecewiseLinear(model.tokens.xs, "
        "tuple(int(y * 1.2) for y in model.tokens.ys)))\n"
        "online = OnlineLatencyModel(stale, threshold_pct=5.0)\n"
        "rng = np.random.default_rng(0)\n"
        "for _ in range(200):\n"
        "    d = int(rng.integers(1, 128)); c = int(rng.integers(64, 2048))\n"
        "    agg = StepAggregates(d + c, d + 1, d * 1000, ((c, 0, c),))\n"
        "    online.observe(agg, agg.predict_ns(model) * (1 + 0.01 * rng.standard_normal()))\n"
        "print('refits:', online.refits, ' rolling MAPE %:', round(online.rolling_mape_pct, 2))"
    ),
    new_markdown_cell(
        "Engine overhead: the kernels alone miss Sarathi-Serve's measured iterations (Yi-34B "
        "TP2 A100) by half on decode-only steps. The `sarathi-2024` profile (a step constant "
        "plus a per-request slope, added to the batch term) is fitted to them; here each row "
        "is predicted with the engine fitted on the other rows. The 256-token prefill is the "
        "first iteration of its run (a warm-up, no inter-batch delay): the class errors leave "
        "it out."
    ),
    new_code_cell(
        "from stepopt.latency import quality as q\n"
        "from stepopt.latency.presets import load_preset\n\n"
        "rows = q.sarathi_rows(load_preset('a100/codellama-34b/tp2'), data / 'sarathi-serve')\n"
        "print('fitted engine:', q.fit_engine(rows))\n"
        "print('warm-up rows:', [r.label for r in rows if r.warmup])\n"
        "for name, rs in (('kernels only', rows), ('leave-one-out', q.leave_one_out_rows(rows))):\n"
        "    errs = q.error_by_kind([r for r in rs if not r.warmup])\n"
        "    print(f'{name:>14}:', {k: round(v, 1) for k, v in errs.items()})"
    ),
    new_markdown_cell(
        "Prefill kernel: TensorRT-LLM builds with a fused FlashAttention-style context kernel. "
        "`with_prefill_kernel` gives a shipped preset FlashAttention-2's published efficiency "
        "(no data needed); its 2,048-token first-token latencies then fall within 10 %."
    ),
    new_code_cell(
        "from stepopt.latency.validation import trt_llm_figures\n\n"
        "for f in trt_llm_figures():\n"
        "    print(f'{f.what[:46]:<46} {f.kernel:<9} {f.measured:7.1f} {f.predicted:7.1f} '\n"
        "          f'{f.error_pct:+6.1f} %')"
    ),
    new_markdown_cell(
        "KV capacity: a preset knows its KV bytes per token and its GPU's memory, so it gives "
        "the KV blocks an engine would have at a memory share (vLLM's "
        "`gpu_memory_utilization`). It is an upper bound: vLLM also subtracts its activation "
        "peak and CUDA graphs, which it measures at start-up (pass its logged block count as "
        "`--kv-blocks`)."
    ),
    new_code_cell(
        "from stepopt.latency.capacity import default_num_free_blocks, kv_capacity\n\n"
        "small = load_preset('a100/llama-2-7b/tp1')\n"
        "print('KV bytes per token:', kv_capacity(small).kv_bytes_per_token)\n"
        "print('KV blocks of 16 tokens at 0.9:', default_num_free_blocks(small, 0.9))"
    ),
]


def main() -> None:
    write_notebook(CELLS, "latency_calibration.ipynb")


if __name__ == "__main__":
    main()
