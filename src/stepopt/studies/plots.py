"""Study plots as PNG (matplotlib, an optional extra, imported lazily).

- ``gap_cdf.png``: share of problems with relative gap <= x, per heuristic and objective, over
  the problems with a proven optimum (exactly, or within the study's target tolerance);
  violations count as an infinite gap, so a curve tops out
  at the share of feasible decisions.
- ``performance_profile.png``: Dolan-Moré profiles. Quality: cost ``1 + gap`` against the best
  algorithm on the problem (the exact optimum, cost 1); time: decision time over the fastest
  algorithm on the problem. ``rho(tau)`` = share of problems within a factor ``tau`` of the best.
- ``gap_vs_load.png``: relative gap against the load of the state, with the mean per load bin.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from stepopt.errors import MissingExtraError
from stepopt.studies.worker import GAP_KINDS, reference_class


def _plt():
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError("matplotlib", "plot", "study plots") from None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _objectives(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["objective"] for r in rows})


def _heuristics(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["algorithm"] for r in rows if r["kind"] == "heuristic"})


def _colors(rows: list[dict[str, Any]]) -> dict[str, str]:
    """One colour per algorithm, the same in every plot."""
    return {a: f"C{k % 10}" for k, a in enumerate(sorted({r["algorithm"] for r in rows}))}


def _proven(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose reference gives gaps: proven optimal, or within the study's tolerance."""
    return [r for r in rows if reference_class(r) in ("exact", "within_tolerance")]


def gap_cdf(rows: list[dict[str, Any]], path: Path) -> Path:
    plt = _plt()
    objs = _objectives(rows)
    colors = _colors(rows)
    fig, axes = plt.subplots(1, len(objs), figsize=(5.5 * len(objs), 4), squeeze=False)
    for ax, obj in zip(axes[0], objs, strict=True):
        sub = _proven([r for r in rows if r["objective"] == obj])
        for h in _heuristics(sub):
            rs = [r for r in sub if r["algorithm"] == h]
            gaps = np.sort([r["gap"] if r["gap_kind"] in GAP_KINDS else np.inf for r in rs])
            finite = gaps[np.isfinite(gaps)]
            if not len(rs):
                continue
            y = np.arange(1, len(finite) + 1) / len(rs)
            xs = np.concatenate([[0.0], np.maximum(finite, 0.0)])
            ax.step(xs, np.concatenate([[0.0], y]), where="post", label=h, color=colors[h])
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("relative gap to the proven optimum")
        ax.set_ylabel("share of problems")
        ax.set_title(f"gap CDF ({obj}; violations never reach it)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _profile(
    ax, costs: dict[str, list[float]], xlabel: str, title: str, colors: dict[str, str]
) -> None:
    """``costs[alg][p]``: cost of alg on problem p (inf = failed), same problem order."""
    algs = sorted(costs)
    if not algs:
        return
    mat = np.array([costs[a] for a in algs], dtype=float)
    best = np.min(mat, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(np.isfinite(mat), mat / best, np.inf)
    finite = ratio[np.isfinite(ratio)]
    top = max(2.0, float(finite.max()) * 1.1) if finite.size else 2.0
    taus = np.geomspace(1.0, top, 300)
    for a, row in zip(algs, ratio, strict=True):
        rho = [(row <= t).mean() for t in taus]
        ax.step(taus, rho, where="post", label=a, color=colors.get(a))
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of problems within tau of the best")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def performance_profile(rows: list[dict[str, Any]], path: Path) -> Path:
    plt = _plt()
    objs = _objectives(rows)
    colors = _colors(rows)
    fig, axes = plt.subplots(2, len(objs), figsize=(5.5 * len(objs), 8), squeeze=False)
    for j, obj in enumerate(objs):
        sub = [r for r in rows if r["objective"] == obj]
        by_prob: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for r in sub:
            by_prob[r["problem_hash"]][r["algorithm"]] = r
        algs = sorted({r["algorithm"] for r in sub})
        probs = [p for p, d in by_prob.items() if len(d) == len(algs)]
        quality: dict[str, list[float]] = {a: [] for a in algs}
        timing: dict[str, list[float]] = {a: [] for a in algs}
        for p in probs:
            d = by_prob[p]
            proven = bool(_proven([next(iter(d.values()))]))
            for a in algs:
                r = d[a]
                timing[a].append(max(r["decision_ms"] or 0.0, 1e-3))
                if proven:
                    ok = r["gap_kind"] in GAP_KINDS and r["gap"] is not None
                    quality[a].append(1.0 + max(r["gap"], 0.0) if ok else np.inf)
        _profile(
            axes[0][j], quality, "tau (cost 1 + relative gap)", f"quality profile ({obj})", colors
        )
        _profile(axes[1][j], timing, "tau (decision time ratio)", f"time profile ({obj})", colors)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def gap_vs_load(rows: list[dict[str, Any]], path: Path) -> Path:
    plt = _plt()
    objs = _objectives(rows)
    colors = _colors(rows)
    fig, axes = plt.subplots(1, len(objs), figsize=(5.5 * len(objs), 4), squeeze=False)
    for ax, obj in zip(axes[0], objs, strict=True):
        sub = [r for r in rows if r["objective"] == obj and r["gap_kind"] in GAP_KINDS]
        for h in _heuristics(sub):
            rs = [r for r in sub if r["algorithm"] == h and r["load"] is not None]
            if not rs:
                continue
            x = np.array([r["load"] for r in rs], dtype=float)
            y = np.array([r["gap"] for r in rs], dtype=float)
            color = colors[h]
            ax.scatter(x, y, s=8, alpha=0.35, color=color)
            edges = np.linspace(x.min(), x.max() + 1e-9, 7)
            mids, means = [], []
            for lo, hi in itertools.pairwise(edges):
                m = (x >= lo) & (x < hi)
                if m.any():
                    mids.append((lo + hi) / 2)
                    means.append(y[m].mean())
            ax.plot(mids, means, color=color, label=f"{h} (mean per bin)")
        ax.set_xlabel("load (utilization of the engine; demand ratio for plain files)")
        ax.set_ylabel("relative gap to the proven optimum")
        ax.set_title(f"gap against load ({obj})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(rows: list[dict[str, Any]], out_dir: str | Path) -> list[str]:
    """Write the three PNGs into ``out_dir``; returns their file names."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = []
    for fn, name in (
        (gap_cdf, "gap_cdf.png"),
        (performance_profile, "performance_profile.png"),
        (gap_vs_load, "gap_vs_load.png"),
    ):
        fn(rows, out / name)
        names.append(name)
    return names
