"""Triangle rasteriser: which triangle covers each pixel, where in it, and how far away.

Vertices arrive already projected: x = column, y = row (both in pixels, row 0 at the top), z = depth along the
project's camera z axis (toward the viewer), so a LARGER z is NEARER and wins the depth test. Pixel (r, c) is
sampled at its centre (c + 0.5, r + 0.5), so a triangle with area A pixels covers about A pixels.

Barycentrics are affine in screen space (the synth camera is orthographic, where that is exact).

Vectorisation: every triangle's bounding box is unrolled into one flat list of candidate pixels (no per-triangle
Python loop and no padding to a common box size), edge functions are evaluated on that list, and the depth test is a
scatter-max per pixel. Written once for NumPy and CuPy through `array_module`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.xp import array_module


@dataclass(frozen=True)
class Raster:
    """Per-pixel result of `rasterize` for an H x W image.

    triangle_id: (H, W) int32 index into faces, -1 where no triangle covers the pixel.
    barycentric: (H, W, 3) float32 weights of the face's three vertices (zeros where uncovered); they sum to 1.
    depth: (H, W) float32 interpolated z (toward viewer), -inf where uncovered.
    faces: (F, 3) the face array that triangle_id indexes, kept so `interpolate` needs nothing else.
    """

    triangle_id: object
    barycentric: object
    depth: object
    faces: object

    @property
    def coverage(self):
        """(H, W) bool: pixel covered by some triangle."""
        return self.triangle_id >= 0


def _scatter_max(xp, target, index, values) -> None:
    """target[index] = max(target[index], values) with repeated indices handled (NumPy ufunc.at / cupyx)."""
    if xp is np:
        np.maximum.at(target, index, values)
    else:  # pragma: no cover - needs a GPU
        import cupyx

        cupyx.scatter_max(target, index, values)


def _validate(vertices, faces, height: int, width: int) -> None:
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3) [x_px, y_px, z], got shape {tuple(vertices.shape)}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3) vertex indices, got shape {tuple(faces.shape)}")
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if faces.size and (int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[0]):
        raise ValueError(f"faces index outside 0..{vertices.shape[0] - 1}")


def rasterize(vertices, faces, height: int, width: int) -> Raster:
    """Rasterise triangles `faces` (F,3) over `vertices` (V,3) = [x_px, y_px, z] into an H x W `Raster`.

    Both windings are drawn (no back-face culling: the depth test resolves visibility). Pixels exactly on an edge
    shared by two triangles go to exactly one of them (a tie rule on edge direction), so a closed mesh leaves no
    cracks and no double coverage.
    """
    xp = array_module(vertices, faces)
    vertices = xp.asarray(vertices, dtype=xp.float64)
    faces = xp.asarray(faces, dtype=xp.int64)
    _validate(vertices, faces, height, width)

    tri = vertices[faces]  # (F, 3 corners, 3 coords)
    x, y = tri[..., 0], tri[..., 1]
    # Twice the signed area; normalise winding so all edge functions are positive inside.
    area2 = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (y[:, 1] - y[:, 0]) * (x[:, 2] - x[:, 0])
    flipped = area2 < 0
    order = xp.where(flipped[:, None], xp.asarray([0, 2, 1]), xp.asarray([0, 1, 2]))
    tri = xp.take_along_axis(tri, order[:, :, None], axis=1)
    area2 = xp.abs(area2)

    # Bounding boxes in pixel indices whose centres can lie inside; drop degenerate and off-screen triangles.
    x0 = xp.clip(xp.ceil(tri[..., 0].min(1) - 0.5), 0, width).astype(xp.int64)
    x1 = xp.clip(xp.floor(tri[..., 0].max(1) - 0.5), -1, width - 1).astype(xp.int64)
    y0 = xp.clip(xp.ceil(tri[..., 1].min(1) - 0.5), 0, height).astype(xp.int64)
    y1 = xp.clip(xp.floor(tri[..., 1].max(1) - 0.5), -1, height - 1).astype(xp.int64)
    box_w = xp.maximum(x1 - x0 + 1, 0)
    box_h = xp.maximum(y1 - y0 + 1, 0)
    keep = xp.nonzero((area2 > 1e-12) & (box_w > 0) & (box_h > 0))[0]

    tri_id = xp.full((height, width), -1, dtype=xp.int32)
    bary = xp.zeros((height, width, 3), dtype=xp.float32)
    depth = xp.full((height, width), -xp.inf, dtype=xp.float32)
    if keep.size == 0:
        return Raster(tri_id, bary, depth, faces)

    # Edge k (opposite corner k) as a plane e_k(x, y) = A x + B y + C, positive inside; one row per triangle.
    ax, ay = tri[:, [1, 2, 0], 0], tri[:, [1, 2, 0], 1]
    dx, dy = tri[:, [2, 0, 1], 0] - ax, tri[:, [2, 0, 1], 1] - ay
    edge_a, edge_b, edge_c = -dy, dx, dy * ax - dx * ay
    # A pixel centre exactly on an edge shared by two triangles goes to the one whose edge direction lies in the
    # "owning" half of directions; the neighbour traverses that edge the other way round and declines it.
    owns_edge = (dy < 0) | ((dy == 0) & (dx > 0))

    # Unroll every kept triangle's box into one flat candidate list.
    n_box = box_w[keep] * box_h[keep]
    starts = xp.cumsum(n_box) - n_box
    cand_tri = xp.repeat(keep, n_box)
    local = xp.arange(int(n_box.sum()), dtype=xp.int64) - xp.repeat(starts, n_box)
    w_c = box_w[cand_tri]
    py, px = xp.divmod(local, w_c)
    px += x0[cand_tri]
    py += y0[cand_tri]
    sx = px + 0.5
    sy = py + 0.5

    edges = []
    inside = None
    for k in range(3):
        e = edge_a[cand_tri, k] * sx + edge_b[cand_tri, k] * sy + edge_c[cand_tri, k]
        ok = e >= 0
        on_edge = xp.nonzero(e == 0)[0]  # rare: only exactly-aligned centres pay for the tie rule
        ok[on_edge] = owns_edge[cand_tri[on_edge], k]
        inside = ok if inside is None else inside & ok
        edges.append(e)
    idx = xp.nonzero(inside)[0]
    if idx.size == 0:
        return Raster(tri_id, bary, depth, faces)

    tri_in = cand_tri[idx]
    inv_area = 1.0 / area2[tri_in]
    b_sorted = xp.stack([edges[k][idx] * inv_area for k in range(3)], axis=1)  # in normalised winding
    z = (b_sorted * tri[tri_in, :, 2]).sum(1)
    pix = py[idx] * width + px[idx]

    # Depth test: nearest (max z) per pixel; exact ties go to the highest triangle id, deterministically.
    flat_depth = depth.reshape(-1)
    _scatter_max(xp, flat_depth, pix, z.astype(xp.float32))
    winner = z.astype(xp.float32) >= flat_depth[pix]
    flat_id = tri_id.reshape(-1)
    _scatter_max(xp, flat_id, pix[winner], tri_in[winner].astype(xp.int32))
    idx_w = xp.nonzero(winner)[0]
    chosen = idx_w[tri_in[idx_w] == flat_id[pix[idx_w]]]

    # Undo the winding normalisation so barycentric k weights the face's own vertex k.
    b_face = b_sorted[chosen]
    swap = flipped[tri_in[chosen]]
    b_face = xp.where(swap[:, None], b_face[:, [0, 2, 1]], b_face)
    bary.reshape(-1, 3)[pix[chosen]] = b_face.astype(xp.float32)
    return Raster(tri_id, bary, depth, faces)


def interpolate(attributes, raster: Raster):
    """Per-pixel barycentric blend of per-vertex `attributes` (V, C) -> (H, W, C) float32; zeros where uncovered."""
    xp = array_module(attributes, raster.triangle_id)
    attributes = xp.asarray(attributes, dtype=xp.float32)
    if attributes.ndim != 2:
        raise ValueError(f"attributes must be (V, C), got shape {tuple(attributes.shape)}")
    faces = raster.faces
    if faces.size and int(faces.max()) >= attributes.shape[0]:
        raise ValueError(f"attributes has {attributes.shape[0]} rows but faces reference vertex {int(faces.max())}")
    h, w = raster.triangle_id.shape
    out = xp.zeros((h, w, attributes.shape[1]), dtype=xp.float32)
    covered = xp.nonzero(raster.triangle_id.reshape(-1) >= 0)[0]
    corner_ids = faces[raster.triangle_id.reshape(-1)[covered]]  # (N, 3)
    b = raster.barycentric.reshape(-1, 3)[covered]
    blended = (attributes[corner_ids] * b[:, :, None]).sum(1)
    out.reshape(-1, attributes.shape[1])[covered] = blended
    return out


def vertex_normals(positions, faces):
    """Smooth unit normals (V, 3) of a mesh: area-weighted sum of incident face normals.

    Positions are in camera space (x right, y up, z toward viewer); a face wound counter-clockwise as seen from the
    viewer gets a normal with positive z. Vertices on no face get (0, 0, 1).
    """
    xp = array_module(positions, faces)
    p = xp.asarray(positions, dtype=xp.float64)
    f = xp.asarray(faces, dtype=xp.int64)
    _validate(p, f, 1, 1)
    face_n = xp.cross(p[f[:, 1]] - p[f[:, 0]], p[f[:, 2]] - p[f[:, 0]])  # length = 2 * area: area weighting
    acc = xp.zeros_like(p)
    for k in range(3):
        if xp is np:
            np.add.at(acc, f[:, k], face_n)
        else:  # pragma: no cover - needs a GPU
            import cupyx

            cupyx.scatter_add(acc, f[:, k], face_n)
    norm = xp.linalg.norm(acc, axis=1, keepdims=True)
    out = xp.where(norm > 1e-20, acc / xp.maximum(norm, 1e-20), xp.asarray([0.0, 0.0, 1.0]))
    return out.astype(xp.float32)
