"""The GPUs, models and file layout of Vidur's profiling folder, and one profile per preset.

``PROFILE_DIR`` is Vidur's ``data/profiling`` folder: ``compute/<gpu>/<hf model>/mlp.csv``,
``network/<gpu>_dgx/all_reduce.csv`` and, for A100, ``a100/attention.csv`` (one attention shape).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from stepopt.errors import InputError
from stepopt.latency.readers import (
    AllReduceSample,
    AttentionSamples,
    MlpSample,
    read_all_reduce,
    read_attention,
    read_mlp,
)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    hf_path: str  # folder under compute/<gpu>/
    num_layers: int
    n_head: int
    n_kv_head: int
    n_embd: int

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """Datasheet peaks used only to scale attention from A100 to another GPU."""

    name: str
    label: str
    mem_bw_gbps: float  # HBM bandwidth, GB/s
    fp16_tflops: float  # dense FP16/BF16 tensor-core peak


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec("llama-2-7b", "meta-llama/Llama-2-7b-hf", 32, 32, 32, 4096),
        ModelSpec("llama-3-8b", "meta-llama/Meta-Llama-3-8B", 32, 32, 8, 4096),
        ModelSpec("codellama-34b", "codellama/CodeLlama-34b-Instruct-hf", 48, 64, 8, 8192),
        ModelSpec("llama-2-70b", "meta-llama/Llama-2-70b-hf", 80, 64, 8, 8192),
    )
}

GPUS: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        GpuSpec("a100", "A100-SXM4-80GB", 2039.0, 312.0),
        GpuSpec("h100", "H100-SXM5-80GB", 3352.0, 989.0),
    )
}

# The one attention shape that was measured: A100, hidden 8192, 64 q / 8 KV heads, TP 2.
REFERENCE_ATTENTION = {"gpu": "a100", "n_embd": 8192, "n_q_head": 64, "n_kv_head": 8, "tp": 2}

# Where the data came from (the data folder's README).
SOURCE_REPO = "https://github.com/microsoft/vidur"
SOURCE_COMMIT = "7d47513363ec447a741ac5e47241580b47724fbf"
ATTENTION_COMMIT = "e2d00e9afba96cec9f0e7ea560bbfc4a539fae6a"


def mlp_path(root: Path, gpu: str, model: str) -> Path:
    return root / "compute" / gpu / MODELS[model].hf_path / "mlp.csv"


def all_reduce_path(root: Path, gpu: str) -> Path:
    return root / "network" / f"{gpu}_dgx" / "all_reduce.csv"


def attention_path(root: Path, gpu: str) -> Path:
    return root / gpu / "attention.csv"


def _check_root(root: str | Path) -> Path:
    p = Path(root)
    if not (p / "compute").is_dir():
        raise InputError(
            "profile_dir",
            "not a Vidur profiling folder (expected compute/<gpu>/<model>/mlp.csv inside; "
            "e.g. .../vidur/data/profiling)",
            str(p),
        )
    return p


def _tps_in(path: Path) -> list[int]:
    """TP degrees of an mlp.csv, read from its last column without parsing the rest."""
    import csv

    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if "num_tensor_parallel_workers" not in (reader.fieldnames or []):
            return []
        return sorted({int(float(r["num_tensor_parallel_workers"])) for r in reader})


def available_combos(root: str | Path) -> list[tuple[str, str, int]]:
    """``(gpu, model, tp)`` combinations with a token-wise profile (and an all-reduce profile
    when ``tp > 1``) in the folder."""
    p = _check_root(root)
    out = []
    for gpu in GPUS:
        for model in MODELS:
            path = mlp_path(p, gpu, model)
            if not path.is_file():
                continue
            for tp in _tps_in(path):
                if tp == 1 or all_reduce_path(p, gpu).is_file():
                    out.append((gpu, model, tp))
    return out


def combo_name(gpu: str, model: str, tp: int) -> str:
    return f"{gpu}/{model}/tp{tp}"


@dataclass(frozen=True)
class Profile:
    """Everything measured for one (gpu, model, tp), per layer and in ms."""

    gpu: GpuSpec
    model: ModelSpec
    tp: int
    mlp: tuple[MlpSample, ...]
    all_reduce: tuple[AllReduceSample, ...]  # rows with num_workers == devices_per_node == tp
    attention: AttentionSamples | None  # None: no measurement for this shape
    reference_attention: AttentionSamples | None  # the measured shape, for scaling
    files: tuple[str, ...]

    @property
    def name(self) -> str:
        return combo_name(self.gpu.name, self.model.name, self.tp)


def _matches_reference(model: ModelSpec, gpu: str, tp: int) -> bool:
    ref = REFERENCE_ATTENTION
    return (gpu, model.n_embd, model.n_head, model.n_kv_head, tp) == (
        ref["gpu"],
        ref["n_embd"],
        ref["n_q_head"],
        ref["n_kv_head"],
        ref["tp"],
    )


def load_profile(root: str | Path, gpu: str, model: str, tp: int) -> Profile:
    """Read the files of one combination; a combination not in the folder lists the valid
    ones."""
    p = _check_root(root)
    combos = available_combos(p)
    if (gpu, model, tp) not in combos:
        valid = ", ".join(combo_name(*c) for c in combos) or "(none)"
        raise InputError(
            "combination",
            f"no profile for {combo_name(gpu, model, tp)} in {p}; valid: {valid}",
            show_value=False,
        )
    spec = MODELS[model]
    files = [mlp_path(p, gpu, model)]
    mlp = tuple(s for s in read_mlp(files[0]) if s.tp == tp)
    bad = [
        s
        for s in mlp
        if (s.n_head, s.n_kv_head, s.n_embd) != (spec.n_head, spec.n_kv_head, spec.n_embd)
    ]
    if bad:
        raise InputError(
            str(files[0]),
            f"shape {bad[0].n_head}/{bad[0].n_kv_head}/{bad[0].n_embd} (heads/kv heads/hidden) "
            f"does not match {model}",
            show_value=False,
        )
    ar: tuple[AllReduceSample, ...] = ()
    if tp > 1:
        files.append(all_reduce_path(p, gpu))
        ar = tuple(
            s
            for s in read_all_reduce(files[-1])
            if s.num_workers == tp and s.devices_per_node == tp
        )
        if not ar:
            raise InputError(
                str(files[-1]), f"no rows with num_workers == devices_per_node == {tp}"
            )
    ref_path = attention_path(p, REFERENCE_ATTENTION["gpu"])
    reference = None
    if ref_path.is_file():
        files.append(ref_path)
        reference = _reference_only(read_attention(ref_path), ref_path)
    measured = reference if _matches_reference(spec, gpu, tp) else None
    return Profile(
        gpu=GPUS[gpu],
        model=spec,
        tp=tp,
        mlp=mlp,
        all_reduce=ar,
        attention=measured,
        reference_attention=reference,
        files=tuple(str(f) for f in files),
    )


def _reference_only(samples: AttentionSamples, path: Path) -> AttentionSamples:
    ref = REFERENCE_ATTENTION
    key = (ref["n_embd"], ref["n_q_head"], ref["n_kv_head"], ref["tp"])
    dec = tuple(s for s in samples.decode if (s.n_embd, s.n_q_head, s.n_kv_head, s.tp) == key)
    pre = tuple(s for s in samples.prefill if (s.n_embd, s.n_q_head, s.n_kv_head, s.tp) == key)
    if not dec or not pre:
        raise InputError(
            str(path),
            "no decode and prefill rows for the shape 8192/64/8 at TP 2",
            show_value=False,
        )
    return AttentionSamples(dec, pre)
