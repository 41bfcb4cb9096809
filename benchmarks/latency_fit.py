"""Fit every latency preset from Vidur's profiles and print how well it fits.

    python benchmarks/latency_fit.py [--data DIR] [--write-presets]

Prints, per GPU/model/TP: token segments, held-out MAPE of the token-wise part (goal <= 2 %),
held-out MAPE of decode and prefill attention; then mixed batches against summed measured
medians on the two shapes with measured attention (goal <= 3 %); then the Sarathi-Serve
whole-iteration measurements (Yi-34B TP2 A100) against the closest preset, as they come out.
``--write-presets`` rewrites src/stepopt/latency/presets/<gpu>/<model>/tp<N>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from stepopt.latency.build import PRESET_DIR, preset_document, write_document
from stepopt.latency.fit import LatencyFitter
from stepopt.latency.profiles import available_combos, combo_name, load_profile
from stepopt.latency.quality import batches_mape_pct, mixed_batches, sarathi_rows
from stepopt.testing.data import shared_data_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data folder")
    parser.add_argument("--write-presets", action="store_true")
    parser.add_argument("--batches", type=int, default=1000, help="mixed batches per shape")
    args = parser.parse_args()
    root = args.data or shared_data_dir()
    if root is None:
        print("shared data not found; pass --data or set STEPOPT_SHARED_DATA", file=sys.stderr)
        return 2
    profiling = root / "vidur" / "data" / "profiling"

    print(
        f"{'preset':26} {'att':8} {'segs':>4} {'tok MAPE%':>9} {'dec MAPE%':>9} "
        f"{'pre MAPE%':>9} {'fit s':>6}"
    )
    fitted: dict[str, tuple] = {}
    times = []
    for combo in available_combos(profiling):
        t0 = time.perf_counter()
        profile = load_profile(profiling, *combo)
        fitter = LatencyFitter().fit(profile)
        times.append(time.perf_counter() - t0)
        fitted[profile.name] = (profile, fitter)
        att = fitter.attention_fit_
        print(
            f"{profile.name:26} {fitter.attention_:8} {fitter.report_.n_segments:4d} "
            f"{fitter.holdout_mape_pct_:9.2f} {att.decode_holdout_mape_pct_:9.2f} "
            f"{att.prefill_holdout_mape_pct_:9.2f} {times[-1]:6.2f}"
        )
        if args.write_presets:
            write_document(preset_document(fitter), PRESET_DIR / f"{combo_name(*combo)}.json")
    tok = [f.holdout_mape_pct_ for _, f in fitted.values()]
    print(
        f"\n{len(fitted)} presets; token-wise held-out MAPE median {statistics.median(tok):.2f} %,"
        f" max {max(tok):.2f} %, <= 2 %: {sum(t <= 2 for t in tok)}/{len(tok)}; "
        f"fit time median {statistics.median(times):.2f} s"
    )

    print("\nmixed batches vs summed measured medians (held-out attention rows)")
    for name in ("a100/codellama-34b/tp2", "a100/llama-2-70b/tp2"):
        profile, fitter = fitted[name]
        batches = mixed_batches(profile, fitter, n=args.batches, seed=0)
        err = np.array([(b.predicted_ns - b.truth_ns) / b.truth_ns * 100 for b in batches])
        print(
            f"  {name}: {len(batches)} batches, MAPE {batches_mape_pct(batches):.2f} %, "
            f"signed error p5/p50/p95 {np.percentile(err, 5):+.1f}/{np.median(err):+.1f}/"
            f"{np.percentile(err, 95):+.1f} %"
        )

    sarathi = root / "sarathi-serve"
    if sarathi.is_dir():
        name = "a100/codellama-34b/tp2"
        print(f"\nSarathi-Serve Yi-34B TP2 (A100 PCIe) vs preset {name} (48 layers, hidden 8192;")
        print("Yi-34B has 60 layers, hidden 7168); decode context assumed 1024")
        rows = sarathi_rows(fitted[name][1].model_, sarathi)
        for r in rows:
            print(
                f"  {r.kind:8} {r.label:36} measured {r.measured_ms:8.1f} ms  "
                f"predicted {r.predicted_ms:8.1f} ms  {r.error_pct:+6.1f} %"
            )
        for kind in ("prefill", "decode", "table-2", "chunked"):
            errs = [abs(r.error_pct) for r in rows if r.kind == kind]
            print(f"  {kind}: mean |error| {statistics.mean(errs):.1f} % over {len(errs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
