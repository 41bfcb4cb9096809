"""Figures for simulations and frontiers (matplotlib, the ``plot`` extra, imported lazily)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stepopt.errors import MissingExtraError


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError("matplotlib", "plot", "plotting") from None
    return plt


def _cdf(ax: Any, values: np.ndarray, label: str) -> None:
    v = np.sort(values[~np.isnan(values)])
    if len(v):
        ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=label)


def _legend_above_bars(ax: Any, top: float, ncol: int) -> None:
    """A one-row legend in a band above the tallest bar, so it never hides one."""
    ax.set_ylim(0, top * 1.3)
    ax.legend(fontsize=8, loc="upper center", ncol=ncol, frameon=False)


def plot_comparison(
    runs: Sequence[tuple[str, dict[str, np.ndarray], dict[str, Any]]], path: str | Path
) -> Path:
    """TTFT and per-request p99 TBT distributions, SLO attainment and goodput per policy.
    ``runs``: (policy, request columns, summary) triples."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    (ax_ttft, ax_tbt), (ax_att, ax_good) = axes
    for name, cols, _ in runs:
        _cdf(ax_ttft, cols["ttft_ms"], name)
        _cdf(ax_tbt, cols["tbt_p99_ms"], name)
    for ax, what in ((ax_ttft, "TTFT (ms)"), (ax_tbt, "per-request p99 TBT (ms)")):
        ax.set_xscale("log")
        ax.set_xlabel(what)
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    first = runs[0][2] if runs else {}
    if (slo := first.get("slo_ttft_ms")) is not None:
        ax_ttft.axvline(slo, color="k", ls="--", lw=0.8)
    if (slo := first.get("slo_tbt_ms")) is not None:
        ax_tbt.axvline(slo, color="k", ls="--", lw=0.8)
    names = [r[0] for r in runs]
    x = np.arange(len(names))
    keys = ("ttft_attainment", "tbt_attainment", "slo_attainment")
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        vals = [r[2].get(key) or 0.0 for r in runs]
        ax_att.bar(x + (k - 1) * width, vals, width, label=key.replace("_", " "))
    ax_att.set_xticks(x, names, rotation=20, fontsize=8)
    ax_att.set_ylabel("fraction of requests")
    _legend_above_bars(ax_att, 1.0, ncol=3)
    ax_att.set_yticks(np.linspace(0, 1, 6))  # fractions: no tick above 1 in the legend band
    thr = [r[2].get("throughput_rps") or 0.0 for r in runs]
    good = [r[2].get("goodput_rps") or 0.0 for r in runs]
    ax_good.bar(x - 0.2, thr, 0.4, label="throughput")
    ax_good.bar(x + 0.2, good, 0.4, label="goodput (both SLOs)")
    ax_good.set_xticks(x, names, rotation=20, fontsize=8)
    ax_good.set_ylabel("requests / s")
    _legend_above_bars(ax_good, max([*thr, *good, 1e-9]), ncol=2)
    fig.suptitle("simulated serving: " + ", ".join(names))
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def target_labels(points: Sequence[Any]) -> list[tuple[float, float, str]]:
    """One label per distinct (latency, tokens) position: targets that land on the same point
    share it (``T=20,30``) instead of being printed over each other."""
    at: dict[tuple[float, float], list[float]] = {}
    for p in points:
        at.setdefault((p.latency_ms, p.scheduled_tokens), []).append(p.target_ms)
    return [(x, y, "T=" + ",".join(f"{t:g}" for t in ts)) for (x, y), ts in at.items()]


def _label_targets(ax: Any, points: Sequence[Any]) -> None:
    # The exact points rise to the right: labels alternate between the upper left and the
    # lower right of their point, off the line and off their neighbours.
    for k, (x, y, text) in enumerate(sorted(target_labels(points))):
        upper = k % 2 == 0
        ax.annotate(
            text,
            (x, y),
            xytext=(-7, 5) if upper else (7, -5),
            textcoords="offset points",
            ha="right" if upper else "left",
            va="bottom" if upper else "top",
            fontsize=7,
        )


def plot_frontier(points: Sequence[Any], path: str | Path, title: str = "") -> Path:
    """Latency (x) against scheduled tokens (y): the exact points joined by target, each
    heuristic as its own markers, Pareto-optimal points circled."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5))
    by_algo: dict[str, list[Any]] = {}
    for p in points:
        if p.latency_ms is not None and p.scheduled_tokens is not None:
            by_algo.setdefault(p.algorithm, []).append(p)
    markers = "osD^v<>px*"
    for k, (name, pts) in enumerate(by_algo.items()):
        pts = sorted(pts, key=lambda p: p.target_ms)
        xs = [p.latency_ms for p in pts]
        ys = [p.scheduled_tokens for p in pts]
        exact = pts[0].kind == "exact"
        ax.plot(
            xs,
            ys,
            ls="-" if exact else "none",
            marker=markers[k % len(markers)],
            markersize=9 if exact else 6,
            label=name,
            alpha=0.8,
            zorder=2 if exact else 3,
        )
        if exact:
            _label_targets(ax, pts)
    par = [p for ps in by_algo.values() for p in ps if p.pareto]
    if par:
        ax.scatter(
            [p.latency_ms for p in par],
            [p.scheduled_tokens for p in par],
            s=160,
            facecolors="none",
            edgecolors="k",
            label="Pareto-optimal",
        )
    ax.set_xlabel("step latency (ms), lower is better")
    ax.set_ylabel("scheduled tokens, higher is better")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "latency / throughput frontier of one step")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
