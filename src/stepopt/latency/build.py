"""Fit presets from a profiling folder and write them as JSON (what ships in the package)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stepopt.latency.fit import LatencyFitter
from stepopt.latency.profiles import load_profile
from stepopt.latency.serialize import model_to_dict

PRESET_DIR = Path(__file__).resolve().parent / "presets"


def fit_combo(root: str | Path, gpu: str, model: str, tp: int, **params: Any) -> LatencyFitter:
    return LatencyFitter(**params).fit(load_profile(root, gpu, model, tp))


def describe(fitter: LatencyFitter) -> str:
    meta = fitter.model_.meta
    how = "measured" if meta["attention"] == "measured" else "roofline-scaled"
    return f"{meta['gpu_label']} {meta['model']} TP{meta['tp']}, Vidur profiles, {how} attention"


def preset_document(fitter: LatencyFitter) -> dict[str, Any]:
    doc = model_to_dict(fitter.model_)
    return {"name": doc.pop("name"), "description": describe(fitter), **doc}


def write_document(doc: dict[str, Any], path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return p
