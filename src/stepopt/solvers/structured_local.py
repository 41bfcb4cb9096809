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

from stepopt.solvers.structured_curves import allocation
from stepopt.solvers.structured_layers import Ctx, Layer, _kv_blocks, low_fill

FLAT = 1.0  # a chunk whose reduced cost is within this of its item's least one may move
MAX_ROUNDS = 64
_BIG = np.int64(1) << np.int64(60)


def incumbent(
    cx: Ctx, layer: Layer, pos: int, total: int, doms: tuple, fp: int
) -> tuple[int, tuple[int, ...]] | None:
    """A valid split of the position's ``total`` free tokens and its exact latency, or None.

    ``doms``: per item the chunks ``[lo, min(hi, total)]`` (consecutive), their exact values,
    their reduced costs and the least reduced cost (as ``exact_min`` has them)."""
    cs, gs, hs, m = doms
    chunks = allocation(layer.items, low_fill(layer), pos)
    for c, dom in zip(chunks, cs, strict=True):
        if c == 0 and not layer.optional:
            return None
        if c and (dom.size == 0 or not dom[0] <= c <= dom[-1]):
            return None  # e.g. an optional chunk between 0 and lo
    chunks = _improve(chunks, cs, gs, hs, m)
    if not _fits_kv(cx, layer, chunks):
        return None
    value = sum(int(g[c - dom[0]]) for c, g, dom in zip(chunks, gs, cs, strict=True) if c)
    q = sum(1 for c in chunks if c)
    return fp + int(layer.fseq_window[q]) + value, tuple(chunks)


def _improve(chunks: list[int], cs, gs, hs, m) -> list[int]:
    """Best-improvement moves of tokens between two items, each kept on its flat chunks (the
    number of non-zero items, so ``F_seq``, never changes)."""
    flat = []
    for k, c in enumerate(chunks):
        if c == 0:
            continue
        idx = np.flatnonzero(hs[k] - m[k] <= FLAT)
        if idx.size > 1 and (cs[k][idx] == c).any():
            flat.append((k, cs[k][idx], gs[k][idx]))
    if len(flat) < 2:
        return chunks
    chunks = list(chunks)
    reach = max(int(c[-1] - c[0]) for _, c, _ in flat)
    n = len(flat)
    diag = np.arange(n)
    for _ in range(MAX_ROUNDS):
        # delta[r, reach + d]: the change of item r's value when its chunk moves by d.
        delta = np.full((n, 2 * reach + 1), _BIG, dtype=np.int64)
        for r, (k, c, g) in enumerate(flat):
            delta[r, c - chunks[k] + reach] = g - g[c == chunks[k]][0]
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
    return chunks


def _fits_kv(cx: Ctx, layer: Layer, chunks: list[int]) -> bool:
    if cx.kv is None:
        return True
    cached = np.asarray([r.computed_tokens for r in layer.reqs], dtype=np.int64)
    blocks = _kv_blocks(cached, np.asarray(chunks, dtype=np.int64), cx.bs)
    return layer.kv0 + int(blocks.sum()) <= cx.kv
