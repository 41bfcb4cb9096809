"""Shipped presets: one per profiled GPU/model/TP, loadable, sane, and said to be what they are."""

from __future__ import annotations

import re

import pytest

from stepopt.latency.documents import model_from_dict
from stepopt.latency.presets import load_preset, preset_document, preset_names
from stepopt.latency.serialize import model_to_dict
from stepopt.testing.factories import decode, make_problem, prefill

MODELS = ("llama-2-7b", "llama-3-8b", "codellama-34b", "llama-2-70b")
FITTED = [n for n in preset_names() if n != "demo"]
MEASURED = {"a100/codellama-34b/tp2", "a100/llama-2-70b/tp2"}


def test_one_preset_per_profiled_combination():
    assert len(FITTED) == 28
    for name in FITTED:
        gpu, model, tp = re.fullmatch(r"(a100|h100)/([a-z0-9-]+)/tp(\d)", name).groups()
        assert model in MODELS
        meta = load_preset(name).meta
        assert (meta["gpu"], meta["model"], meta["tp"]) == (gpu, model, int(tp))
    assert "h100/llama-3-8b/tp1" not in FITTED  # no H100 profile of Llama-3-8B in the data


@pytest.mark.parametrize("name", FITTED)
def test_preset_document_and_model(name):
    doc = preset_document(name)
    assert doc["description"]
    meta = doc["meta"]
    for key in ("gpu", "model", "tp", "num_layers", "attention", "fit_mape_pct", "source"):
        assert key in meta, key
    assert meta["attention"] == ("measured" if name in MEASURED else "scaled")
    assert isinstance(meta["fit_mape_pct"], float) and 0 < meta["fit_mape_pct"] < 5
    assert meta["source"]["commit"] == "7d47513363ec447a741ac5e47241580b47724fbf"
    model = load_preset(name)
    assert model.tokens.xs[0] == 0 and model.tokens.xs[-1] >= 16384
    assert model.batch.xs[0] == 0 and model.batch.xs[-1] >= 1024
    assert len(model.tokens.xs) - 1 <= 16 + 1  # + the extension
    # Round trip through the file format.
    again = model_from_dict(model_to_dict(model))
    assert (again.tokens, again.batch, again.prefill) == (model.tokens, model.batch, model.prefill)


@pytest.mark.parametrize("name", FITTED)
def test_preset_predicts_plausible_steps(name):
    model = load_preset(name)
    # Whole-step time grows with tokens over large strides (local wave steps may dip).
    values = [model.tokens(t) for t in (1, 1024, 4096, 16384)]
    assert values == sorted(values) and values[0] > 1_000_000  # > 1 ms: many layers
    problem = make_problem(
        running=[decode(f"d{i}", context=1000) for i in range(32)] + [prefill("p", 4000, 512)],
        latency=model,
    )
    tokens = {**{f"d{i}": 1 for i in range(32)}, "p": 512}
    parts = model.breakdown_ns(problem, tokens)
    assert parts["decode_attention"] == model.decode_context_ps * 32000 // 1000
    assert 0 < parts["prefill_attention"] < parts["tokens"]
    assert parts["total"] == sum(v for k, v in parts.items() if k != "total")


def test_more_gpus_per_model_is_faster_per_step():
    for gpu in ("a100", "h100"):
        t = [load_preset(f"{gpu}/llama-2-70b/tp{n}").tokens(2048) for n in (1, 2, 4, 8)]
        assert t == sorted(t, reverse=True)


def test_h100_is_faster_than_a100():
    for model in ("llama-2-7b", "codellama-34b", "llama-2-70b"):
        a, h = load_preset(f"a100/{model}/tp2"), load_preset(f"h100/{model}/tp2")
        assert h.tokens(2048) < a.tokens(2048)
        assert h.decode_context_ps < a.decode_context_ps
