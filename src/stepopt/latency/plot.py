"""Plots of a fitted model against the measured points (matplotlib, imported lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from stepopt.errors import MissingExtraError
from stepopt.latency.fit import NS_PER_MS, tokenwise_points
from stepopt.latency.model import LatencyModel
from stepopt.latency.profiles import Profile

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot() -> Any:
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingExtraError("matplotlib", "plot", "plotting a latency fit") from None
    return plt


def plot_fit(model: LatencyModel, profile: Profile) -> Figure:
    """Token-wise part (and attention, when measured for this shape): points vs the model."""
    plt = _pyplot()
    layers = profile.model.num_layers
    panels = 3 if profile.attention is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2), squeeze=False)
    ax = axes[0][0]
    x, y = tokenwise_points(profile)
    ax.plot(x, y * layers, ".", ms=3, label="measured (sum of medians)")
    xs = np.arange(0, int(x.max()) + 1, max(1, int(x.max()) // 2000))
    ax.plot(xs, [model.tokens(int(v)) / NS_PER_MS for v in xs], "-", lw=1.2, label="fitted")
    ax.plot(
        model.tokens.xs,
        np.array(model.tokens.ys) / NS_PER_MS,
        "x",
        color="k",
        ms=4,
        label="breakpoints",
    )
    ax.set_xlim(0, x.max() * 1.02)
    ax.set_ylim(0, y.max() * layers * 1.05)
    ax.set_xlabel("tokens in the batch")
    ax.set_ylabel("ms per step (all layers)")
    ax.set_title(f"{profile.name}: token-wise part")
    ax.legend(fontsize=8)
    if profile.attention is not None:
        _plot_attention(axes[0][1], axes[0][2], model, profile)
    fig.tight_layout()
    return fig


def _plot_attention(ax_d, ax_p, model: LatencyModel, profile: Profile) -> None:
    layers = profile.model.num_layers
    dec = profile.attention.decode
    for b in (1, 8, 32, 128):
        pts = sorted((s.context, s.time_ms) for s in dec if s.batch_size == b)
        if not pts:
            continue
        cx = np.array([p[0] for p in pts])
        line = ax_d.plot(cx, np.array([p[1] for p in pts]) * layers, ".", ms=3, label=f"B={b}")
        pred = [(model.batch(b) + model.decode_ns(b * int(c))) / NS_PER_MS for c in cx]
        ax_d.plot(cx, pred, "-", color=line[0].get_color(), lw=1)
    ax_d.set_xlabel("context per decode")
    ax_d.set_ylabel("ms per step (all layers)")
    ax_d.set_title("decode attention: points vs fit")
    ax_d.legend(fontsize=8)
    pre = profile.attention.prefill
    for kv in (0, 1024, 2048):
        pts = sorted((s.chunk, s.time_ms) for s in pre if s.cached == kv)
        if not pts:
            continue
        cx = np.array([p[0] for p in pts])
        line = ax_p.plot(cx, np.array([p[1] for p in pts]) * layers, ".", ms=3, label=f"kv={kv}")
        pred = [(model.batch(1) + model.prefill(int(c), kv, int(c))) / NS_PER_MS for c in cx]
        ax_p.plot(cx, pred, "-", color=line[0].get_color(), lw=1)
    ax_p.set_xlabel("prefill chunk tokens")
    ax_p.set_title("prefill attention: points vs fit")
    ax_p.legend(fontsize=8)
