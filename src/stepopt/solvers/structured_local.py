"""A quick incumbent for :func:`stepopt.solvers.structured_exact.exact_min`.

At one position (a layer and a token count) the greedy split along the lower envelope is
usually a few ns above the least latency: several prefills whose chunks sit on envelope edges
of the same slope (equal cached lengths share a curve segment) lose up to 1 ns each to the
floors, and the greedy leaves all but one of them at a breakpoint. Moving tokens between two
such items at a time (the best move each round) recovers those ns; when the split reaches the
position's integer Lagrangian bound it is the least latency there, proven without the
min-plus program. Otherwise its latency caps the program's limit (only strictly better splits
are searched). It is a heuristic: only the bound and the program prove anything.
"""

from __future__ import annotations

import numpy as np

from stepopt.solvers.structured_curves import _values_at, allocation
from stepopt.solvers.structured_layers import Ctx, Layer, _kv_blocks, low_fill

MAX_ROUNDS = 64
_BIG = np.int64(1) << np.int64(60)


def incumbent(
    cx: Ctx, layer: Layer, pos: int, total: int, flat: list, fp: int, goal: int
) -> tuple[int, tuple[int, ...]] | None:
    """A valid split of the position's ``total`` free tokens and its exact latency, or None.

    ``flat``: per item its chunks within ``FLAT`` of its least reduced cost and their exact
    values (``structured_reduced.least``), the only chunks a move may reach; ``goal``: the
    position's integer lower bound (no split is below it: the moves stop there)."""
    chunks = allocation(layer.items, low_fill(layer), pos)
    most = cx.budget - layer_s0(layer)
    for c, it in zip(chunks, layer.items, strict=True):
        if c == 0 and not layer.optional:
            return None
        if c and not it.lo <= c <= min(it.hi, most, total):
            return None  # e.g. an optional chunk between 0 and lo
    on = [k for k, c in enumerate(chunks) if c]
    got = _values_at(layer.items, np.asarray(on, dtype=np.int64), np.asarray(chunks)[on])
    latency = fp + int(layer.fseq_window[len(on)]) + int(got.sum())
    if latency > goal:
        chunks, gained = _improve(chunks, flat, latency - goal)
        latency -= gained
    if not _fits_kv(cx, layer, chunks):
        return None
    return latency, tuple(chunks)


def _improve(chunks: list[int], flat: list, gap: int) -> tuple[list[int], int]:
    """Best-improvement moves of tokens between two items, each kept on its flat chunks (the
    number of non-zero items, so ``F_seq``, never changes), until ``gap`` ns are gained or no
    move gains; the chunks and the ns gained."""
    flat = [
        (k, c, g)
        for k, (c, g) in enumerate(flat)
        if chunks[k] and c.size > 1 and (c == chunks[k]).any()
    ]
    gained = 0
    if len(flat) < 2:
        return chunks, gained
    chunks = list(chunks)
    reach = max(int(c[-1] - c[0]) for _, c, _ in flat)
    n = len(flat)
    diag = np.arange(n)
    # delta[r, reach + d]: the change of item r's value when its chunk moves by d (rows
    # rebuilt for the two items a move changes).
    delta = np.full((n, 2 * reach + 1), _BIG, dtype=np.int64)

    def row(r: int) -> None:
        k, c, g = flat[r]
        delta[r] = _BIG
        delta[r, c - chunks[k] + reach] = g - g[c == chunks[k]][0]

    for r in range(n):
        row(r)
    for _ in range(MAX_ROUNDS):
        give = delta[:, reach - 1 :: -1][:, :reach]  # d = 1..reach tokens taken from r
        take = delta[:, reach + 1 :]  # d = 1..reach tokens given to r
        gain = give[:, None, :] + take[None, :, :]
        gain[diag, diag, :] = _BIG
        best = int(np.argmin(gain))
        i, j, d = np.unravel_index(best, gain.shape)
        if gain[i, j, d] >= 0:
            break
        chunks[flat[i][0]] -= int(d) + 1
        chunks[flat[j][0]] += int(d) + 1
        gained -= int(gain[i, j, d])
        if gained >= gap:
            break
        row(int(i))
        row(int(j))
    return chunks, gained


def _fits_kv(cx: Ctx, layer: Layer, chunks: list[int]) -> bool:
    if cx.kv is None:
        return True
    cached = np.asarray([r.computed_tokens for r in layer.reqs], dtype=np.int64)
    blocks = _kv_blocks(cached, np.asarray(chunks, dtype=np.int64), cx.bs)
    return layer.kv0 + int(blocks.sum()) <= cx.kv


def layer_s0(layer: Layer) -> int:
    """Tokens of the layer's fixed part (decodes and fixed prefills), once per layer."""
    s0 = getattr(layer, "_s0", None)
    if s0 is None:
        s0 = layer._s0 = sum(layer.fixed.values())  # type: ignore[attr-defined]
    return s0
