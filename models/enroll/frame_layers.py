"""Per-frame masks and coarse normals in crop space, from a frame's landmarks, head pose and person matte.

What the prepare stage's crops step stores beside each crop (models/enroll/prepare.py): the mask bits (face, skin,
mouth region, mouth interior), the person matte (selfie segmentation), and the coarse normal map the decomposition
refines: the 468-point mesh's normals on the face with eyes and mouth filled, a head ellipsoid around it, an inflated
silhouette on the rest of the person, feathered where one meets the other (docs/enroll.md, "Coarse normals").
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter, maximum_filter, minimum_filter

from models.enroll.expression import lip_region
from models.face.crop import RotatedRect, sample_crop
from models.face.fill import arch_normals, eye_fill_triangles
from models.face.masks import grown_hulls_mask, polygon_mask
from models.face.pose import HeadPose
from models.face.resources import load_canonical_face, load_topology
from models.face.segmentation import INPUT_SIZE_PX as SEGMENTER_INPUT_PX
from models.face.segmentation import SelfieSegmenter
from models.raster import interpolate, rasterize, vertex_normals
from models.xp import smoothstep

# Bits of masks.npy; the person matte is soft and lives in matte.npy.
MASK_BITS = {"face": 1, "skin": 2, "mouth_region": 4, "mouth_interior": 8}
# Head proxy for normals outside the mesh, in the canonical frame (inter-ocular units, y up, z toward viewer):
# the skull is a bit wider than the face oval (+-0.745), reaches ~0.45 above the hairline (0.87) and is about
# two inter-ocular distances deep, its front just behind the nose tip (z 0.38).
HEAD_ELLIPSOID_CENTER = (0.0, 0.2, -0.75)
HEAD_ELLIPSOID_AXES = (0.85, 1.15, 1.05)
LAYERS_VERSION = 5  # what the crops stage computes per frame (2: coarse normals with eyes, mouth and outline filled;
# 3: the rest of the person an inflated silhouette, no longer camera-facing; 4: normals feathered across the mesh's
# edges; 5: the head ellipsoid turns into the silhouette toward its rim)
SILHOUETTE_ROUNDING = 0.08  # of the crop side: how far in from its edge the inflated silhouette faces the camera
# Where the mesh meets what fills around it (jaw over neck, outline over head, lips over the teeth's arch) the normals
# step from one surface to the other within a pixel, along the raster's staircase. The folded albedo cancels the step
# under the enrollment light; under any other light, or under a mouth net whose smooth albedo cannot cancel it, it
# drew a thin dark line along the jaw. A blur over a band either side of the edge (fractions of the crop side:
# 1.5 px and 4 px at 256) smooths the step; on a synthetic head it also moved the normals toward the truth
# (4.63 -> 4.48 deg on the face).
EDGE_FEATHER_SIGMA = 1.5 / 256
EDGE_FEATHER_BAND = 4.0 / 256
# Hair is wider than the skull: toward the ellipsoid's rim its normals turn to the side while the silhouette's
# around it still face the camera, and under a side light the rim drew an arc through the hair. Between these two z
# of the ellipsoid's normal it is blended (smoothstep) into the silhouette's; below the lower one, where it turns
# faster than pixels can sample, it is the silhouette's.
ELLIPSOID_RIM_BLEND_Z = (0.15, 0.5)


def inflated_silhouette_normals(person: np.ndarray, radius_px: float) -> np.ndarray:
    """Unit camera-space normals (H, W, 3) (y up) of a silhouette inflated into a slab with rounded edges: facing
    the camera deeper than `radius_px` inside, turning outward to grazing at the silhouette's edge (a quarter
    circle). The array border is not an edge: a body cut off by the crop continues past it."""
    dist = distance_transform_edt(person)
    t = np.minimum(dist / radius_px, 1.0)
    # Smoothed over a quarter of the rounding: the matte's stair-stepped edge would otherwise ripple the normals.
    height = gaussian_filter(radius_px * np.sqrt(1.0 - (1.0 - t) ** 2), 0.25 * radius_px)
    d_row, d_col = np.gradient(height)
    n = np.stack([-d_col, d_row, np.ones_like(height)], axis=-1)  # camera y = -row
    return (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)


def _into_silhouette(ellipsoid: np.ndarray, hit: np.ndarray, silhouette: np.ndarray) -> np.ndarray:
    """(N, 3) unit normals: the ellipsoid's where it faces the camera, blended into the silhouette's as it turns to
    grazing (ELLIPSOID_RIM_BLEND_Z), the silhouette's where the ray misses it, so the two meet without a step."""
    lo, hi = ELLIPSOID_RIM_BLEND_Z
    w = np.where(hit, smoothstep(ellipsoid[:, 2], lo, hi), 0.0)[:, None]
    n = w * ellipsoid + (1.0 - w) * silhouette
    return (n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-6)).astype(np.float32)


