"""The permutohedral lattice: fast high-dimensional Gaussian filtering in PyTorch tensor operations.

The dense CRF's mean field needs, for every pixel i, the Gaussian-weighted sum over all pixels j

    out_i = sum_j exp(-|f_i - f_j|^2 / 2) v_j                       (Krähenbühl & Koltun 2011, Eq. 4-5)

of values v (one per class) with features f (position / theta, colour / theta). Done directly that
is O(N^2); the permutohedral lattice of Adams, Baek & Davis (Eurographics 2010) approximates it in
O(N d^2) by three steps, each a sparse linear map:

1. **splat**: each feature vector f (d numbers) is embedded into the hyperplane
   H_d = {x in R^(d+1) : sum_k x_k = 0}, where the lattice points (integer vectors whose coordinates
   are all congruent mod d+1) tile the plane with simplices. The point's value is spread onto the
   d+1 vertices of the simplex enclosing it with its barycentric weights;
2. **blur**: along each of the d+1 lattice directions u_j = (d+1) e_j - (1, ..., 1) in turn, every
   lattice point takes [1 2 1]/4 of (previous neighbour, itself, next neighbour); together the d+1
   one-dimensional blurs approximate a Gaussian;
3. **slice**: each pixel reads back the blurred values of its simplex's vertices with the same
   barycentric weights (slice = splat transposed).

Only lattice points that receive a value are stored: they are found by encoding each point's integer
key into one int64 and calling ``torch.unique``. Everything that depends only on the features (the
splat indices and weights, the blur neighbours) is computed once in :class:`PermutohedralLattice`
and stored as three kinds of sparse matrices (splat S^T, blur B_j, slice S);
:meth:`PermutohedralLattice.filter` then runs for any values, e.g. once per mean-field iteration:
out = S B_d ... B_0 S^T v, a few sparse-dense products on CPU or GPU.

The result approximates the Gaussian filter (with the constant of Adams et al. that makes it
unnormalised); the CRF normalises the kernel as pydensecrf does (``dlib.crf.meanfield``). Several images can share
one lattice: a ``segment`` id per point (the image index) is part of every key, so points of
different images never meet. Notebook 04 draws the three steps for d = 2.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["PermutohedralLattice", "embed", "enclosing_simplex"]


def embed(features: torch.Tensor) -> torch.Tensor:
    """Features (N, d) -> points on the hyperplane sum_k x_k = 0 of R^(d+1), (N, d+1), lattice units.

    x = E diag(s) f with E[k, j] = 1 for j >= k, -k for j = k - 1, 0 otherwise (columns sum to zero),
    s_j = sqrt(2/3) (d+1) / sqrt((j+1)(j+2)). E has orthogonal columns of norm sqrt((j+1)(j+2)), so
    E diag(s) is sqrt(2/3) (d+1) times an isometry: the lattice spacing for which the d+1 blurs of
    [1 2 1]/4 approximate a Gaussian of unit standard deviation in feature space (Adams et al. 2010).
    """
    n, d = features.shape
    j = torch.arange(d, dtype=features.dtype, device=features.device)
    scale = (2.0 / 3.0) ** 0.5 * (d + 1) / torch.sqrt((j + 1) * (j + 2))
    e = torch.triu(torch.ones(d + 1, d, dtype=features.dtype, device=features.device))  # E[k, j] = 1, j >= k
    e[torch.arange(1, d + 1), torch.arange(d)] = -torch.arange(1, d + 1, dtype=features.dtype, device=features.device)
    return (features * scale) @ e.T


def enclosing_simplex(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertices and barycentric weights of the lattice simplex around each point x (N, d+1) of H_d.

    Returns keys (N, d+1, d+1) int64 (vertex r of point i: its d+1 integer coordinates, r = 0..d) and
    weights (N, d+1) (>= 0, summing to 1 per point). Adams et al. 2010, Sec. 3.1:
    the nearest "remainder-0" point x0 (coordinates multiples of d+1) is found by rounding; the order
    (rank) of the coordinates of x - x0 names the simplex, whose vertices are
    x0 + r (1, ..., 1) - (d+1) [rank_k > d - r] for r = 0..d.
    """
    n, d1 = x.shape
    d = d1 - 1
    # Nearest point with every coordinate a multiple of (d+1); it may lie off the plane by 'excess' steps.
    x0 = torch.round(x / d1) * d1
    excess = torch.round(x0.sum(1) / d1).long()  # sum_k x0_k / (d+1)
    # rank_k = position of coordinate k when the differences x - x0 are sorted in decreasing order.
    order = torch.argsort(-(x - x0), dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(d1, device=x.device).expand(n, d1).contiguous())
    # Bring x0 back onto the plane: move the 'excess' largest/smallest coordinates by (d+1).
    rank = rank + excess[:, None]
    low, high = rank < 0, rank > d
    rank = torch.where(low, rank + d1, torch.where(high, rank - d1, rank))
    x0 = torch.where(low, x0 + d1, torch.where(high, x0 - d1, x0))
    # Barycentric weights: b_{d - rank_k} += (x_k - x0_k)/(d+1), b_{d - rank_k + 1} -= the same.
    delta = (x - x0) / d1
    b = torch.zeros(n, d1 + 1, dtype=x.dtype, device=x.device)
    b.scatter_add_(1, d - rank, delta)
    b.scatter_add_(1, d - rank + 1, -delta)
    b[:, 0] += 1.0 + b[:, d1]
    weights = b[:, :d1]
    # Vertex r: x0_k + r, minus (d+1) where rank_k > d - r (the 'canonical simplex' shifted by x0).
    r = torch.arange(d1, device=x.device)
    canonical = r[:, None] - d1 * (rank[:, None, :] > (d - r)[None, :, None]).long()  # (N, d+1 [r], d+1 [k])
    keys = x0.long()[:, None, :] + canonical
    return keys, weights


