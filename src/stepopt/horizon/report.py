"""The regret report: how many SLOs each per-step policy leaves on the table per window,
against the window optimum (and its bound where the optimum is not proven)."""

from __future__ import annotations

import shlex
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np


def regret_summary(rows: list[dict[str, Any]], worst: int = 5) -> dict[str, Any]:
    """Per policy: windows, proven windows, regret mean/median/max and its distribution, SLO
    attainment and latency percentiles beside the optimum's; the worst windows."""
    by_alg: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_alg[r["algorithm"]].append(r)
    opt = {r["window_hash"]: r for r in by_alg.pop("optimum", [])}
    out: dict[str, Any] = {
        "windows": len(opt),
        "proven": sum(1 for r in opt.values() if r["status"] == "OPTIMAL"),
        "optimum": _means(list(opt.values())),
        "policies": {},
        "worst": [],
    }
    worst_rows = []
    for alg, rs in sorted(by_alg.items()):
        reg = np.array([r["regret"] for r in rs if r["regret"] is not None], dtype=float)
        regb = np.array([r["regret_bound"] for r in rs if r["regret_bound"] is not None])
        out["policies"][alg] = {
            "windows": len(rs),
            "errors": sum(1 for r in rs if r["status"] != "OK"),
            "regret_mean": float(reg.mean()) if len(reg) else None,
            "regret_median": float(np.median(reg)) if len(reg) else None,
            "regret_max": int(reg.max()) if len(reg) else None,
            "regret_bound_mean": float(regb.mean()) if len(regb) else None,
            "windows_with_regret": int((reg > 0).sum()),
            "distribution": dict(sorted(Counter(int(x) for x in reg).items())),
            **_means(rs),
        }
        worst_rows += [r for r in rs if (r["regret"] or 0) > 0]
    worst_rows.sort(key=lambda r: (-(r["regret"] or 0), r["window_file"], r["algorithm"]))
    for r in worst_rows[:worst]:
        f = shlex.quote(str(r["window_file"]))
        out["worst"].append(
            {
                "window_file": r["window_file"],
                "algorithm": r["algorithm"],
                "regret": r["regret"],
                "optimum": r["opt_slo_met_weighted"],
                "policy": r["slo_met_weighted"],
                "commands": [
                    f"stepopt horizon solve {f}",
                    f"stepopt horizon replay {f} --policy {shlex.quote(r['algorithm'])}",
                ],
            }
        )
    return out


def _means(rs: list[dict[str, Any]]) -> dict[str, Any]:
    def mean(key: str) -> float | None:
        v = [r[key] for r in rs if r.get(key) is not None]
        return float(np.mean(v)) if v else None

    return {
        "slo_attainment_mean": mean("slo_attainment"),
        "slo_met_mean": mean("slo_met_weighted"),
        "tokens_mean": mean("tokens"),
        "ttft_p50_ms_mean": mean("ttft_p50_ms"),
        "ttft_p99_ms_mean": mean("ttft_p99_ms"),
        "tbt_p99_p50_ms_mean": mean("tbt_p99_p50_ms"),
    }


def regret_plot(summary: dict[str, Any], path: Path) -> None:
    """Bars of the regret distribution (windows per number of SLOs lost), one per policy."""
    from stepopt.simulate.plot import _pyplot  # the lazy import with its clear message

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    pols = list(summary["policies"])
    width = 0.8 / max(len(pols), 1)
    for j, p in enumerate(pols):
        dist = summary["policies"][p]["distribution"]
        xs = np.array(list(dist), dtype=float) + (j - (len(pols) - 1) / 2) * width
        ax.bar(xs, list(dist.values()), width=width, label=p)
    ax.set_xlabel("SLOs lost against the window optimum (regret)")
    ax.set_ylabel("windows")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def save_worst(summary: dict[str, Any], rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """For each worst window: a copy of the window file, the optimum's and the policy's plans,
    and the commands that replay them (``commands.sh``)."""
    import json
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    plans = {(r["window_file"], r["algorithm"]): r["plan"] for r in rows}
    written = []
    lines = ["# the worst windows: solve the optimum, replay the policy"]
    for k, wr in enumerate(summary["worst"], start=1):
        src = Path(wr["window_file"])
        stem = f"{k:02d}-{src.stem}-{wr['algorithm']}".replace("/", "-")
        dst = out / f"{stem}.window.json"
        if src.is_file():
            shutil.copyfile(src, dst)
        for alg, name in (("optimum", "optimum"), (wr["algorithm"], "policy")):
            plan = plans.get((wr["window_file"], alg))
            if plan is not None:
                (out / f"{stem}.{name}-plan.json").write_text(
                    json.dumps(json.loads(plan), indent=1) + "\n"
                )
        q = shlex.quote(str(dst))
        lines += [
            f"# {wr['algorithm']} lost {wr['regret']} SLOs ({wr['policy']} vs {wr['optimum']})",
            f"stepopt horizon solve {q}",
            f"stepopt horizon replay {q} --policy {shlex.quote(wr['algorithm'])}",
        ]
        written.append(dst)
    (out / "commands.sh").write_text("\n".join(lines) + "\n")
    return written
