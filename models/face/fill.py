"""Surfaces over the holes of the 468-point face mesh: the eyes and the open mouth.

The mesh leaves both eyes and the mouth opening as holes. For shading they are not holes: a closed eye or an open eye
is lit like the eyelids around it, and the teeth behind the lips face forward along the dental arch. Filling them
keeps relighting from falling back to a head-proxy normal there (measured on a synthetic head: eyes 26 deg and mouth
35 deg off before filling).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.face.resources import MeshTopology

# The visible teeth span the front of the dental arch (canine to canine); towards the mouth corners they turn
# sideways. Normal = forward + ARCH_TILT * u * side, u in [-0.5, 0.5] across the mouth: ~31 deg at the corners.
ARCH_TILT = 1.2


@dataclass(frozen=True)
class ContourChains:
    """A closed feature contour split at its two horizontal extremes into an upper and a lower chain.

    Both chains run from the image-left corner to the image-right corner and share those corner vertices.
    """

    upper: np.ndarray  # (n_up,) vertex indices
    lower: np.ndarray  # (n_lo,) vertex indices


def split_contour(loop: np.ndarray, xy_px: np.ndarray) -> ContourChains:
    """Split closed `loop` (vertex ids) at its min-x and max-x vertices; the chain higher in the image is `upper`."""
    loop = np.asarray(loop)
    x = xy_px[loop, 0]
    i_left, i_right = int(np.argmin(x)), int(np.argmax(x))
    n = len(loop)
    forward = [loop[(i_left + k) % n] for k in range((i_right - i_left) % n + 1)]
    backward = [loop[(i_left - k) % n] for k in range((i_left - i_right) % n + 1)]
    a, b = np.array(forward), np.array(backward)
    # Image rows grow downward: the chain with the smaller mean row is the upper one.
    if xy_px[a[1:-1], 1].mean() <= xy_px[b[1:-1], 1].mean():
        return ContourChains(upper=a, lower=b)
    return ContourChains(upper=b, lower=a)


def strip_triangles(chains: ContourChains, positions: np.ndarray) -> np.ndarray:
    """Triangles filling the hole between two chains, wound counter-clockwise seen from +Z (camera space)."""
    up, lo = chains.upper, chains.lower
    t_up = np.linspace(0.0, 1.0, len(up))
    t_lo = np.linspace(0.0, 1.0, len(lo))
    tris = []
    i = j = 0
    # Merge-walk both chains by their normalised arc position, emitting one triangle per advance.
    while i < len(up) - 1 or j < len(lo) - 1:
        advance_up = j == len(lo) - 1 or (i < len(up) - 1 and t_up[i + 1] <= t_lo[j + 1])
        if advance_up:
            tri = (up[i], lo[j], up[i + 1])
            i += 1
        else:
            tri = (up[i], lo[j], lo[j + 1])
            j += 1
        if len(set(tri)) == 3:
            tris.append(tri)
    tris = np.array(tris, dtype=np.int64)
    p = positions[tris]
    normal_z = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])[:, 2]
    tris[normal_z < 0] = tris[normal_z < 0][:, [0, 2, 1]]
    return tris


def eye_fill_triangles(topology: MeshTopology, reference_vertices: np.ndarray) -> np.ndarray:
    """(F, 3) triangles closing both eye holes (lid to lid), from a frontal reference mesh in camera space (y up).

    The split and winding depend only on the topology, so compute them once on the canonical face.
    """
    xy_img = np.c_[reference_vertices[:, 0], -reference_vertices[:, 1]]
    eyes = (split_contour(topology.right_eye, xy_img), split_contour(topology.left_eye, xy_img))
    return np.concatenate([strip_triangles(eye, reference_vertices) for eye in eyes])


def arch_normals(pixels_xy: np.ndarray, corner_left_xy: np.ndarray, corner_right_xy: np.ndarray,
                 forward: np.ndarray, side: np.ndarray) -> np.ndarray:
    """Unit camera-space normals (N, 3) of the teeth behind an open mouth at image pixels (N, 2) (x right, y down).

    `corner_*_xy`: the mouth corners in the same pixels; `forward`: where the mouth faces (camera space, y up: the
    head's forward axis; the inner lips' mean normal points down); `side`: the head's left-to-right axis.
    """
    axis = np.asarray(corner_right_xy, np.float64) - np.asarray(corner_left_xy, np.float64)
    width = max(float(np.linalg.norm(axis)), 1e-6)
    u = (np.asarray(pixels_xy, np.float64) - corner_left_xy) @ (axis / width) / width - 0.5
    forward = np.asarray(forward, np.float64) / max(float(np.linalg.norm(forward)), 1e-12)
    n = forward[None, :] + ARCH_TILT * u[:, None] * np.asarray(side, np.float64)[None, :]
    return (n / np.linalg.norm(n, axis=1, keepdims=True)).astype(np.float32)