def _encode(keys: torch.Tensor, low: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """Integer keys (K, m) -> one int64 each: mixed radix over the coordinates' ranges [low, low + span)."""
    if float(torch.prod(span.double())) >= 2.0 ** 62:
        raise OverflowError("lattice keys too wide for one int64; use larger standard deviations")
    code = torch.zeros(keys.shape[0], dtype=torch.int64, device=keys.device)
    for k in range(keys.shape[1]):
        code = code * span[k] + (keys[:, k] - low[k])
    return code


def _lookup(unique: torch.Tensor, query: torch.Tensor, low: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """Index of each query key (K, m) among the sorted lattice codes ``unique``, or M where it is absent."""
    inside = ((query >= low) & (query < low + span)).all(1)
    code = _encode(torch.minimum(torch.maximum(query, low), low + span - 1), low, span)
    pos = torch.searchsorted(unique, code).clamp(max=unique.numel() - 1)
    found = inside & (unique[pos] == code)
    return torch.where(found, pos, torch.full_like(pos, unique.numel()))


def _sparse(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A sparse CSR matrix from (row, column, value) triples (duplicates summed)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta": matrix products are all we use
        warnings.simplefilter("ignore", UserWarning)
        coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape).coalesce()
        return coo.to_sparse_csr()


class PermutohedralLattice:
    """The lattice of a set of features, built once; ``filter(values)`` is then splat -> blur -> slice.

    ``features`` (N, d) float (already divided by the standard deviations); ``segment`` (N,) int64
    optional: points with different segment ids (e.g. images of a batch) never interact.
    Attributes: ``num_points`` M (lattice points that receive a value), ``index`` (N, d+1) the lattice
    point of each simplex vertex, ``weight`` (N, d+1) the barycentric weights, ``neighbours`` (d+1, 2, M)
    the previous and next point along each direction (M where there is none). Each step is stored as a
    sparse matrix, built once: splat = S^T (M, N), slice = S (N, M) with S[i, index[i, r]] = weight[i, r],
    blur_j = B_j (M, M) with 1/2 on the diagonal and 1/4 at the two neighbours along direction j.
    """

    def __init__(self, features: torch.Tensor, segment: torch.Tensor | None = None):
        if features.ndim != 2:
            raise ValueError(f"features must be (N, d), got shape {tuple(features.shape)}")
        n, d = features.shape
        device = features.device
        self.dim = d
        x = embed(features.double() if device.type == "cpu" else features.float())
        keys, weight = enclosing_simplex(x)  # (N, d+1, d+1), (N, d+1)
        keys = keys[..., :d]  # the last coordinate is implied: the coordinates sum to zero
        if segment is not None:
            keys = torch.cat([segment.to(keys)[:, None, None].expand(n, d + 1, 1), keys], dim=-1)
        flat = keys.reshape(-1, keys.shape[-1])
        low = flat.min(0).values
        span = flat.max(0).values - low + 1
        codes = _encode(flat, low, span)  # one int64 per (pixel, vertex)
        unique, index = torch.unique(codes, return_inverse=True)  # the lattice points, sorted by code
        self.num_points = m = unique.numel()
        self.index = index.reshape(n, d + 1)
        self.weight = weight.float()  # values are filtered in float32
        # Blur neighbours: along direction j the neighbours of key k are k -/+ u_j, with
        # u_j = (d+1) e_j - (1, ..., 1) (coordinate j moves by d, the others by -1).
        first = torch.zeros(m, dtype=torch.int64, device=device)
        first[index] = torch.arange(index.numel(), device=device)  # one (pixel, vertex) per point
        point_keys = flat[first]  # (M, [segment +] d)
        off = 0 if segment is None else 1
        neighbours = []
        for j in range(d + 1):
            step = torch.full((flat.shape[1],), -1, dtype=torch.int64, device=device)
            if off:
                step[0] = 0  # never cross into another image
            if j < d:
                step[off + j] = d
            neighbours.append(torch.stack([_lookup(unique, point_keys + sign * step, low, span) for sign in (-1, 1)]))
        self.neighbours = torch.stack(neighbours)  # (d+1, 2, M)
        # The sparse matrices of the three steps.
        pixel = torch.arange(n, device=device).repeat_interleave(d + 1)
        self.slice_matrix = _sparse(pixel, self.index.reshape(-1), self.weight.reshape(-1), (n, m))
        self.splat_matrix = _sparse(self.index.reshape(-1), pixel, self.weight.reshape(-1), (m, n))
        self.blur_matrices = []
        point = torch.arange(m, device=device)
        for prev, nxt in self.neighbours:
            rows = [point, point[prev < m], point[nxt < m]]
            cols = [point, prev[prev < m], nxt[nxt < m]]
            vals = [torch.full((m,), 0.5, device=device), torch.full((len(rows[1]),), 0.25, device=device),
                    torch.full((len(rows[2]),), 0.25, device=device)]
            self.blur_matrices.append(_sparse(torch.cat(rows), torch.cat(cols), torch.cat(vals), (m, m)))

    def splat(self, values: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (M, C): lattice point p gets sum_i weight(i, p) v_i over the pixels i whose simplex has p."""
        return self.splat_matrix @ values

    def blur(self, lattice_values: torch.Tensor) -> torch.Tensor:
        """(M, C) -> (M, C): [1 2 1]/4 along each of the d+1 lattice directions in turn (missing points are 0)."""
        for b in self.blur_matrices:
            lattice_values = b @ lattice_values
        return lattice_values

    def slice(self, lattice_values: torch.Tensor) -> torch.Tensor:
        """(M, C) -> (N, C): each pixel's barycentric interpolation of its simplex's vertices."""
        return self.slice_matrix @ lattice_values

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """sum_j exp(-|f_i - f_j|^2 / 2) v_j (j = i included) for values (N, C), as the lattice approximates it.

        The approximation is a Gaussian-like kernel whose level drifts with d and the density of points
        (tests/test_lattice.py measures it); the CRF's normalisations divide the level out.
        """
        # Adams et al.'s constant: splat-blur-slice of a single point returns 1 / (1 + 2^-d) of it with
        # blur weights [1/2 1 1/2]; ours are [1 2 1]/4, half of those in each of the d+1 directions.
        gain = 2.0 ** (self.dim + 1) / (1.0 + 2.0 ** -self.dim)
        return gain * self.slice(self.blur(self.splat(values.float())))
