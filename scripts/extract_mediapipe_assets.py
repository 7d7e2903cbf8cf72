"""Build models/face/assets/ from the MediaPipe 0.10.21 wheel (Apache-2.0).

    python scripts/extract_mediapipe_assets.py [--wheel mediapipe-0.10.21-...whl]

Without --wheel the wheel is fetched with `pip download --no-deps mediapipe==0.10.21 --python-version 3.11
--only-binary=:all:`. This is a developer tool: its outputs are committed, so nothing downloads at run time.

Outputs:
  face_detection_short_range.tflite, face_landmark.tflite, selfie_segmentation.tflite  (copied verbatim)
  LICENSE.mediapipe, NOTICE.md                  (licence of the copied/derived material)
  topology.npz      mesh triangles + feature contours + left/right mirror map, derived as data from
                    mediapipe/python/solutions/face_mesh_connections.py (parsed with `ast`, never imported)
  canonical_face.npz  a symmetric frontal reference mesh, from the landmark network run on skimage's astronaut
"""

from __future__ import annotations

import argparse
import ast
import collections
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from itertools import combinations
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VERSION = "0.10.21"
ASSETS = REPO / "models" / "face" / "assets"
MODELS = {
    "mediapipe/modules/face_detection/face_detection_short_range.tflite": "face_detection_short_range.tflite",
    "mediapipe/modules/face_landmark/face_landmark.tflite": "face_landmark.tflite",
    "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite": "selfie_segmentation.tflite",
}
CONNECTIONS = "mediapipe/python/solutions/face_mesh_connections.py"
LICENSE = f"mediapipe-{VERSION}.dist-info/LICENSE"
NUM_VERTICES = 468
EXPECTED_BOUNDARY_LOOPS = 4  # face outline, two eyes, mouth


def fetch_wheel(dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", f"mediapipe=={VERSION}", "--python-version", "3.11",
         "--only-binary=:all:", "--platform", "manylinux_2_28_x86_64", "-d", str(dest)],
        check=True,
    )
    (wheel,) = dest.glob("mediapipe-*.whl")
    return wheel


def parse_connection_sets(source: str) -> dict[str, list[tuple[int, int]]]:
    """Every `NAME = frozenset([(a, b), ...])` literal in the connections module."""
    sets = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Call)):
            continue
        call = node.value
        if getattr(call.func, "id", None) == "frozenset" and call.args and isinstance(call.args[0], ast.List):
            sets[node.targets[0].id] = [tuple(e) for e in ast.literal_eval(call.args[0])]
    return sets


def triangles_from_edges(edges: list[tuple[int, int]], expected_loops: int = EXPECTED_BOUNDARY_LOOPS) -> np.ndarray:
    """Faces of the triangulated surface whose edge graph is `edges`.

    Every face is a 3-cycle, but not every 3-cycle is a face: a vertex of degree 3 sits inside a 3-cycle that is
    the outline of its three faces. Such a false triangle is the one whose three edges each already border more
    than the two faces a manifold edge can have; drop those until the surface is a manifold with boundary.
    """
    adj = collections.defaultdict(set)
    for a, b in edges:
        if a != b:
            adj[a].add(b)
            adj[b].add(a)
    cycles = {tuple(sorted((a, b, c))) for a in adj for b in adj[a] for c in adj[a] & adj[b]}
    edge_use = collections.Counter(e for t in cycles for e in combinations(t, 2))
    false = [t for t in cycles if all(edge_use[e] > 2 for e in combinations(t, 2))]
    faces = sorted(cycles - set(false))
    edge_use = collections.Counter(e for t in faces for e in combinations(t, 2))
    over = [e for e, n in edge_use.items() if n > 2]
    if over:
        raise ValueError(f"tessellation is not a manifold after removing {len(false)} false triangles: {over[:5]}")
    boundary = [e for e, n in edge_use.items() if n == 1]
    loops = len(_components(boundary))
    chi = len(adj) - len(edge_use) + len(faces)
    if loops != expected_loops or chi != 2 - loops:
        raise ValueError(f"unexpected surface: {loops} boundary loops, Euler characteristic {chi}")
    print(f"tessellation: {len(adj)} vertices, {len(edge_use)} edges, {len(cycles)} 3-cycles, "
          f"{len(false)} false, {len(faces)} faces, {loops} boundary loops")
    return orient_consistently(np.array(faces, dtype=np.int32))


