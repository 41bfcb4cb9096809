"""SLO-driven engine tuning: sweep vLLM's scheduler knobs by trace replay, keep the Pareto front.

For every combination of token budget (``max_num_batched_tokens``), ``max_num_seqs`` and
long-prefill threshold, the trace is replayed in the simulator under the ``vllm-v1`` policy
(vLLM's own scheduling rule) with the chosen latency preset and engine profile; each run gives
its output throughput and its SLO attainment (share of requests meeting the TTFT and per-request
p99 TBT SLOs). The recommendation is the highest-throughput point whose attainment reaches the
goal (or, if none does, the most attaining one), printed as vLLM flags and as a stepopt config.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from stepopt.errors import InputError, UnknownNameError


@dataclass(frozen=True)
class TuneSpec:
    preset: str
    engine: str = "none"
    kernel: str | None = None  # prefill attention kernel; None: the preset's own
    slo_tbt_ms: float | None = None
    slo_ttft_ms: float | None = None
    budgets: tuple[int, ...] = (256, 512, 1024, 2048, 4096, 8192)
    max_seqs: tuple[int, ...] = (64, 128, 256)
    thresholds: tuple[int, ...] = (0,)
    attainment_goal: float = 0.9
    memory_share: float = 0.9
    kv_blocks: int | None = None  # total KV blocks; None: sized from the preset at memory_share
    block_size: int = 16
    policy: str = "vllm-v1"

    def __post_init__(self) -> None:
        if self.slo_tbt_ms is None and self.slo_ttft_ms is None:
            raise InputError("slo", "give a TBT and/or a TTFT SLO (--slo-tbt-ms, --slo-ttft-ms)")
        for name in ("slo_tbt_ms", "slo_ttft_ms"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise InputError(name, "must be > 0", v)
        if not 0 < self.attainment_goal <= 1:
            raise InputError("attainment", "must be in (0, 1]", self.attainment_goal)
        for name in ("budgets", "max_seqs"):
            values = getattr(self, name)
            if not values or any(v < 1 for v in values):
                raise InputError(name, "needs positive integers", list(values))
        if any(t < 0 for t in self.thresholds):
            raise InputError("thresholds", "must be >= 0", list(self.thresholds))
        if not 0 < self.memory_share <= 1:
            raise InputError("gpu_memory_share", "must be in (0, 1]", self.memory_share)
        if self.kv_blocks is not None and self.kv_blocks < 1:
            raise InputError("kv_blocks", "must be >= 1", self.kv_blocks)

    def latency(self) -> Any:
        """The preset with the kernel and engine profile (unknown names fail here)."""
        from stepopt.latency.engine import load_engine
        from stepopt.latency.presets import load_preset, preset_names, with_kernel

        if self.preset not in preset_names():
            raise UnknownNameError("preset", self.preset, list(preset_names()), "--preset")
        model = load_preset(self.preset)
        if self.kernel is not None:
            model = with_kernel(model, self.kernel, "--kernel")
        return model.with_engine(load_engine(self.engine, "--engine"))

    def grid(self) -> list[tuple[int, int, int]]:
        return [
            (b, s, t)
            for b, s, t in itertools.product(self.budgets, self.max_seqs, self.thresholds)
            if t < b  # a threshold at or above the budget changes nothing
        ]


def run_point(spec: TuneSpec, trace: Any, point: tuple[int, int, int]) -> dict[str, Any]:
    """Replay ``trace`` with one (budget, max_num_seqs, threshold); the run's metrics."""
    from stepopt.latency.capacity import default_num_free_blocks
    from stepopt.model import EngineConfig
    from stepopt.simulate import FixedTarget, SimConfig, make_policy, simulate, summarize

    budget, seqs, thr = point
    latency = spec.latency()
    config = SimConfig(
        engine=EngineConfig(budget, seqs, thr, 1, spec.block_size, None),
        kv_blocks=spec.kv_blocks
        if spec.kv_blocks is not None
        else default_num_free_blocks(latency, spec.memory_share, spec.block_size),
        validate=False,
    )
    target = FixedTarget(spec.slo_tbt_ms or 50.0)
    res = simulate(trace, make_policy(spec.policy), latency, target, config)
    s = summarize(res, spec.slo_ttft_ms, spec.slo_tbt_ms)
    keep = ("output_tokens_per_s", "slo_attainment", "ttft_p90_ms", "tbt_p99_ms", "finished")
    keep += ("rejected",)  # requests whose KV cache could never fit, even alone
    return {
        "max_num_batched_tokens": budget,
        "max_num_seqs": seqs,
        "long_prefill_token_threshold": thr,
        **{k: s.get(k) for k in keep},
        "preemptions": s["preemptions"],
    }


