"""The identity graph on integer-coded identifiers: components, conflicts, survivors.

Everything here works on numpy arrays (node `i` is the i-th identifier key in sorted
order, edges are pairs of node numbers) so that ten million events cost one pass of
scipy's compiled graph routines, never a Python loop over rows. The warehouse side
(`resolve.py`) turns keys into numbers and the answers back into rows.

Passes, in order:
1. `components`: connected components of the undirected graph (scipy.sparse.csgraph,
   a union-find over the CSR matrix).
2. `split_conflicts`: under the `block` policy a component may hold at most one user
   id. Components with more are cut: every identifier goes to its nearest user id by
   multi-source Dijkstra (edge weight 1 plus a fraction ranking the edge's time, so a
   device shared by two users stays with the one who used it first) and the edges that
   then join two users' parts are reported as conflicts.
3. `survivors`: the identifier that names each component. Candidates are the user ids
   and the identifiers that already name a customer; the order is user ids first, then
   existing names, then earliest first seen, then the key. A customer therefore keeps
   its id when its component grows, an anonymous customer takes the user id once it
   logs in, and of two merging customers the older keeps its id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, dijkstra

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _matrix(n: int, src: IntArray, dst: IntArray, weight: npt.NDArray[np.float64]):  # type: ignore[no-untyped-def]
    return coo_matrix((weight, (src, dst)), shape=(n, n)).tocsr()


def components(n: int, src: IntArray, dst: IntArray) -> IntArray:
    """Component label of each of `n` nodes, labels numbered by their smallest node."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    g = _matrix(n, src, dst, np.ones(len(src)))
    _, labels = connected_components(g, directed=False)
    # scipy numbers components in node order already; make the contract explicit.
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(np.argsort(first))
    return order[labels].astype(np.int64)


@dataclass
class Split:
    labels: IntArray  # component label per node after cutting
    conflict_edges: IntArray  # indices into the edge arrays that join two users


def split_conflicts(
    labels: IntArray,
    src: IntArray,
    dst: IntArray,
    edge_rank: IntArray,
    is_user: BoolArray,
) -> Split:
    """Cut components holding more than one user id (see the module docstring)."""
    n = len(labels)
    users_per = np.bincount(labels, weights=is_user.astype(np.float64))
    crowded = users_per[labels] > 1 if n else np.zeros(0, dtype=bool)
    if not crowded.any():
        return Split(labels, np.zeros(0, dtype=np.int64))

    nodes = np.flatnonzero(crowded)
    local = np.full(n, -1, dtype=np.int64)
    local[nodes] = np.arange(len(nodes))
    inside = crowded[src] & crowded[dst]
    e_idx = np.flatnonzero(inside)
    ls, ld = local[src[e_idx]], local[dst[e_idx]]
    # Ties between equally near users go to the earlier edge: ranks are < 1 in total.
    w = 1.0 + edge_rank[e_idx] / (len(edge_rank) + 1.0)
    g = _matrix(len(nodes), ls, ld, w)
    seeds = local[nodes[is_user[nodes]]]
    _, _, source = dijkstra(
        g, directed=False, indices=seeds, min_only=True, return_predecessors=True
    )

    out = labels.copy()
    # Parts are numbered after the existing labels, by their seed (a user node).
    out[nodes] = labels.max() + 1 + source
    cut = e_idx[source[ls] != source[ld]]
    _, compact = np.unique(out, return_inverse=True)
    return Split(compact.astype(np.int64), cut.astype(np.int64))


def survivors(
    labels: IntArray,
    is_user: BoolArray,
    is_named: BoolArray,
    first_seen: IntArray,
) -> IntArray:
    """The node that names each component (index into nodes), by component label.

    `is_named` marks nodes whose key is already a customer id. Node numbers follow the
    sorted keys, so the last tie-break (smallest node) is the smallest key.
    """
    n = len(labels)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    n_comp = int(labels.max()) + 1
    candidate = is_user | is_named
    has_candidate = (
        np.bincount(labels, weights=candidate.astype(np.float64), minlength=n_comp) > 0
    )
    # A component with neither users nor existing names: every node may name it.
    candidate = candidate | ~has_candidate[labels]
    idx = np.arange(n)
    order = np.lexsort((idx, first_seen, ~is_named, ~is_user, ~candidate, labels))
    first_of = np.ones(n, dtype=bool)
    sorted_labels = labels[order]
    first_of[1:] = sorted_labels[1:] != sorted_labels[:-1]
    chosen = np.empty(n_comp, dtype=np.int64)
    chosen[sorted_labels[first_of]] = order[first_of]
    return chosen