def orient_consistently(faces: np.ndarray) -> np.ndarray:
    """Flip faces so neighbours traverse their shared edge in opposite directions (breadth-first over edges)."""
    faces = faces.copy()
    by_edge = collections.defaultdict(list)
    for i, t in enumerate(faces):
        for a, b in combinations(t, 2):
            by_edge[(min(a, b), max(a, b))].append(i)
    done = np.zeros(len(faces), bool)
    done[0] = True
    queue = collections.deque([0])
    while queue:
        i = queue.popleft()
        t = faces[i]
        for k in range(3):
            a, b = t[k], t[(k + 1) % 3]
            for j in by_edge[(min(a, b), max(a, b))]:
                if done[j]:
                    continue
                u = faces[j]
                # Neighbour must run b -> a; if it runs a -> b, reverse it.
                if any(u[m] == a and u[(m + 1) % 3] == b for m in range(3)):
                    faces[j] = u[::-1]
                done[j] = True
                queue.append(j)
    if not done.all():
        raise ValueError("tessellation is not connected")
    return faces


def _components(edges: list[tuple[int, int]]) -> list[set[int]]:
    adj = collections.defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    seen, comps = set(), []
    for v in adj:
        if v in seen:
            continue
        comp, stack = set(), [v]
        while stack:
            x = stack.pop()
            if x not in comp:
                comp.add(x)
                stack.extend(adj[x] - comp)
        seen |= comp
        comps.append(comp)
    return comps


def walk(edges: list[tuple[int, int]]) -> list[int]:
    """Vertex order of one connected path or cycle given as unordered edges."""
    adj = collections.defaultdict(list)
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    if any(len(n) > 2 for n in adj.values()):
        raise ValueError("contour edges branch")
    ends = [v for v, n in adj.items() if len(n) == 1]
    start = ends[0] if ends else min(adj)
    order, prev = [start], None
    while True:
        nxt = [n for n in adj[order[-1]] if n != prev]
        if not nxt or nxt[0] == start:
            break
        prev = order[-1]
        order.append(nxt[0])
    return order


def contour_loops(edges: list[tuple[int, int]]) -> list[list[int]]:
    return [walk([e for e in edges if e[0] in comp]) for comp in _components(edges)]


def signed_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def as_ccw_polygon(chains: list[list[int]], verts: np.ndarray) -> np.ndarray:
    """One closed polygon, counter-clockwise in the y-up frame, from one cycle or from two open chains."""
    if len(chains) == 1:
        poly = chains[0]
    elif len(chains) == 2:
        a, b = chains
        # Join end to nearer end: the two joining segments are then short and do not cross.
        def join_length(p: list[int]) -> float:
            return float(np.linalg.norm(verts[a[-1], :2] - verts[p[len(a)], :2])
                         + np.linalg.norm(verts[p[-1], :2] - verts[a[0], :2]))

        poly = min((a + b, a + b[::-1]), key=join_length)
    else:
        raise ValueError(f"expected 1 or 2 chains, got {len(chains)}")
    if signed_area(verts[poly, :2]) < 0:
        poly = poly[::-1]
    return np.array(poly, dtype=np.int32)


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool) -> tuple[np.ndarray, float, np.ndarray]:
    from models.face.pose import fit_similarity

    fit = fit_similarity(src, dst, with_scale=with_scale)
    return fit.rotation, fit.scale, fit.translation


