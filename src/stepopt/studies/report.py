"""Summaries of a study database: per (algorithm, objective) and broken down by a dimension.

Gaps are against the exact optimum only where the solver proved it (``gap_kind = 'optimal'``)
or, for ``target``, proved |L - T| within the study's ``target_tolerance_ns`` of it
(``gap_kind = 'within_tolerance'``: the gap is exact to within that many ns / T; counted apart).
Where it stopped at the time limit with a solution (FEASIBLE) the gap is taken against its
bound (``gap_bound``, an upper estimate of the true gap) and against its solution
(``gap_incumbent``, a lower estimate), reported apart, flagged. A
heuristic decision that breaks a rule (including ``L > T`` under ``goodput``) is a violation,
never a gap.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from stepopt.errors import InputError
from stepopt.studies.worker import GAP_KINDS, reference_class

EPS = 1e-9
DIMENSION_COLUMNS = {
    "load": "load",
    "queue_size": "queue_size",
    "preset": "preset",
    "target": "target_ms",
    "target_factor": "target_factor",
    "regime": "regime",
    "priority_mode": "priority_mode",
    "source": "source",
    "budget": "budget",
}
_FIXED_BINS = {
    "load": (0.5, 0.8, 1.0),
    "queue_size": (17, 33, 65, 129),
    "target_factor": (1.0, 1.2, 1.4),
}


LATEST, ALL = "latest", "all"


def select_rows(rows: list[dict[str, Any]], settings: str = LATEST) -> list[dict[str, Any]]:
    """The rows of one (solver settings, version) run of the study.

    ``latest``: the combination written last (a database may hold reruns with another time
    limit or release); ``all``: every row; otherwise the rows whose ``settings`` equal it.
    """
    if settings == ALL or not rows:
        return rows
    if settings == LATEST:
        last: dict[tuple[str, str], Any] = {}
        for r in rows:
            key = (r["settings"], r["version"])
            t = r.get("created_at")
            if key not in last or (t is not None and (last[key] is None or t > last[key])):
                last[key] = t
        pick = max(last, key=lambda k: (last[k] is not None, last[k] or 0))
        return [r for r in rows if (r["settings"], r["version"]) == pick]
    chosen = [r for r in rows if r["settings"] == settings]
    if not chosen:
        valid = sorted({r["settings"] for r in rows})
        raise InputError(
            "settings", f"no rows with these settings; stored: {'; '.join(valid)}", settings
        )
    return chosen


def _q(values: list[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None


def _median(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.median(vals)) if vals else None


def _stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(rows)
    gaps = [r["gap"] for r in rows if r["gap_kind"] in GAP_KINDS and r["gap"] is not None]
    igaps = [
        r["gap_incumbent"]
        for r in rows
        if r["gap_kind"] == "bound" and r.get("gap_incumbent") is not None
    ]
    bgaps = [
        r["gap_bound"] for r in rows if r["gap_kind"] == "bound" and r["gap_bound"] is not None
    ]
    ref = Counter(reference_class(r) for r in rows)
    rules = Counter(
        rule
        for r in rows
        if r["gap_kind"] == "violation"
        for rule in (r["violations"] or "").split(",")
        if rule
    )
    return {
        "count": n,
        # Matched the reference (or beat one that is only within the tolerance).
        "share_proven_optimal": (sum(1 for g in gaps if g <= EPS) / n) if n else None,
        "share_feasible": (sum(1 for r in rows if r["feasible"]) / n) if n else None,
        "gap_mean": float(np.mean(gaps)) if gaps else None,
        "gap_median": _q(gaps, 0.5),
        "gap_p95": _q(gaps, 0.95),
        "gap_max": max(gaps) if gaps else None,
        "gap_min": min(gaps) if gaps else None,
        "decision_ms_median": _median(r["decision_ms"] for r in rows),
        "solve_ms_median": _median(r["solve_ms"] for r in rows),
        "count_gap": len(gaps),
        "count_reference_optimal": ref["exact"],
        "count_reference_within_tolerance": ref["within_tolerance"],
        "count_reference_unproven": ref["unproven"],
        "count_reference_missing": ref["missing"],
        "share_reference_exact": ref["exact"] / n if n else None,
        "share_reference_within_tolerance": ref["within_tolerance"] / n if n else None,
        "count_violation": sum(1 for r in rows if r["gap_kind"] == "violation"),
        "count_error": sum(1 for r in rows if r.get("status") == "ERROR"),
        "first_error": next((r.get("message") for r in rows if r.get("status") == "ERROR"), None),
        "count_preempted": sum(1 for r in rows if r["gap_kind"] == "preemption"),
        "violation_rules": dict(rules.most_common()),
        "gap_bound_median": _q(bgaps, 0.5),
        "gap_bound_max": max(bgaps) if bgaps else None,
        "gap_incumbent_median": _q(igaps, 0.5),
        "gap_incumbent_max": max(igaps) if igaps else None,
    }


def _order(rows: list[dict[str, Any]]) -> Callable[[tuple[str, str]], tuple[int, str, str]]:
    kinds = {r["algorithm"]: r["kind"] for r in rows}

    def key(k: tuple[str, str]) -> tuple[int, str, str]:
        return (1 if kinds.get(k[0]) == "exact" else 0, k[1], k[0])

    return key


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One object per (algorithm, objective): heuristics first, then the exact solver."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["algorithm"], r["objective"])].append(r)
    out = []
    for key in sorted(groups, key=_order(rows)):
        g = groups[key]
        out.append({"heuristic": key[0], "objective": key[1], "kind": g[0]["kind"], **_stats(g)})
    return out


def _bin_labels(dim: str, values: list[Any]) -> Callable[[Any], tuple[int, str]]:
    """A function from a value to (sort index, bin label); numeric dimensions are binned."""
    nums = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    if dim not in _FIXED_BINS and (len(nums) < len(values) or len(set(nums)) <= 6):
        return lambda v: (0, "-" if v is None else str(v))
    if dim in _FIXED_BINS:
        edges = list(_FIXED_BINS[dim])
    else:
        edges = sorted({float(f"{x:.3g}") for x in np.quantile(nums, [0.25, 0.5, 0.75])})

    def label(v: Any) -> tuple[int, str]:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return (len(edges) + 1, "-")
        k = sum(1 for e in edges if v >= e)
        if k == 0:
            return (k, f"<{edges[0]:g}")
        if k == len(edges):
            return (k, f">={edges[-1]:g}")
        return (k, f"{edges[k - 1]:g}-{edges[k]:g}")

    return label


def breakdown(rows: list[dict[str, Any]], dimension: str) -> list[dict[str, Any]]:
    """Stats per (algorithm, objective, bin of ``dimension``)."""
    if dimension not in DIMENSION_COLUMNS:
        raise InputError(
            "by", f"unknown dimension; valid: {', '.join(DIMENSION_COLUMNS)}", dimension
        )
    col = DIMENSION_COLUMNS[dimension]
    label = _bin_labels(dimension, [r.get(col) for r in rows])
    groups: dict[tuple[str, str, tuple[int, str]], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["algorithm"], r["objective"], label(r.get(col)))].append(r)
    order = _order(rows)
    out = []
    for key in sorted(groups, key=lambda k: (*order((k[0], k[1])), k[2])):
        s = _stats(groups[key])
        out.append(
            {
                "heuristic": key[0],
                "objective": key[1],
                dimension: key[2][1],
                **{
                    k: s[k]
                    for k in (
                        "count",
                        "share_proven_optimal",
                        "share_feasible",
                        "gap_mean",
                        "gap_p95",
                        "gap_max",
                        "count_gap",
                    )
                },
            }
        )
    return out


def where_it_loses(rows: list[dict[str, Any]], algorithm: str, top: int = 3) -> list[str]:
    """Sentences naming the regimes where ``algorithm`` is worst (mean gap, then violations)."""
    lines = []
    for objective in sorted({r["objective"] for r in rows if r["algorithm"] == algorithm}):
        sub = [r for r in rows if r["algorithm"] == algorithm and r["objective"] == objective]
        per = breakdown(sub, "regime")
        per = [p for p in per if p["count"]]
        per.sort(key=lambda p: (-(p["gap_mean"] or 0.0), p["share_feasible"] or 0.0))
        parts = []
        for p in per[:top]:
            mean = "n/a" if p["gap_mean"] is None else f"{100 * p['gap_mean']:.2f} %"
            parts.append(
                f"{p['regime']} (mean gap {mean}, optimal in "
                f"{100 * (p['share_proven_optimal'] or 0):.0f} %, feasible in "
                f"{100 * (p['share_feasible'] or 0):.0f} % of {p['count']})"
            )
        if parts:
            lines.append(f"{algorithm}, {objective}: worst in " + "; ".join(parts))
    return lines


def worst_bins(
    rows: list[dict[str, Any]],
    algorithm: str,
    objective: str,
    dims: tuple[str, ...] = ("load", "queue_size", "priority_mode"),
) -> str:
    """The bin with the largest mean gap along each of ``dims``, as one phrase."""
    sub = [r for r in rows if r["algorithm"] == algorithm and r["objective"] == objective]
    parts = []
    for dim in dims:
        per = [p for p in breakdown(sub, dim) if p["gap_mean"] is not None]
        if len(per) < 2:
            continue
        w = max(per, key=lambda p: p["gap_mean"])
        best = min(per, key=lambda p: p["gap_mean"])
        parts.append(
            f"{dim} {w[dim]} (mean {100 * w['gap_mean']:.2f} % vs "
            f"{100 * best['gap_mean']:.2f} % at {best[dim]})"
        )
    return "; ".join(parts)


def largest_gaps(rows: list[dict[str, Any]], algorithm: str, n: int = 3) -> list[str]:
    """The ``n`` problems with the largest gap to a proven optimum, with what to look at."""
    exact = {r["problem_hash"]: r for r in rows if r["kind"] == "exact"}
    mine = [r for r in rows if r["algorithm"] == algorithm and r["gap_kind"] in GAP_KINDS]
    mine.sort(key=lambda r: -r["gap"])
    out = []
    for r in mine[:n]:
        if r["gap"] <= EPS:
            break
        ref = exact.get(r["problem_hash"], {})
        lat = ref.get("latency_ms")
        ref_lat = "?" if lat is None else f"{lat:.2f}"
        out.append(
            f"`{r.get('problem_file')}` ({r['objective']}, {r.get('regime')}, load "
            f"{fmt_value(r.get('load'))}, {r.get('priority_mode')}): gap {100 * r['gap']:.2f} %, "
            f"L = {r['latency_ms']:.2f} ms with {r['scheduled_tokens']} tokens vs "
            f"{ref_lat} ms with {ref.get('scheduled_tokens', '?')} at the optimum, "
            f"T = {r['target_ms']:.2f} ms"
        )
    return out


def fmt_value(v: Any, pct: bool = False) -> str:
    """A table cell: "-" for none, floats to 3 digits (or as a percentage)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{100 * v:.2f} %" if pct else f"{v:.3g}"
    return str(v)


