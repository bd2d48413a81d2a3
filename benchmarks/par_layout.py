"""umap-learn's layout epochs on every numba thread, reproducibly (issue 16, parlayout helper).

umap-learn sets ``parallel=False`` when ``random_state`` is set: its parallel epoch is hogwild
(threads move shared vertices at once, in an order the scheduler picks). This is the same SGD
(umap-learn's gradient, ``clip``, ``rdist``, ``tau_rand_int``, negative sample rate, its
``epochs_per_sample`` schedule and learning-rate decay, a / b, its graph, start and RNG seeds,
all handed over by umap-learn itself), made deterministic by **vertex ownership**:

* each epoch starts from a copy of the layout (``prev``);
* a vertex moves only itself: the pull along each of its out-edges (``head == v``) that is due,
  then that edge's negative samples (v's own RNG state, as umap-learn keys it: per head vertex),
  then, where umap-learn moves the other end too (``move_other``, its ``fit``), the pull along
  each due in-edge (``tail == v``), which umap-learn applies when it handles the edge's head;
* a vertex reads its own live coordinates and everybody else's from ``prev``;
* the edges' due epochs advance in a second pass, after every vertex has moved.

So no two threads write one value, each vertex's arithmetic runs in a fixed order, and nothing
depends on which thread or how many handle it: the layout is byte-identical for a fixed seed
whatever ``NUMBA_NUM_THREADS`` or the scheduling. It differs from the serial epoch only in what a
vertex sees of the others: their previous epoch's positions (Jacobi) instead of the ones already
moved this epoch (Gauss-Seidel).

``optimize_layout_owned`` has umap-learn's ``optimize_layout_euclidean`` signature, so
``owned_layout()`` puts it in that function's place for the UMAP fits inside the block.
``lay:par`` / ``parc`` / ``paro`` / ``pars`` of ``fast_layout.py`` fit with these; run as a script,
it times the layout alone (``python benchmarks/par_layout.py``, under the engine lock).
"""

from __future__ import annotations

import contextlib

import numba
import numpy as np
from umap.layouts import clip, rdist
from umap.utils import tau_rand_int


@numba.njit(parallel=True, fastmath=True, cache=True)
def _owned_epoch(emb, prev, out_ptr, out_edge, in_ptr, in_edge, head, tail, n_vertices,
                 epochs_per_sample, a, b, rng_state_per_sample, gamma, dim, move_other, alpha,
                 epochs_per_negative_sample, epoch_of_next_negative_sample, epoch_of_next_sample, n):
    nv = emb.shape[0]
    for v in numba.prange(nv):
        for d in range(dim):
            prev[v, d] = emb[v, d]
    for v in numba.prange(nv):
        current = emb[v]
        for p in range(out_ptr[v], out_ptr[v + 1]):
            i = out_edge[p]
            if epoch_of_next_sample[i] > n:
                continue
            k = tail[i]
            other = current if k == v else prev[k]
            dist_squared = rdist(current, other)
            if dist_squared > 0.0:
                grad_coeff = -2.0 * a * b * pow(dist_squared, b - 1.0)
                grad_coeff /= a * pow(dist_squared, b) + 1.0
            else:
                grad_coeff = 0.0
            for d in range(dim):
                current[d] += clip(grad_coeff * (current[d] - other[d])) * alpha
            n_neg_samples = int((n - epoch_of_next_negative_sample[i]) / epochs_per_negative_sample[i])
            for _ in range(n_neg_samples):
                k = tau_rand_int(rng_state_per_sample[v]) % n_vertices
                if k == v:  # umap-learn: distance 0 to itself, skipped
                    continue
                other = prev[k]
                dist_squared = rdist(current, other)
                if dist_squared > 0.0:
                    grad_coeff = 2.0 * gamma * b
                    grad_coeff /= (0.001 + dist_squared) * (a * pow(dist_squared, b) + 1)
                else:
                    grad_coeff = 0.0
                if grad_coeff > 0.0:
                    for d in range(dim):
                        current[d] += clip(grad_coeff * (current[d] - other[d])) * alpha
            epoch_of_next_negative_sample[i] += n_neg_samples * epochs_per_negative_sample[i]
        if move_other:
            for p in range(in_ptr[v], in_ptr[v + 1]):
                i = in_edge[p]
                if epoch_of_next_sample[i] > n:
                    continue
                j = head[i]
                other = current if j == v else prev[j]
                dist_squared = rdist(current, other)
                if dist_squared > 0.0:
                    grad_coeff = -2.0 * a * b * pow(dist_squared, b - 1.0)
                    grad_coeff /= a * pow(dist_squared, b) + 1.0
                else:
                    grad_coeff = 0.0
                for d in range(dim):
                    current[d] += clip(grad_coeff * (current[d] - other[d])) * alpha
    for i in numba.prange(epoch_of_next_sample.shape[0]):
        if epoch_of_next_sample[i] <= n:
            epoch_of_next_sample[i] += epochs_per_sample[i]