def mirror_map(verts: np.ndarray, edges: list[tuple[int, int]]) -> np.ndarray:
    """Vertex -> left/right partner, by matching the mesh to its own mirror image (ICP with optimal assignment).

    Accepted only if it is an involution and maps the edge graph onto itself (a symmetry of the mesh topology).
    """
    from scipy.optimize import linear_sum_assignment

    mirrored = verts * np.array([-1.0, 1.0, 1.0])
    perm = np.arange(len(verts))
    moved = mirrored - mirrored.mean(0) + verts.mean(0)
    for _ in range(20):
        cost = ((verts[:, None, :] - moved[None, :, :]) ** 2).sum(-1)
        _, new_perm = linear_sum_assignment(cost)
        r, s, t = umeyama(mirrored[new_perm], verts, with_scale=False)
        moved = mirrored @ r.T * s + t
        if np.array_equal(new_perm, perm):
            break
        perm = new_perm
    if not np.array_equal(perm[perm], np.arange(len(perm))):
        raise ValueError("mirror map is not an involution")
    # MediaPipe's tessellation is symmetric except for a few quads split along the other diagonal, so an edge
    # whose image is missing must be such a flip: its quad's opposite diagonal must map onto an edge.
    edge_set = {frozenset(e) for e in edges}
    adj = collections.defaultdict(set)
    for a, b in edge_set:
        adj[a].add(b)
        adj[b].add(a)
    flips = 0
    for a, b in edge_set:
        if frozenset((perm[a], perm[b])) in edge_set:
            continue
        opposite = adj[a] & adj[b]
        if len(opposite) != 2 or frozenset(perm[c] for c in opposite) not in edge_set:
            raise ValueError(f"mirror map is not a symmetry of the edge graph at edge {a}-{b}")
        flips += 1
    print(f"mirror map: {(perm != np.arange(len(perm))).sum() // 2} vertex pairs, "
          f"{(perm == np.arange(len(perm))).sum()} on the midline, {flips} edges differ by a diagonal flip")
    return perm.astype(np.int32)


def astronaut_mesh() -> np.ndarray:
    """Landmarks of skimage's astronaut (public domain) in a y-up frame: (x, -y, z)."""
    from skimage import data

    from models.face.detector import FaceDetector
    from models.face.mesh import FaceMesh, roi_from_detection, roi_from_landmarks

    image = data.astronaut()
    (det,) = FaceDetector().detect(image)
    mesh = FaceMesh()
    lm = mesh.landmarks(image, roi_from_detection(det))
    lm = mesh.landmarks(image, roi_from_landmarks(lm.points_px))
    return lm.points_px.astype(np.float64) * np.array([1.0, -1.0, 1.0])