def study_info(rows: list[dict[str, Any]]) -> dict[str, Any]:
    exact = [r for r in rows if r["kind"] == "exact"]
    status = Counter(r["status"] for r in exact)
    refs = Counter(reference_class(r) for r in exact)
    within = [r["ref_proven_within_ns"] for r in exact if reference_class(r) == "within_tolerance"]
    return {
        "problems": len({r["problem_hash"] for r in rows}),
        "rows": len(rows),
        "settings": sorted({r["settings"] for r in rows}),
        "versions": sorted({r["version"] for r in rows}),
        "reference_status": dict(status.most_common()),
        "reference_exact": refs["exact"],
        "reference_within_tolerance": refs["within_tolerance"],
        "reference_unproven": refs["unproven"] + refs["missing"],
        "target_tolerance_ns": sorted({r.get("target_tolerance_ns") or 0 for r in rows}),
        "max_proven_within_ns": max(within) if within else None,
        "presets": sorted({r["preset"] for r in rows if r["preset"]}),
    }


def tolerance_sentence(info: dict[str, Any]) -> str:
    """How exact the gaps are, in words (from :func:`study_info`)."""
    tol = max(info["target_tolerance_ns"] or [0])
    n = info["reference_within_tolerance"]
    if not n:
        return f"{info['reference_exact']} reference(s) proven optimal exactly; " + (
            f"target tolerance {tol / 1000:g} us, not needed." if tol else "no tolerance."
        )
    return (
        f"{info['reference_exact']} reference(s) proven optimal exactly, {n} `target` "
        f"reference(s) proven within the {tol / 1000:g} us tolerance (largest proven distance "
        f"{info['max_proven_within_ns'] / 1000:g} us): their gaps are exact to within "
        f"{tol / 1000:g} us / T (at most {tol / 1000:g} us / T too small; a heuristic may show a "
        "gap down to that much below 0)."
    )
