"""A shipped preset with another prefill kernel, without the data: the same model a refit with
``LatencyFitter(kernel=...)`` gives."""

from __future__ import annotations

import pytest

from stepopt.errors import InputError
from stepopt.latency.fit import LatencyFitter
from stepopt.latency.kernels import prefill_efficiency, with_prefill_kernel
from stepopt.latency.presets import load_preset
from stepopt.latency.profiles import load_profile
from stepopt.testing.data import require_shared_data

PRESETS = {"a100/llama-2-7b/tp1": ("llama-2-7b", 1), "a100/llama-2-70b/tp4": ("llama-2-70b", 4)}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_rekernelled_preset_is_the_refit_with_that_kernel(name):
    root = require_shared_data("vidur", "data", "profiling")
    model, tp = PRESETS[name]
    refit = LatencyFitter(kernel="fa2").fit(load_profile(root, "a100", model, tp)).model_
    mine = with_prefill_kernel(load_preset(name), "fa2")
    assert mine.meta["attention_kernel"] == "fa2" == refit.meta["attention_kernel"]
    for c in (128, 1000, 4096):  # 6 significant digits either way
        assert mine.prefill(c, 0, c) == pytest.approx(refit.prefill(c, 0, c), rel=2e-6)
    assert mine.tokens == refit.tokens and mine.decode_context_ps == refit.decode_context_ps


def test_kernel_efficiency_sets_the_prefill_speed():
    base = load_preset("a100/codellama-34b/tp2")
    eff = prefill_efficiency(base)
    assert 0.15 < eff < 0.25  # Vidur's 2024 kernel, ~19 % of the A100 peak (docs/latency.md)
    fast = with_prefill_kernel(base, "fa2")
    assert prefill_efficiency(fast) == pytest.approx(0.50, rel=1e-5)
    assert fast.prefill(2048, 0, 2048) == pytest.approx(
        base.prefill(2048, 0, 2048) * eff / 0.50, rel=1e-5
    )
    assert fast.batch == base.batch and fast.decode_context_ps == base.decode_context_ps


def test_kernel_needs_a_measured_preset_and_a_published_efficiency():
    with pytest.raises(InputError, match="needs a fitted preset with the measured kernel"):
        with_prefill_kernel(load_preset("h100/llama-2-7b/tp1"), "fa2")  # already fa3
    with pytest.raises(InputError, match="needs a fitted preset"):
        with_prefill_kernel(load_preset("demo"), "fa2")
    with pytest.raises(InputError, match="no published efficiency on a100"):
        with_prefill_kernel(load_preset("a100/llama-2-7b/tp1"), "fa3")