def feather_edges(normals: np.ndarray, edge_band: np.ndarray, sigma_px: float) -> np.ndarray:
    """Unit normals (H, W, 3) with those in `edge_band` (H, W) bool replaced by a Gaussian blur (sigma_px) of the
    map, renormalised. Zero normals (off the person) stay zero and do not pull their neighbours toward zero."""
    valid = np.linalg.norm(normals, axis=-1) > 0.5
    blurred = gaussian_filter(normals * valid[..., None], (sigma_px, sigma_px, 0), truncate=2.5)
    out = normals.copy()
    where = edge_band & valid
    length = np.linalg.norm(blurred[where], axis=-1, keepdims=True)
    out[where] = np.where(length > 1e-6, blurred[where] / np.maximum(length, 1e-6), normals[where])
    return out.astype(np.float32)


def edge_band(covered: np.ndarray, band_px: float) -> np.ndarray:
    """bool (H, W): pixels within band_px (a square's half side) of the boundary of `covered`, on either side."""
    size = 2 * int(round(band_px)) + 1
    return maximum_filter(covered, size) & ~minimum_filter(covered, size)


class FrameLayers:
    """Per-frame masks and coarse normals in crop space from the crop's landmarks and pose."""

    def __init__(self, size_px: int) -> None:
        self.size_px = size_px
        self.topology = load_topology()
        self.region = lip_region()
        self._segmenter = SelfieSegmenter()
        # The eyes are closed over (lid to lid) for the normals: the mesh's own holes would read the head proxy.
        self._mesh_triangle_count = len(self.topology.triangles)
        self._shaded_triangles = np.concatenate([
            self.topology.triangles.astype(np.int64),
            eye_fill_triangles(self.topology, load_canonical_face().vertices)])
        v, u = np.mgrid[0:size_px, 0:size_px].astype(np.float32) + 0.5
        self._pixels_cam = np.stack([u, -v], axis=-1).reshape(-1, 2)  # camera (x, y) of pixel centres

    def masks(self, landmarks_px: np.ndarray) -> np.ndarray:
        """uint8 (S, S) bit field, bits as MASK_BITS."""
        s = self.size_px
        xy = landmarks_px[:, :2]
        topo = self.topology
        face = polygon_mask(xy[topo.face_oval], (s, s))
        skin = face.copy()
        for contour in (topo.left_eye, topo.right_eye, topo.left_eyebrow, topo.right_eyebrow, topo.lips_outer):
            skin &= ~polygon_mask(xy[contour], (s, s))
        bits = face * np.uint8(MASK_BITS["face"]) | skin * np.uint8(MASK_BITS["skin"])
        bits |= self.mouth_region(landmarks_px) * np.uint8(MASK_BITS["mouth_region"])
        bits |= polygon_mask(xy[topo.lips_inner], (s, s)) * np.uint8(MASK_BITS["mouth_interior"])
        return bits.astype(np.uint8)

    def mouth_region(self, landmarks_px: np.ndarray) -> np.ndarray:
        """Where driven lips change the picture: the hull of the mostly-driven lip-region vertices (weight >= 0.5:
        lips, chin, lower cheeks, jaw), grown by 8% about its centre to cover the shading around them."""
        pts = landmarks_px[self.region.indices[self.region.weights >= 0.5], :2]
        return grown_hulls_mask([pts], (self.size_px, self.size_px))

    def person_matte(self, crop: np.ndarray) -> np.ndarray:
        """float32 (S, S) in [0, 1]. The crop is square, so the network sees it unstretched."""
        matte = self._segmenter.person_matte_lowres(crop)
        if crop.shape[0] == SEGMENTER_INPUT_PX:
            return matte
        n = float(SEGMENTER_INPUT_PX)
        # sample_crop rather than a matrix resize: its box pre-reduction is cheaper and BLAS-free.
        resized = sample_crop(matte[:, :, None], RotatedRect(n / 2, n / 2, n, n), crop.shape[1], crop.shape[0])
        return np.clip(resized[..., 0], 0.0, 1.0)

    def coarse_normals(self, landmarks_px: np.ndarray, pose: HeadPose, matte: np.ndarray) -> np.ndarray:
        """Mesh normals on the face, eyes closed over lid to lid; the teeth's arch in the open mouth; a head
        ellipsoid (following the pose) around the face; elsewhere on the person (neck, shoulders, ears, long hair)
        the inflated silhouette, so a side light darkens the far side there too; zero off the person (matte < 0.5)."""
        s = self.size_px
        p = landmarks_px.astype(np.float64)
        tris = self._shaded_triangles
        normals_v = vertex_normals(p * np.array([1.0, -1.0, 1.0]), tris)
        raster = rasterize(p, tris, s, s)
        covered = raster.coverage.reshape(-1)
        out = np.zeros((s * s, 3), np.float32)
        # The mesh is drawn even where the matte says background: matte edges are soft, and the face is the
        # subject by definition. Only the rest of the person needs the proxy (about a third of the crop).
        person = matte >= 0.5
        rest = np.flatnonzero(person.reshape(-1) & ~covered)
        slab = inflated_silhouette_normals(person, SILHOUETTE_ROUNDING * s).reshape(-1, 3)
        out[rest] = _into_silhouette(*self._ellipsoid_normals(pose, self._pixels_cam[rest]), slab[rest])
        # The outline's normals meet the head's halfway, so side light draws no line where the two surfaces
        # join (it showed across the forehead of a real clip).
        oval = self.topology.face_oval
        at = np.clip(np.rint(p[oval, :2] - 0.5).astype(np.int64), 0, s - 1)
        ell_oval, hit_oval = self._ellipsoid_normals(pose, p[oval, :2] * np.array([1.0, -1.0]))
        # Only where the ellipsoid is there: averaged with the silhouette's too, the synthetic head's normals came
        # out further from the truth (4.57 vs 4.50 deg on the face).
        blended = normals_v[oval] + _into_silhouette(ell_oval, hit_oval, slab[at[:, 1] * s + at[:, 0]])
        normals_v[oval[hit_oval]] = blended[hit_oval] / np.linalg.norm(blended[hit_oval], axis=1, keepdims=True)
        n = interpolate(normals_v, raster).reshape(-1, 3)[covered]
        out[covered] = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-6)
        inner = self.topology.lips_inner
        mouth = np.flatnonzero(polygon_mask(p[inner, :2], (s, s)).reshape(-1) & ~covered)
        if mouth.size:
            corners = p[inner[[np.argmin(p[inner, 0]), np.argmax(p[inner, 0])]], :2]
            pix = np.stack([mouth % s, mouth // s], axis=1) + 0.5
            # The arch faces the head's forward axis (the inner lips' own mean normal points down, measured 25 deg
            # worse against a synthetic head's teeth).
            out[mouth] = arch_normals(pix, corners[0], corners[1], pose.rotation[:, 2], pose.rotation[:, 0])
        # The mesh's own triangles, not the eye fills: the lid edges are where the eye fills meet the face.
        mesh_covered = (raster.triangle_id >= 0) & (raster.triangle_id < self._mesh_triangle_count)
        band = edge_band(mesh_covered, EDGE_FEATHER_BAND * s)
        return feather_edges(out.reshape(s, s, 3), band, EDGE_FEATHER_SIGMA * s)

    def _ellipsoid_normals(self, pose: HeadPose, points_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Orthographic ray cast of the head ellipsoid through camera (x, y) points (N, 2) (pixels, y up): unit
        normals (camera frame) of the nearest hits, and which rays hit."""
        r = pose.rotation
        axes = np.array(HEAD_ELLIPSOID_AXES)
        # Canonical point along the pixel's viewing ray: q(z) = q0 + z d, from camera (x, y, z) = s R q + t;
        # everything divided by the axes so the ellipsoid becomes the unit sphere.
        centre_cam = pose.scale_px * r @ np.array(HEAD_ELLIPSOID_CENTER) + pose.translation_px
        xy = points_cam - centre_cam[:2]
        q0 = ((xy @ r[:2]) / (pose.scale_px * axes)).astype(np.float32)
        d = ((r[2] / pose.scale_px) / axes).astype(np.float32)
        # |q0 + z d|^2 = 1  ->  (d.d) z^2 + 2 (q0.d) z + (q0.q0 - 1) = 0; the nearer hit is the larger z.
        aa = float(d @ d)
        bb = q0 @ d
        cc = np.einsum("ij,ij->i", q0, q0) - 1.0
        disc = bb * bb - aa * cc
        hit = disc > 0
        z = (-bb + np.sqrt(np.maximum(disc, 0.0))) / aa
        q = q0 + z[:, None] * d  # unit-sphere coordinates of the hit
        n = (q / axes.astype(np.float32)) @ r.T.astype(np.float32)  # ellipsoid gradient, back to camera
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        return n.astype(np.float32), hit