@numba.njit(parallel=True, fastmath=True, cache=True)
def _colored_epoch(emb, prev, color, color_ptr, color_vertex, out_ptr, out_edge, in_ptr, in_edge, head,
                   tail, n_vertices, epochs_per_sample, a, b, rng_state_per_sample, gamma, dim,
                   move_other, alpha, epochs_per_negative_sample, epoch_of_next_negative_sample,
                   epoch_of_next_sample, n, ordered):
    nv = emb.shape[0]
    for v in numba.prange(nv):
        for d in range(dim):
            prev[v, d] = emb[v, d]
    for c in range(color_ptr.shape[0] - 1):
        for q in numba.prange(color_ptr[c], color_ptr[c + 1]):
            v = color_vertex[q]
            current = emb[v]
            # ``ordered``: the pulls umap-learn's serial epoch gives v before its own edges (those
            # of the edges whose head comes before v) first, as it does
            first = in_ptr[v]
            if ordered and move_other:
                while first < in_ptr[v + 1] and head[in_edge[first]] < v:
                    i = in_edge[first]
                    first += 1
                    if epoch_of_next_sample[i] > n:
                        continue
                    other = emb[head[i]]
                    dist_squared = rdist(current, other)
                    if dist_squared > 0.0:
                        grad_coeff = -2.0 * a * b * pow(dist_squared, b - 1.0)
                        grad_coeff /= a * pow(dist_squared, b) + 1.0
                    else:
                        grad_coeff = 0.0
                    for d in range(dim):
                        current[d] += clip(grad_coeff * (current[d] - other[d])) * alpha
            for p in range(out_ptr[v], out_ptr[v + 1]):
                i = out_edge[p]
                if epoch_of_next_sample[i] > n:
                    continue
                k = tail[i]
                other = emb[k]  # another colour: not moving now, its latest position
                dist_squared = rdist(current, other)
                if dist_squared > 0.0:
                    grad_coeff = -2.0 * a * b * pow(dist_squared, b - 1.0)
                    grad_coeff /= a * pow(dist_squared, b) + 1.0
                else:
                    grad_coeff = 0.0
                for d in range(dim):
                    current[d] += clip(grad_coeff * (current[d] - other[d])) * alpha
                n_neg_samples = int((n - epoch_of_next_negative_sample[i]) / epochs_per_negative_sample[i])
                for _ in range(n_neg_samples):
                    k = tau_rand_int(rng_state_per_sample[v]) % n_vertices
                    if k == v:
                        continue
                    # ``ordered``: latest where k does not move now, else the epoch's start
                    other = emb[k] if ordered and color[k] != c else prev[k]
                    dist_squared = rdist(current, other)
                    if dist_squared > 0.0:
                        grad_coeff = 2.0 * gamma * b
                        grad_coeff /= (0.001 + dist_squared) * (a * pow(dist_squared, b) + 1)
                    else:
                        grad_coeff = 0.0
                    if grad_coeff > 0.0:
                        for d in range(dim):
                            current[d] += clip(grad_coeff * (current[d] - other[d])) * alpha
                epoch_of_next_negative_sample[i] += n_neg_samples * epochs_per_negative_sample[i]
            if move_other:
                for p in range(first, in_ptr[v + 1]):
                    i = in_edge[p]
                    if epoch_of_next_sample[i] > n:
                        continue
                    other = emb[head[i]]
                    dist_squared = rdist(current, other)
                    if dist_squared > 0.0:
                        grad_coeff = -2.0 * a * b * pow(dist_squared, b - 1.0)
                        grad_coeff /= a * pow(dist_squared, b) + 1.0
                    else:
                        grad_coeff = 0.0
                    for d in range(dim):
                        current[d] += clip(grad_coeff * (current[d] - other[d])) * alpha
    for i in numba.prange(epoch_of_next_sample.shape[0]):
        if epoch_of_next_sample[i] <= n:
            epoch_of_next_sample[i] += epochs_per_sample[i]


