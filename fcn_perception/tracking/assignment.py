"""Optimal assignment (the Hungarian method) of rows to columns of a cost matrix.

Written here instead of importing ``scipy.optimize.linear_sum_assignment`` (or ``lap``):
scipy is not a runtime dependency of this package (about 140 MB installed, only for
this), and a tracker's matrices are small and sparse: only pairs of overlapping boxes
may match, so the matrix falls apart into small independent blocks (connected
components of the allowed pairs), each solved by an O(n^2 m) shortest-augmenting-path
method on NumPy rows (benchmarks/tracking_eval.py measures the tracker's whole per-frame
cost).
"""
from __future__ import annotations

import numpy as np


def _rows_to_columns(cost: np.ndarray) -> np.ndarray:
    """For an ``(n, m)`` cost with ``n <= m``: the column of each row in a minimum-cost
    assignment (Jonker-Volgenant style potentials, one augmenting path per row)."""
    n, m = cost.shape
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    owner = np.zeros(m + 1, np.int64)  # owner[j]: 1-based row holding column j (0: none)
    way = np.zeros(m + 1, np.int64)
    for i in range(1, n + 1):
        owner[0] = i
        j0 = 0
        minv = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, bool)
        while True:
            used[j0] = True
            i0 = owner[j0]
            free = ~used[1:]
            reduced = cost[i0 - 1] - u[i0] - v[1:]
            better = free & (reduced < minv[1:])
            minv[1:][better] = reduced[better]
            way[1:][better] = j0
            candidates = np.where(free, minv[1:], np.inf)
            j1 = int(np.argmin(candidates)) + 1
            delta = candidates[j1 - 1]
            u[owner[used]] += delta
            v[used] -= delta
            minv[1:][free] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:  # flip the augmenting path
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    columns = np.full(n, -1, np.int64)
    assigned = np.flatnonzero(owner[1:]) + 1
    columns[owner[assigned] - 1] = assigned - 1
    return columns


def linear_assignment(cost: np.ndarray, threshold: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost matching of an ``(n, m)`` cost matrix keeping pairs with cost
    ``<= threshold`` -> ``(matches (k, 2) [row, column], unmatched rows, unmatched
    columns)``.  Costs above the threshold (or not finite) are never matched: they are
    raised to a value no kept pair can reach before solving."""
    cost = np.asarray(cost, np.float64)
    n, m = cost.shape
    if n == 0 or m == 0:
        return np.zeros((0, 2), np.int64), np.arange(n), np.arange(m)
    allowed = np.isfinite(cost) & (cost <= threshold)
    pairs = []
    for rows, cols in _blocks(allowed):
        if len(rows) == 1 and len(cols) == 1:  # one allowed pair: nothing to solve
            pairs.append(np.array([[rows[0], cols[0]]]))
            continue
        block = cost[rows[:, None], cols[None, :]]
        ok = allowed[rows[:, None], cols[None, :]]
        # a disallowed pair costs more than any assignment of allowed ones
        big = (np.abs(block[ok]).max() * 2.0 + 1.0) * max(len(rows), len(cols))
        solved = np.where(ok, block, big)
        if len(rows) <= len(cols):
            r, c = np.arange(len(rows)), _rows_to_columns(solved)
        else:
            r, c = _rows_to_columns(solved.T), np.arange(len(cols))
        keep = (r >= 0) & (c >= 0)
        r, c = r[keep], c[keep]
        keep = ok[r, c]
        pairs.append(np.stack([rows[r[keep]], cols[c[keep]]], axis=1))
    matches = np.concatenate(pairs).astype(np.int64) if pairs else np.zeros((0, 2), np.int64)
    free_rows, free_cols = np.ones(n, bool), np.ones(m, bool)
    free_rows[matches[:, 0]] = False
    free_cols[matches[:, 1]] = False
    return matches, np.flatnonzero(free_rows), np.flatnonzero(free_cols)


def _blocks(allowed: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The connected components (row indices, column indices) of the bipartite graph of
    allowed pairs; rows and columns without an allowed pair are in none."""
    n, m = allowed.shape
    parent = list(range(n + m))  # rows 0..n-1, columns n..n+m-1

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r, c in zip(*np.nonzero(allowed)):
        a, b = find(int(r)), find(n + int(c))
        if a != b:
            parent[a] = b
    groups: dict[int, tuple[list[int], list[int]]] = {}
    used_rows = allowed.any(axis=1)
    used_cols = allowed.any(axis=0)
    for r in np.flatnonzero(used_rows):
        groups.setdefault(find(int(r)), ([], []))[0].append(int(r))
    for c in np.flatnonzero(used_cols):
        groups.setdefault(find(n + int(c)), ([], []))[1].append(int(c))
    return [(np.asarray(r, np.int64), np.asarray(c, np.int64)) for r, c in groups.values()]
