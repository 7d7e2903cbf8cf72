"""The topology derivation in scripts/extract_mediapipe_assets.py, on small hand-made meshes."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location(
    "extract_mediapipe_assets", Path(__file__).resolve().parents[1] / "scripts" / "extract_mediapipe_assets.py"
)
extract = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(extract)

# Triangle 0-1-2 split by centre vertex 3, with one more triangle on each outer edge: 0-1-2 is a 3-cycle of the
# edge graph but not a face.
FAN_EDGES = [(0, 1), (1, 2), (2, 0), (3, 0), (3, 1), (3, 2), (4, 0), (4, 1), (5, 1), (5, 2), (6, 2), (6, 0)]


def test_parse_connection_sets_reads_frozenset_literals_only():
    src = "A = frozenset([(1, 2), (2, 3)])\nB = frozenset().union(*[A])\nC = 3\n"
    assert extract.parse_connection_sets(src) == {"A": [(1, 2), (2, 3)]}


def test_false_triangle_around_degree_three_vertex_is_dropped():
    faces = extract.triangles_from_edges(FAN_EDGES, expected_loops=1)
    assert len(faces) == 6
    assert {0, 1, 2} not in [set(f) for f in faces]
    directed = [(f[k], f[(k + 1) % 3]) for f in faces for k in range(3)]
    assert len(directed) == len(set(directed))  # consistent winding


def test_unexpected_boundary_is_rejected():
    with pytest.raises(ValueError, match="boundary loops"):
        extract.triangles_from_edges(FAN_EDGES, expected_loops=4)


def test_two_open_chains_join_without_crossing():
    verts = np.array([[0, 0], [1, 0], [2, 0], [0, 1], [1, 1], [2, 1]], float)
    poly = extract.as_ccw_polygon([[0, 1, 2], [3, 4, 5]], verts)
    assert list(poly) == [0, 1, 2, 5, 4, 3]
    assert extract.signed_area(verts[poly]) == pytest.approx(2.0)