def canonical_frame(verts: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Re-express a face mesh in its own frame and make it exactly mirror-symmetric.

    x: across the symmetry plane toward the subject's left; z: normal of the best-fit plane, toward the viewer;
    y = z x x (up). Units: outer-eye-corner distance = 1; origin at the centroid.
    """
    from models.face.resources import LEFT_EYE_OUTER, RIGHT_EYE_OUTER

    v = verts - verts.mean(0)
    d = v - v[mirror]
    ref = v[LEFT_EYE_OUTER] - v[RIGHT_EYE_OUTER]
    d *= np.sign(d @ ref)[:, None]
    ex = d.sum(0)
    ex /= np.linalg.norm(ex)
    normal = np.linalg.svd(v, full_matrices=False)[2][2]
    normal = normal if normal[2] > 0 else -normal
    ez = normal - ex * (normal @ ex)
    ez /= np.linalg.norm(ez)
    ey = np.cross(ez, ex)
    local = v @ np.stack([ex, ey, ez], axis=1)
    flip = np.array([-1.0, 1.0, 1.0])
    sym = 0.5 * (local + local[mirror] * flip)
    sym -= sym.mean(0)
    sym /= np.linalg.norm(sym[LEFT_EYE_OUTER] - sym[RIGHT_EYE_OUTER])
    return sym


def rigid_vertices(canonical: np.ndarray, topo: dict[str, np.ndarray]) -> np.ndarray:
    """Vertices above the nose base, minus eyes and brows: they follow the skull, not the jaw or expressions."""
    nose_base_y = canonical[2, 1]
    mask = canonical[:, 1] >= nose_base_y
    for name in ("left_eye", "right_eye", "left_eyebrow", "right_eyebrow"):
        mask[topo[name]] = False
    return mask


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help=f"mediapipe {VERSION} wheel (downloaded with pip if omitted)")
    args = parser.parse_args(argv)
    ASSETS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        if not wheel.is_file():
            raise ValueError(f"wheel not found: {wheel}")
        with zipfile.ZipFile(wheel) as zf:
            notices = []
            for member, name in MODELS.items():
                blob = zf.read(member)
                (ASSETS / name).write_bytes(blob)
                notices.append(f"- `{name}` <- `{member}` (sha256 {hashlib.sha256(blob).hexdigest()})")
            (ASSETS / "LICENSE.mediapipe").write_bytes(zf.read(LICENSE))
            connections = zf.read(CONNECTIONS).decode()

    sets = parse_connection_sets(connections)
    tess = sets["FACEMESH_TESSELATION"]
    triangles = triangles_from_edges(tess)

    verts = astronaut_mesh()
    mirror = mirror_map(verts, tess)
    canonical = canonical_frame(verts, mirror)
    # Global winding: counter-clockwise seen from the front (normals toward +z).
    e1 = canonical[triangles[:, 1]] - canonical[triangles[:, 0]]
    e2 = canonical[triangles[:, 2]] - canonical[triangles[:, 0]]
    normal_z = np.cross(e1, e2)[:, 2]
    if (normal_z > 0).mean() < 0.5:
        triangles = triangles[:, ::-1].copy()
        normal_z = -normal_z
    print(f"triangles facing the viewer in the canonical mesh: {(normal_z > 0).mean():.1%}")

    lips_outer, lips_inner = sorted(contour_loops(sets["FACEMESH_LIPS"]), key=lambda c: 61 not in c)
    topo = {
        "triangles": triangles,
        "lips_outer": as_ccw_polygon([lips_outer], canonical),
        "lips_inner": as_ccw_polygon([lips_inner], canonical),
        "left_eye": as_ccw_polygon(contour_loops(sets["FACEMESH_LEFT_EYE"]), canonical),
        "right_eye": as_ccw_polygon(contour_loops(sets["FACEMESH_RIGHT_EYE"]), canonical),
        "left_eyebrow": as_ccw_polygon(contour_loops(sets["FACEMESH_LEFT_EYEBROW"]), canonical),
        "right_eyebrow": as_ccw_polygon(contour_loops(sets["FACEMESH_RIGHT_EYEBROW"]), canonical),
        "face_oval": as_ccw_polygon(contour_loops(sets["FACEMESH_FACE_OVAL"]), canonical),
        "mirror_index": mirror,
    }
    for name, idx in topo.items():
        print(f"  {name}: {idx.shape}")
    np.savez_compressed(ASSETS / "topology.npz", **topo)
    np.savez_compressed(
        ASSETS / "canonical_face.npz",
        vertices=canonical.astype(np.float32),
        rigid_mask=rigid_vertices(canonical, topo),
    )
    notice = f"""# Third-party assets: MediaPipe {VERSION}

Copyright The MediaPipe Authors. Licensed under the Apache License, Version 2.0 (see LICENSE.mediapipe).
Extracted from the PyPI wheel `{wheel.name}` by `scripts/extract_mediapipe_assets.py`.

Copied unmodified:
{chr(10).join(notices)}

Derived (modified) works:
- `topology.npz`: triangles, contours and the left/right vertex map of the 468-point face mesh, computed from the
  edge lists in `{CONNECTIONS}`.
- `canonical_face.npz`: a symmetric reference mesh computed by running `face_landmark.tflite` on
  `skimage.data.astronaut()` (public-domain NASA photograph).
"""
    (ASSETS / "NOTICE.md").write_text(notice)
    print(f"wrote assets to {ASSETS}")


if __name__ == "__main__":
    main()
