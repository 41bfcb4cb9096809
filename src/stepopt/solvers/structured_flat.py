"""The layers' positions as one flat index (``target``: bounds, candidates and searches run
over every layer at once)."""

from __future__ import annotations

import numpy as np

from stepopt.solvers.structured_layers import BIG, Layer


class Flat:
    """The layers' positions as flat arrays, cut where the tokens pass the budget (no decision
    lies beyond: the layers mark those positions unreachable and invalid)."""

    def __init__(self, layers: list[Layer], budget: int) -> None:
        self.layers = layers
        live = [int(np.searchsorted(ly.arrays.tok, budget, side="right")) for ly in layers]
        self.starts = np.cumsum([0, *live])
        self.b0 = next((k for k, ly in enumerate(layers) if ly.name == "B0"), None)

    def cat(self, arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([a[: self.size(li)] for li, a in enumerate(arrays)])

    def get(self, attr: str) -> np.ndarray:
        return self.cat([getattr(ly.arrays, attr) for ly in self.layers])

    def size(self, li: int) -> int:
        return int(self.starts[li + 1] - self.starts[li])

    def part(self, x: np.ndarray, li: int) -> np.ndarray:
        return x[self.starts[li] : self.starts[li + 1]]

    def locate(self, flat: int) -> tuple[int, int]:
        li = int(np.searchsorted(self.starts, flat, side="right") - 1)
        return li, int(flat - self.starts[li])

    def parent_dev(self, dev_lb: np.ndarray, li: int) -> np.ndarray:
        """A candidate layer's distance bounds: B0's at the same token count (BIG outside B0's
        live positions, or without B0)."""
        n = self.size(li)
        out = np.full(n, BIG)
        if self.b0 is None or n == 0:
            return out
        parent = self.part(dev_lb, self.b0)
        # Both layers' tokens run one by one: the candidate layer's sit on a slice of B0's.
        off = int(self.layers[li].arrays.tok[0] - self.layers[self.b0].arrays.tok[0])
        lo, hi = max(off, 0), min(off + n, parent.size)
        if lo < hi:
            out[lo - off : hi - off] = parent[lo:hi]
        return out
