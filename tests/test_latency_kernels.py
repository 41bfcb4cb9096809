"""A shipped preset with another prefill kernel, without the data: the same model a refit with
``LatencyFitter(kernel=...)`` gives, selectable in problem files."""

from __future__ import annotations

import pytest

from stepopt.errors import InputError
from stepopt.latency.documents import model_from_dict
from stepopt.latency.fit import LatencyFitter
from stepopt.latency.kernels import prefill_efficiency
from stepopt.latency.presets import load_preset, with_kernel
from stepopt.latency.profiles import load_profile
from stepopt.testing.data import require_shared_data

PRESETS = {
    "a100/llama-2-7b/tp1": ("a100", "llama-2-7b", 1, "fa2"),
    "a100/llama-2-70b/tp4": ("a100", "llama-2-70b", 4, "fa2"),
    "h100/llama-2-7b/tp1": ("h100", "llama-2-7b", 1, "measured"),  # from fa3 back
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_rekernelled_preset_is_the_refit_with_that_kernel(name):
    root = require_shared_data("vidur", "data", "profiling")
    gpu, model, tp, kernel = PRESETS[name]
    refit = LatencyFitter(kernel=kernel).fit(load_profile(root, gpu, model, tp)).model_
    mine = with_kernel(load_preset(name), kernel)
    assert mine.meta["attention_kernel"] == kernel == refit.meta["attention_kernel"]
    for c in (128, 1000, 4096):  # 6 significant digits either way
        assert mine.prefill(c, 0, c) == pytest.approx(refit.prefill(c, 0, c), rel=5e-6, abs=2)
    assert mine.tokens == refit.tokens and mine.decode_context_ps == refit.decode_context_ps


def test_kernel_efficiency_sets_the_prefill_speed():
    base = load_preset("a100/codellama-34b/tp2")
    eff = prefill_efficiency(base)
    assert 0.15 < eff < 0.25  # Vidur's 2024 kernel, ~19 % of the A100 peak (docs/latency.md)
    fast = with_kernel(base, "fa2")
    assert prefill_efficiency(fast) == pytest.approx(0.50, rel=1e-5)
    assert fast.prefill(2048, 0, 2048) == pytest.approx(
        base.prefill(2048, 0, 2048) * eff / 0.50, rel=1e-5
    )
    assert fast.batch == base.batch and fast.decode_context_ps == base.decode_context_ps
    assert with_kernel(base, "measured") is base
    # H100 presets assume FlashAttention-3; the measured kernel keeps its A100 efficiency
    h = load_preset("h100/llama-2-7b/tp1")
    assert prefill_efficiency(h) == pytest.approx(0.75, rel=1e-5)
    assert prefill_efficiency(with_kernel(h, "measured")) == pytest.approx(eff, rel=1e-5)


def test_problem_files_select_a_kernel_next_to_the_engine():
    m = model_from_dict({"preset": "a100/llama-2-7b/tp1", "engine": "vllm-0.6", "kernel": "fa2"})
    plain = load_preset("a100/llama-2-7b/tp1")
    assert m.meta["attention_kernel"] == "fa2" and m.engine.name == "vllm-0.6"
    assert m.prefill(2048, 0, 2048) < 0.5 * plain.prefill(2048, 0, 2048)
    assert m.tokens == plain.tokens


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"preset": "a100/llama-2-7b/tp1", "kernel": "fa3"}, "fa3 has no published efficiency"),
        ({"preset": "a100/llama-2-7b/tp1", "kernel": "flash"}, "unknown kernel 'flash'"),
        ({"preset": "demo", "kernel": "fa2"}, "needs a fitted preset"),
    ],
)
def test_a_bad_kernel_is_a_one_line_error_naming_the_field(doc, needle):
    with pytest.raises(InputError) as exc:
        model_from_dict(doc)
    text = str(exc.value)
    assert text.startswith("latency_model.kernel: ") and needle in text and "\n" not in text
