"""Readers for Vidur's profiling CSV files (see the data folder's README for units).

Each reader turns one file into plain frozen samples with times in milliseconds per layer, as
the files store them, and fails with one :class:`~stepopt.errors.InputError` line naming the
file and the missing column or the bad value when the file has the wrong shape.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stepopt.errors import InputError

# The token-wise operators Vidur's predictor sums per layer (``emb`` is not used).
TOKENWISE_OPS: tuple[str, ...] = (
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)


@dataclass(frozen=True, slots=True)
class MlpSample:
    """Per-layer median times (ms) of the token-wise operators for ``num_tokens`` tokens."""

    n_head: int
    n_kv_head: int
    n_embd: int
    n_expanded_embd: int
    tp: int
    num_tokens: int
    ops_ms: Mapping[str, float]

    @property
    def total_ms(self) -> float:
        """Sum of the operators Vidur charges per layer."""
        return sum(self.ops_ms[op] for op in TOKENWISE_OPS)


@dataclass(frozen=True, slots=True)
class DecodeSample:
    """One decode-attention call: ``batch_size`` sequences of ``context`` cached tokens each."""

    n_embd: int
    n_q_head: int
    n_kv_head: int
    tp: int
    batch_size: int
    context: int
    time_ms: float  # kernel + input/output reshapes, per layer


@dataclass(frozen=True, slots=True)
class PrefillSample:
    """One prefill-attention call: ``chunk`` new tokens over ``cached`` earlier tokens."""

    n_embd: int
    n_q_head: int
    n_kv_head: int
    tp: int
    chunk: int
    cached: int
    time_ms: float  # kernel + input/output reshapes, per layer


@dataclass(frozen=True, slots=True)
class AllReduceSample:
    """One NCCL all-reduce of ``size_bytes`` among ``num_workers`` GPUs."""

    num_workers: int
    devices_per_node: int
    size_bytes: int
    time_ms: float


@dataclass(frozen=True, slots=True)
class AttentionSamples:
    decode: tuple[DecodeSample, ...]
    prefill: tuple[PrefillSample, ...]


class _Rows:
    """CSV rows with typed, located accessors; every error names the file and the line."""

    def __init__(self, path: str | Path, required: Sequence[str], kind: str):
        self.path = Path(path)
        self.kind = kind
        try:
            self._fh = self.path.open(newline="", encoding="utf-8")
        except FileNotFoundError:
            raise InputError(str(self.path), f"no such {kind} file") from None
        except IsADirectoryError:
            raise InputError(str(self.path), f"is a directory, expected a {kind} file") from None
        self._reader = csv.DictReader(self._fh)
        header = self._reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            self._fh.close()
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise InputError(
                str(self.path), f"missing column {missing[0]!r}{more}; is this a {kind} file?"
            )
        self.line = 1

    def __iter__(self) -> Iterator[dict[str, str]]:
        with self._fh:
            for row in self._reader:
                self.line = self._reader.line_num
                yield row

    def bad(self, col: str, what: str, value: object) -> InputError:
        return InputError(f"{self.path}:{self.line}", f"column {col!r}: {what}", value)

    def num(self, row: Mapping[str, str], col: str, *, optional: bool = False) -> float:
        text = (row.get(col) or "").strip()
        if not text:
            if optional:
                return math.nan
            raise self.bad(col, "empty value", text)
        try:
            value = float(text)
        except ValueError:
            raise self.bad(col, "not a number", text) from None
        if not math.isfinite(value) or value < 0:
            raise self.bad(col, "expected a finite non-negative number", text)
        return value

    def int(self, row: Mapping[str, str], col: str) -> int:
        value = self.num(row, col)
        if value != int(value):
            raise self.bad(col, "expected an integer", row.get(col))
        return int(value)

    def bool(self, row: Mapping[str, str], col: str) -> bool:
        text = (row.get(col) or "").strip().lower()
        if text not in ("true", "false"):
            raise self.bad(col, "expected True or False", row.get(col))
        return text == "true"

    def done(self, n: int) -> None:
        if n == 0:
            raise InputError(str(self.path), f"no data rows in this {self.kind} file")


def _median(op: str) -> str:
    return f"time_stats.{op}.median"


def read_mlp(path: str | Path) -> list[MlpSample]:
    """Token-wise operator profile (``mlp.csv``): one sample per row."""
    shape = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd")
    required = [*(_median(op) for op in TOKENWISE_OPS), *shape]
    required += ["num_tokens", "num_tensor_parallel_workers"]
    rows = _Rows(path, required, "mlp.csv (token-wise operator profile)")
    out: list[MlpSample] = []
    for row in rows:
        out.append(
            MlpSample(
                *(rows.int(row, c) for c in shape),
                tp=rows.int(row, "num_tensor_parallel_workers"),
                num_tokens=rows.int(row, "num_tokens"),
                ops_ms={op: rows.num(row, _median(op)) for op in TOKENWISE_OPS},
            )
        )
    rows.done(len(out))
    return out


def read_attention(path: str | Path) -> AttentionSamples:
    """Attention profile (``attention.csv``), split into decode and prefill calls.

    The reshape/copy costs around the kernel are added to the kernel time: they are paid by
    every attention call and Vidur's file measures them with it.
    """
    shape = ("n_embd", "n_q_head", "n_kv_head")
    required = [_median("attn_decode"), _median("attn_prefill"), *shape]
    required += ["num_tensor_parallel_workers", "batch_size", "prefill_chunk_size"]
    required += ["kv_cache_size", "is_prefill"]
    rows = _Rows(path, required, "attention.csv (attention profile)")
    decode: list[DecodeSample] = []
    prefill: list[PrefillSample] = []
    for row in rows:
        dims = tuple(rows.int(row, c) for c in shape)
        tp = rows.int(row, "num_tensor_parallel_workers")
        extra = sum(
            0.0 if math.isnan(v) else v
            for v in (
                rows.num(row, _median("attn_input_reshape"), optional=True),
                rows.num(row, _median("attn_output_reshape"), optional=True),
            )
        )
        if rows.bool(row, "is_prefill"):
            if rows.int(row, "batch_size") != 1:
                raise rows.bad(
                    "batch_size", "prefill rows must have batch_size 1", row["batch_size"]
                )
            prefill.append(
                PrefillSample(
                    *dims,
                    tp=tp,
                    chunk=rows.int(row, "prefill_chunk_size"),
                    cached=rows.int(row, "kv_cache_size"),
                    time_ms=rows.num(row, _median("attn_prefill")) + extra,
                )
            )
        else:
            decode.append(
                DecodeSample(
                    *dims,
                    tp=tp,
                    batch_size=rows.int(row, "batch_size"),
                    context=rows.int(row, "kv_cache_size"),
                    time_ms=rows.num(row, _median("attn_decode")) + extra,
                )
            )
    rows.done(len(decode) + len(prefill))
    return AttentionSamples(tuple(decode), tuple(prefill))


def read_all_reduce(path: str | Path) -> list[AllReduceSample]:
    """All-reduce profile (``all_reduce.csv``): one sample per row."""
    required = [_median("all_reduce"), "num_workers", "devices_per_node", "size"]
    rows = _Rows(path, required, "all_reduce.csv (collective profile)")
    out = [
        AllReduceSample(
            num_workers=rows.int(row, "num_workers"),
            devices_per_node=rows.int(row, "devices_per_node"),
            size_bytes=rows.int(row, "size"),
            time_ms=rows.num(row, _median("all_reduce")),
        )
        for row in rows
    ]
    rows.done(len(out))
    return out