def _run(args: tuple[TuneSpec, Any, tuple[int, int, int]]) -> dict[str, Any]:
    return run_point(*args)


def sweep(spec: TuneSpec, trace: Any, workers: int = 1) -> list[dict[str, Any]]:
    """Every grid point, replayed in ``workers`` processes (1: in this one)."""
    jobs = [(spec, trace, p) for p in spec.grid()]
    if workers <= 1 or len(jobs) == 1:
        return [_run(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_run, jobs))


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows no other row beats on both throughput and SLO attainment, by throughput."""

    def key(r: dict[str, Any]) -> tuple[float, float]:
        return (r["output_tokens_per_s"] or 0.0, r["slo_attainment"] or 0.0)

    front = [
        r
        for r in rows
        if not any(
            key(o)[0] >= key(r)[0] and key(o)[1] >= key(r)[1] and key(o) != key(r) for o in rows
        )
    ]
    return sorted(front, key=key)


def choose(rows: list[dict[str, Any]], goal: float) -> tuple[dict[str, Any], bool]:
    """The highest-throughput row meeting ``goal`` (True), else the most attaining (False)."""
    ok = [r for r in rows if (r["slo_attainment"] or 0.0) >= goal]
    if ok:
        return max(ok, key=lambda r: r["output_tokens_per_s"] or 0.0), True
    best = max(rows, key=lambda r: (r["slo_attainment"] or 0.0, r["output_tokens_per_s"] or 0.0))
    return best, False


def vllm_flags(row: dict[str, Any]) -> str:
    flags = [
        "--enable-chunked-prefill",
        f"--max-num-batched-tokens {row['max_num_batched_tokens']}",
        f"--max-num-seqs {row['max_num_seqs']}",
    ]
    if row["long_prefill_token_threshold"]:
        flags.append(f"--long-prefill-token-threshold {row['long_prefill_token_threshold']}")
    return " ".join(flags)


def stepopt_config(spec: TuneSpec, row: dict[str, Any]) -> dict[str, Any]:
    """The chosen values as a problem file's ``config`` and ``latency_model``."""
    return {
        "config": {
            "max_num_scheduled_tokens": row["max_num_batched_tokens"],
            "max_num_running_reqs": row["max_num_seqs"],
            "long_prefill_token_threshold": row["long_prefill_token_threshold"],
            "block_size": spec.block_size,
        },
        "latency_model": {
            "preset": spec.preset,
            "engine": spec.engine,
            **({"kernel": spec.kernel} if spec.kernel is not None else {}),
        },
        "slo": {"tbt_p99_ms": spec.slo_tbt_ms, "ttft_ms": spec.slo_ttft_ms},
        "tune": {k: v for k, v in asdict(spec).items() if k not in ("preset", "engine", "kernel")},
    }


def plot_front(rows: list[dict[str, Any]], chosen: dict[str, Any], path: Any, goal: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["output_tokens_per_s"] or 0 for r in rows]
    ys = [r["slo_attainment"] or 0 for r in rows]
    ax.scatter(xs, ys, s=14, color="0.6", label="configurations")
    front = pareto_front(rows)
    ax.plot(
        [r["output_tokens_per_s"] for r in front],
        [r["slo_attainment"] for r in front],
        "o-",
        color="C0",
        label="Pareto front",
    )
    ax.scatter(
        [chosen["output_tokens_per_s"]], [chosen["slo_attainment"]], s=80, color="C3", zorder=3
    )
    ax.axhline(goal, color="C3", lw=0.8, ls="--", label=f"goal {goal:g}")
    ax.set_xlabel("output tokens/s")
    ax.set_ylabel("SLO attainment")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
