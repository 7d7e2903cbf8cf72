"""Soft-edge colour decontamination (models/enroll/matte_edges.py)."""

from __future__ import annotations

import numpy as np
import pytest

from models.enroll.matte_edges import SOLID_MATTE, decontaminate_edges


def _disk(h: int = 64, soft_px: float = 3.0):
    yy, xx = np.mgrid[0:h, 0:h] + 0.5
    r = np.hypot(xx - h / 2, yy - h / 2)
    return np.clip((20.0 - r) / soft_px + 0.5, 0.0, 1.0).astype(np.float32)


def test_soft_edge_takes_the_person_colour_not_the_wall():
    matte = _disk()
    person, wall = np.array([0.7, 0.3, 0.2], np.float32), np.array([0.1, 0.3, 0.9], np.float32)
    recorded = matte[..., None] * person + (1 - matte[..., None]) * wall
    clean = decontaminate_edges(recorded, matte)
    band = (matte > 0) & (matte < SOLID_MATTE)
    assert band.sum() > 100
    assert np.abs(recorded[band] - person).max() > 0.3  # the wall is in the recorded edge
    # Up to the wall that the nearly solid pixels (matte 0.95-1) still carry.
    np.testing.assert_allclose(clean[band], np.broadcast_to(person, clean[band].shape), atol=0.01)
    untouched = ~band
    np.testing.assert_array_equal(clean[untouched], recorded[untouched])  # solid person and empty wall as they were


def test_a_varying_person_colour_is_continued_locally_and_stacks_work():
    matte = _disk()
    xx = (np.mgrid[0:64, 0:64][1] + 0.5) / 64
    person = np.stack([xx, 1 - xx, np.full_like(xx, 0.5)], -1).astype(np.float32)
    recorded = matte[..., None] * person + (1 - matte[..., None]) * 0.0
    clean = decontaminate_edges(np.stack([recorded, recorded]), np.stack([matte, matte]))
    band = (matte > 0) & (matte < SOLID_MATTE)
    # Within a few px of the solid disk the horizontal ramp moves by a few percent at most.
    assert np.abs(clean[0][band] - person[band]).max() < 0.08
    np.testing.assert_array_equal(clean[0], clean[1])


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="albedo must be"):
        decontaminate_edges(np.zeros((8, 8, 3)), np.zeros((8, 9)))