@numba.njit(cache=True)
def _greedy_colors(nv, out_ptr, out_edge, in_ptr, in_edge, head, tail, order):
    """Each vertex (in ``order``) the smallest colour none of its neighbours (either edge
    direction) has yet: no edge joins two vertices of one colour (self-loops aside)."""
    color = np.full(nv, -1, np.int64)
    mark = np.full(nv + 1, -1, np.int64)
    for v in order:
        for p in range(out_ptr[v], out_ptr[v + 1]):
            c = color[tail[out_edge[p]]]
            if c >= 0:
                mark[c] = v
        for p in range(in_ptr[v], in_ptr[v + 1]):
            c = color[head[in_edge[p]]]
            if c >= 0:
                mark[c] = v
        c = 0
        while mark[c] == v:
            c += 1
        color[v] = c
    return color


def _grouped(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR-style (indptr, edge ids) of the edges grouped by ``keys`` (a stable sort: each
    vertex's edges keep umap-learn's order)."""
    order = np.argsort(keys, kind="stable").astype(np.int64)
    ptr = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(keys, minlength=n), out=ptr[1:])
    return ptr, order


def optimize_layout_colored(*args, **kwargs):
    """``optimize_layout_owned`` with the vertices moved one colour class at a time (a greedy
    colouring of the graph): a vertex's pulls read its neighbours' latest positions, as umap-learn's
    serial epoch does, its negative samples the epoch's start."""
    return optimize_layout_owned(*args, colored=True, **kwargs)


def optimize_layout_ordered(*args, **kwargs):
    """``optimize_layout_colored``, each vertex's moves in umap-learn's serial order (the pulls
    of edges whose head comes before it, its own edges with their negative samples, the pulls of
    the rest), negative samples read at their latest position unless they move in the same colour."""
    return optimize_layout_owned(*args, colored=True, ordered=True, **kwargs)


def optimize_layout_shuffled(*args, **kwargs):
    """``optimize_layout_ordered`` with the colours given in a seeded random vertex order."""
    return optimize_layout_owned(*args, colored=True, ordered=True, shuffled=True, **kwargs)


def optimize_layout_owned(head_embedding, tail_embedding, head, tail, n_epochs, n_vertices,
                          epochs_per_sample, a, b, rng_state, gamma=1.0, initial_alpha=1.0,
                          negative_sample_rate=5.0, parallel=False, verbose=False, densmap=False,
                          densmap_kwds=None, tqdm_kwds=None, move_other=False, colored=False,
                          ordered=False, shuffled=False):
    """umap-learn's ``optimize_layout_euclidean`` (same arguments, same schedule), each epoch
    vertex-owned as the module says; ``parallel`` is ignored (always every numba thread, always
    reproducible). densMAP and a list of epochs are umap-learn's alone: refused."""
    if densmap or isinstance(n_epochs, list):
        raise ValueError("the vertex-owned layout runs plain UMAP epochs only (no densMAP, no epoch list)")
    if head_embedding is not tail_embedding:
        raise ValueError("the vertex-owned layout lays out one embedding (umap-learn's fit), not a transform")
    emb = head_embedding
    dim = emb.shape[1]
    head = np.ascontiguousarray(head, np.int64)
    tail = np.ascontiguousarray(tail, np.int64)
    nv = emb.shape[0]
    out_ptr, out_edge = _grouped(head, nv)
    in_ptr, in_edge = _grouped(tail, nv)
    alpha = initial_alpha
    epochs_per_negative_sample = epochs_per_sample / negative_sample_rate
    epoch_of_next_negative_sample = epochs_per_negative_sample.copy()
    epoch_of_next_sample = epochs_per_sample.copy()
    # umap-learn's per-vertex RNG states, from its seed and the start's first coordinate
    rng_state_per_sample = np.full((nv, len(rng_state)), rng_state, dtype=np.int64) + \
        emb[:, 0].astype(np.float64).view(np.int64).reshape(-1, 1)
    prev = np.empty_like(emb)
    if colored:
        # colours given in index order, or (``shuffled``) in an order drawn from umap-learn's seed:
        # rows sorted by class otherwise make the colour classes follow the classes
        order = (np.random.default_rng(np.abs(np.asarray(rng_state, np.int64)).tolist()).permutation(nv)
                 if shuffled else np.arange(nv))
        color = _greedy_colors(nv, out_ptr, out_edge, in_ptr, in_edge, head, tail, order.astype(np.int64))
        color_ptr, color_vertex = _grouped(color, int(color.max()) + 1)
        for n in range(int(n_epochs)):
            _colored_epoch(emb, prev, color, color_ptr, color_vertex, out_ptr, out_edge, in_ptr, in_edge,
                           head, tail, n_vertices, epochs_per_sample, a, b, rng_state_per_sample, gamma,
                           dim, bool(move_other), alpha, epochs_per_negative_sample,
                           epoch_of_next_negative_sample, epoch_of_next_sample, n, bool(ordered))
            alpha = initial_alpha * (1.0 - (float(n) / float(n_epochs)))
        return emb
    for n in range(int(n_epochs)):
        _owned_epoch(emb, prev, out_ptr, out_edge, in_ptr, in_edge, head, tail, n_vertices,
                     epochs_per_sample, a, b, rng_state_per_sample, gamma, dim, bool(move_other),
                     alpha, epochs_per_negative_sample, epoch_of_next_negative_sample,
                     epoch_of_next_sample, n)
        alpha = initial_alpha * (1.0 - (float(n) / float(n_epochs)))
    return emb


@contextlib.contextmanager
def owned_layout(colored=False, ordered=False, shuffled=False):
    """UMAP fits inside the block run ``optimize_layout_owned`` (``colored``:
    ``optimize_layout_colored``; ``ordered``: ``optimize_layout_ordered``) in place of umap-learn's layout (a module-level swap: benchmark
    use, one fit at a time)."""
    from mediacluster.stages.reduce import import_umap

    umap = import_umap()
    saved = umap.umap_.optimize_layout_euclidean
    umap.umap_.optimize_layout_euclidean = (optimize_layout_shuffled if shuffled else
                                            optimize_layout_ordered if ordered else
                                            optimize_layout_colored if colored else optimize_layout_owned)
    try:
        yield
    finally:
        umap.umap_.optimize_layout_euclidean = saved


def main(argv=None) -> int:
    """The layout alone on one set (10k CIFAR-10 test by default): umap-learn's serial epoch
    against ``optimize_layout_owned`` and ``optimize_layout_ordered`` on 1 and 2 numba threads
    (the same graph and start: each a ``UMAPReducer`` fit with the engine's settings on one exact
    kNN graph), wall and CPU seconds of the layout call; whether the vertex-owned layouts are
    byte-identical run to run and across thread counts. Run it under the engine lock."""
    import argparse
    import time

    from mediacluster.stages.neighbors import knn_graph
    from mediacluster.stages.reduce import UMAPReducer, import_umap

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--vectors", default="/work/vec/cifar10-test.npz")
    args = ap.parse_args(argv)
    X = np.load(args.vectors)["vectors"].astype(np.float32)
    knn = knn_graph(X, 15, metric="cosine", method="exact")
    umap = import_umap()
    orig = umap.umap_.optimize_layout_euclidean
    kinds = {"serial": orig, "owned": optimize_layout_owned, "ordered": optimize_layout_ordered}
    spent = {}

    def fit(kind, threads=2):
        def timed(*a, **k):
            t, c = time.perf_counter(), time.process_time()
            try:
                return kinds[kind](*a, **k)
            finally:
                spent.update(wall=time.perf_counter() - t, cpu=time.process_time() - c)
        saved = numba.get_num_threads()
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        umap.umap_.optimize_layout_euclidean = timed
        try:
            return UMAPReducer(n_neighbors=15, n_components=10, min_dist=0.0, n_epochs=200, init="pca",
                               random_state=0).fit(X, precomputed_knn=knn).embedding_
        finally:
            umap.umap_.optimize_layout_euclidean = orig
            numba.set_num_threads(saved)

    print("load before", open("/proc/loadavg").read().split()[:3], flush=True)
    for kind in kinds:  # compile / load the kernels first
        fit(kind)
    out = {}
    print("| layout | numba threads | wall (s) | CPU (s) |\n|---|---|---|---|")
    for kind, n in (("serial", 1), ("owned", 2), ("ordered", 2), ("ordered", 1), ("ordered", 2), ("owned", 1),
                    ("serial", 1)):
        out.setdefault((kind, n), []).append(fit(kind, n).tobytes())
        print(f"| {kind} | {n} | {spent['wall']:.2f} | {spent['cpu']:.2f} |", flush=True)
    a, b = out["ordered", 2]
    print("ordered: run 1 == run 2:", a == b, "; 2 threads == 1 thread:", a == out["ordered", 1][0])
    print("owned: 2 threads == 1 thread:", out["owned", 2][0] == out["owned", 1][0])
    print("load after", open("/proc/loadavg").read().split()[:3])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
