"""Enrollment prepare stage: a tiny synthetic talking-head video (the astronaut photograph moving and turning a
little, with a tone for audio) goes through track/align/crops; error videos raise specific ValueErrors; the work
folder resumes without redoing finished work."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_dilation
from skimage import data, transform

from models.enroll.prepare import (
    MASK_BITS,
    STABLE_LANDMARKS,
    PrepareParams,
    crop_layout,
    iter_constant_rate,
    prepare_video,
    smooth_zero_phase,
)
from models.enroll.workdir import WorkDir
from models.media import write_mp4

FPS = 20.0
SECONDS = 1.6
SIZE_PX = 128
CHUNK = 16
CLIP = Path("/work/shared/data/talking_obama_24s.mp4")
FAST = dict(min_usable_s=1.0, chunk_frames=CHUNK, faces_check_every_s=1.0)


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _moving_face_frames(count: int, size: int = 288) -> list[np.ndarray]:
    """The astronaut's head drifting (+-10 px) and rolling (+-4 deg) smoothly: a moving but single, steady face."""
    image = data.astronaut()
    frames = []
    for k in range(count):
        phase = 2 * math.pi * k / count
        shift = np.array([10 * math.sin(phase), 6 * math.sin(2 * phase)])
        angle = math.radians(4 * math.sin(phase))
        # Output pixel -> astronaut pixel: rotate about the face (x 256, y 150) then shift; crop origin at (112, 10).
        tf = (
            transform.SimilarityTransform(translation=(112 + shift[0], 10 + shift[1]))
            + transform.SimilarityTransform(translation=(-144, -140))
            + transform.SimilarityTransform(rotation=angle)
            + transform.SimilarityTransform(translation=(144, 140))
        )
        frames.append((transform.warp(image, tf, output_shape=(size, size)) * 255).astype(np.uint8))
    return frames


@pytest.fixture(scope="module")
def face_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "face.mp4"
    count = int(SECONDS * FPS)
    write_mp4(path, _moving_face_frames(count), FPS, audio=_tone(SECONDS))
    return path


@pytest.fixture(scope="module")
def prepared(face_video, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    return prepare_video(face_video, work, size_px=SIZE_PX, progress=False, **FAST)


def test_every_frame_is_tracked_and_stored(prepared):
    rep = prepared.report
    assert rep.total_frames == int(SECONDS * FPS)
    assert rep.usable_frames == rep.total_frames == prepared.frame_count
    assert rep.skipped_no_face == 0 and rep.detector_runs == 1
    assert prepared.ran_stages == ("track", "align", "crops")
    np.testing.assert_allclose(np.diff(prepared.t_s), 1 / FPS, atol=1e-6)
    assert prepared.audio.dtype == np.float32 and abs(prepared.audio.size - SECONDS * 16000) < 0.05 * 16000
    crops = prepared.crops(np.arange(prepared.frame_count))
    assert crops.shape == (prepared.frame_count, SIZE_PX, SIZE_PX, 3) and crops.dtype == np.uint8


def test_crops_are_aligned_on_the_stable_points_despite_the_motion(prepared):
    stable = prepared.landmarks_px[:, list(STABLE_LANDMARKS), :2]
    spread = stable.max(0) - stable.min(0)  # per point, over the clip
    assert spread.max() < 2.0, spread
    # ... while in the source frames the same points moved by ~20 px.
    bottom = np.tile([[[0.0, 0.0, 1.0]]], (prepared.frame_count, 1, 1))
    inv = np.linalg.inv(np.concatenate([prepared.image_to_crop, bottom], 1))
    src = np.einsum("nij,nkj->nki", inv[:, :2, :2], stable) + inv[:, None, :2, 2]
    assert (src.max(0) - src.min(0)).max() > 12
    # Upright and centred: eye corners level, face midline in the middle, face ~45% of the crop wide.
    lm = prepared.landmarks_px.mean(0)
    assert abs(lm[33, 1] - lm[263, 1]) < 2.0
    assert abs((lm[33, 0] + lm[263, 0]) / 2 - SIZE_PX / 2) < 3.0
    layout = crop_layout(PrepareParams(size_px=SIZE_PX))
    assert abs(np.linalg.norm(lm[263, :2] - lm[33, :2]) - layout.px_per_unit) < 0.1 * layout.px_per_unit


def test_masks_matte_and_normals_are_plausible(prepared):
    i = prepared.frame_count // 2
    m = prepared.masks(i)
    assert set(m) == set(MASK_BITS)
    area = {k: v.mean() for k, v in m.items()}
    assert 0.1 < area["face"] < 0.3  # the face oval, ~45% of the crop wide
    assert area["mouth_interior"] <= area["mouth_region"] < 0.5 * area["face"]
    assert not (m["skin"] & ~m["face"]).any() and not (m["mouth_interior"] & ~m["mouth_region"]).any()
    assert area["skin"] > 0.6 * area["face"]
    lm = prepared.landmarks_px[i]
    nose = tuple(np.clip(lm[1, [1, 0]].astype(int), 0, SIZE_PX - 1))
    assert m["face"][nose] and not m["mouth_region"][tuple(lm[10, [1, 0]].astype(int))]
    matte = prepared.person_matte(i)
    assert matte[m["face"]].mean() > 0.8 and matte[:4].mean() < matte[m["face"]].mean()
    normals = prepared.coarse_normals(i)
    length = np.linalg.norm(normals, axis=2)
    on = matte >= 0.5
    np.testing.assert_allclose(length[on | m["face"]], 1.0, atol=2e-3)
    # Off the person only the mesh's rim may have normals (its raster and the oval's polygon fill differ by a pixel).
    near_face = binary_dilation(m["face"], iterations=2)
    assert (length[~on & ~near_face] == 0).all()
    forehead = tuple(lm[151, [1, 0]].astype(int))
    assert normals[forehead][2] > 0.8 and normals[nose][2] > 0.5  # the front of the face faces the camera
    # The cheeks face outward: the subject's right cheek (image left) has x < 0, the left one x > 0.
    right_cheek = tuple(lm[234, [1, 0]].astype(int) + [0, 3])
    left_cheek = tuple(lm[454, [1, 0]].astype(int) - [0, 3])
    assert normals[right_cheek][0] < -0.2 and normals[left_cheek][0] > 0.2


def test_second_call_reuses_every_stage(prepared, face_video):
    records = {s: (prepared.root / "stages" / f"{s}.json").read_text() for s in ("track", "align", "crops")}
    again = prepare_video(face_video, prepared.root, size_px=SIZE_PX, progress=False, **FAST)
    assert again.ran_stages == ()
    assert {s: (prepared.root / "stages" / f"{s}.json").read_text() for s in records} == records
    np.testing.assert_array_equal(again.landmarks_px, prepared.landmarks_px)


def test_a_killed_crops_stage_resumes_at_the_missing_chunk(prepared, face_video, tmp_path):
    work = tmp_path / "copy"
    shutil.copytree(prepared.root, work)
    wd = WorkDir(work)
    # What a kill during chunk 1 leaves: chunk 0 complete, no chunk 1 (it was still a temporary folder), no record.
    shutil.rmtree(wd.path("frames", "chunk_00001"))
    wd.invalidate("crops")
    again = prepare_video(face_video, work, size_px=SIZE_PX, progress=False, **FAST)
    assert again.ran_stages == ("crops",)
    assert wd.record("crops").extra["frames_cut"] == CHUNK
    every = np.arange(again.frame_count)
    np.testing.assert_array_equal(again.crops(every), prepared.crops(every))
    # Stages chain by record keys, so a changed upstream result invalidates everything downstream of it.
    assert wd.record("crops").inputs == {"align": wd.record("align").key}
    assert wd.record("align").inputs == {"track": wd.record("track").key}


def test_a_new_layers_version_recuts_every_chunk(prepared, face_video, tmp_path, monkeypatch):
    import models.enroll.prepare as prep

    work = tmp_path / "copy"
    shutil.copytree(prepared.root, work)
    wd = WorkDir(work)
    marker = wd.path("frames", "chunk_00000", "stale.txt")
    marker.write_text("cut by the old code")
    monkeypatch.setattr(prep, "LAYERS_VERSION", prep.LAYERS_VERSION + 1)
    again = prepare_video(face_video, work, size_px=SIZE_PX, progress=False, **FAST)
    assert again.ran_stages == ("crops",)
    # Every chunk was cut again (the old folder went), not only the missing ones.
    assert not marker.exists() and wd.record("crops").extra["frames_cut"] == again.frame_count
    assert wd.record("crops").params["layers_version"] == prep.LAYERS_VERSION


def test_work_folder_records_and_atomic_checkpoints(tmp_path):
    wd = WorkDir.for_name("someone", base=tmp_path)
    assert wd.root == tmp_path / "someone"
    calls = []

    def work():
        calls.append(1)
        (wd.path("out.txt")).write_text("x")
        return ["out.txt"], {"n": 1}

    rec, ran = wd.run_stage("demo", {"video": "abc"}, {"k": 1}, work)
    assert ran and rec.extra == {"n": 1} and rec.elapsed_s >= 0
    assert json.loads(wd.path("stages", "demo.json").read_text())["params"] == {"k": 1}
    assert wd.run_stage("demo", {"video": "abc"}, {"k": 1}, work)[1] is False
    assert wd.run_stage("demo", {"video": "abc"}, {"k": 2}, work)[1] is True
    wd.path("out.txt").unlink()  # a listed output that disappeared makes the stage run again
    assert wd.run_stage("demo", {"video": "abc"}, {"k": 2}, work)[1] is True
    assert len(calls) == 3
    assert wd.load_checkpoint("train") is None
    wd.save_checkpoint("train", {"step": 7, "w": np.arange(3)})
    assert wd.load_checkpoint("train")["step"] == 7
    assert not [p for p in wd.path("checkpoints").iterdir() if p.name.startswith(".")]
    wd.checkpoint_path("train").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be loaded"):
        wd.load_checkpoint("train")
    with pytest.raises(ValueError, match="plain folder name"):
        WorkDir.for_name("../x", base=tmp_path)


def test_zero_phase_smoothing_keeps_steady_motion_and_removes_jitter():
    t = np.arange(40, dtype=np.float64)[:, None]
    ramp = 3.0 * t + 5.0
    np.testing.assert_allclose(smooth_zero_phase(ramp, 2.0), ramp, atol=1e-9)  # no lag, ends included
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 1, (40, 200))  # 200 independent unit-noise tracks
    err = smooth_zero_phase(ramp + noise, 2.0) - ramp
    assert np.sqrt((err**2).mean()) < 0.5
    # The ends are smoothed too (one-sided, so less), not pinned to their noisy samples.
    assert np.sqrt((err[[0, -1]] ** 2).mean()) < 0.8


def test_variable_rate_video_comes_out_at_a_constant_rate(tmp_path):
    # Frames 0..5 at 10 fps with frame 3 missing (a 0.2 s hold): the grid repeats frame 2.
    frames = [np.full((32, 32, 3), 40 * k, np.uint8) for k in range(6)]
    path = tmp_path / "vfr.mp4"
    write_mp4(path, [f for k, f in enumerate(frames) if k != 3], 10.0)
    got = list(iter_constant_rate(path, 10.0))
    # The encoder writes 5 frames back to back (constant 10 fps), so the grid has 5 frames.
    assert [g.index for g in got] == list(range(5))
    np.testing.assert_allclose([g.t_s for g in got], np.arange(5) / 10.0, atol=1e-6)


def test_a_phone_video_turned_by_its_display_matrix_enrolls_like_an_upright_one(prepared, tmp_path):
    # A phone stores a portrait recording sideways plus "turn 90 deg to show". The tracker would follow a sideways
    # face (its crops undo roll), so what must match is where the crops sit in the picture the user sees: the
    # live avatar is pasted back there, and sideways it would stream sideways.
    count = int(SECONDS * FPS)
    sideways = [np.ascontiguousarray(np.rot90(f, -1)[:, 16:]) for f in _moving_face_frames(count)]  # 272 x 288
    path = tmp_path / "phone.mp4"
    write_mp4(path, sideways, FPS, audio=_tone(SECONDS), display_rotation_deg=90)
    turned = prepare_video(path, tmp_path / "w", size_px=SIZE_PX, progress=False, **FAST)
    assert turned.report.source_size_px == (288, 272)
    assert turned.report.usable_frames == prepared.report.usable_frames == count
    # Same crops, up to the codec's loss on differently ordered blocks: in the crop and in the upright picture
    # (the cut-off columns are the upright frames' bottom rows, so no offset).
    assert np.abs(turned.landmarks_px - prepared.landmarks_px)[..., :2].mean() < 0.5
    np.testing.assert_allclose(turned.image_to_crop[..., :2], prepared.image_to_crop[..., :2], atol=0.02)
    np.testing.assert_allclose(turned.image_to_crop[..., 2], prepared.image_to_crop[..., 2], atol=2.0)


def test_a_60_fps_recording_is_prepared_at_30_fps_unless_asked(tmp_path):
    seconds = 1.2
    path = tmp_path / "sixty.mp4"
    write_mp4(path, _moving_face_frames(int(seconds * 60)), 60.0, audio=_tone(seconds))
    prepared60 = prepare_video(path, tmp_path / "w", size_px=64, progress=False, **FAST)
    assert prepared60.fps == 30.0 and prepared60.frame_count == int(seconds * 30)
    np.testing.assert_allclose(np.diff(prepared60.t_s), 1 / 30, atol=1e-6)
    asked = prepare_video(path, tmp_path / "w60", size_px=64, progress=False, fps=60.0, **FAST)
    assert asked.fps == 60.0 and asked.frame_count == int(seconds * 60)


# ------------------------------------------------------------------------------------------------------- errors


def test_no_face_is_an_error(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) for _ in range(12)]
    path = tmp_path / "noise.mp4"
    write_mp4(path, frames, 12.0, audio=_tone(1.0))
    with pytest.raises(ValueError, match="no face found"):
        prepare_video(path, tmp_path / "w", size_px=64, progress=False, min_usable_s=0.5)


def test_no_audio_is_an_error(tmp_path):
    path = tmp_path / "silent.mp4"
    write_mp4(path, _moving_face_frames(4), FPS)
    with pytest.raises(ValueError, match="no audio track"):
        prepare_video(path, tmp_path / "w", size_px=64, progress=False, min_usable_s=0.1)


def test_corrupt_and_missing_files_are_errors(tmp_path, face_video):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="cannot decode"):
        prepare_video(junk, tmp_path / "w", progress=False)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(face_video.read_bytes()[: face_video.stat().st_size // 2])
    with pytest.raises(ValueError):
        prepare_video(truncated, tmp_path / "w", progress=False, min_usable_s=0.1)
    with pytest.raises(ValueError, match="does not exist"):
        prepare_video(tmp_path / "nope.mp4", tmp_path / "w", progress=False)


def test_too_short_video_is_an_error(face_video, tmp_path):
    with pytest.raises(ValueError, match=r"1\.\d s long; enrollment needs at least 20 s"):
        prepare_video(face_video, tmp_path / "w", progress=False)


def test_too_few_usable_frames_reports_the_skipped_ones(tmp_path):
    # 0.8 s without a face, then 0.8 s of face: 16 of 32 frames usable.
    frames = [np.zeros((288, 288, 3), np.uint8)] * 16 + _moving_face_frames(16)
    path = tmp_path / "late.mp4"
    write_mp4(path, frames, FPS, audio=_tone(1.6))
    expected = r"only 16 of 32 frames \(0\.8 s\).*16 frames without a face.*longest gap 0\.8 s"
    with pytest.raises(ValueError, match=expected):
        prepare_video(path, tmp_path / "w", size_px=64, progress=False, min_usable_s=1.2)


def test_two_people_is_an_error(tmp_path):
    head = data.astronaut()[20:300, 120:400]
    pair = np.concatenate([head, head], axis=1)
    path = tmp_path / "two.mp4"
    write_mp4(path, [pair] * 8, 8.0, audio=_tone(1.0))
    with pytest.raises(ValueError, match="more than one person"):
        prepare_video(path, tmp_path / "w", size_px=64, progress=False, min_usable_s=0.5)


@pytest.mark.skipif(not CLIP.exists(), reason="development clip not present")
def test_development_clip_first_seconds(tmp_path):
    # Only container checks and the first frames: the full clip is measured by hand (docs/enroll.md).
    from models.media import probe_video

    info = probe_video(CLIP)
    assert info.has_audio and info.duration_s > 20
    first = next(iter_constant_rate(CLIP, info.fps))
    assert first.index == 0 and first.image.shape == (info.height_px, info.width_px, 3)


def test_expression_stage_runs_on_prepared_frames_and_is_reused(prepared, tmp_path):
    from models.enroll.expression import build_expression

    work = tmp_path / "copy"
    shutil.copytree(prepared.root, work)
    wd = WorkDir(work)
    space, loop, ran = build_expression(wd, prepared, n_lip=4, idle_length_s=0.8)
    assert ran and space.n_lip == 4 and wd.path("expression.npz").is_file()
    assert loop.frame_indices.min() >= 0 and loop.frame_indices.max() < prepared.frame_count
    forward = np.arange(loop.start, loop.end)
    expected = forward if loop.mode == "cut" else np.concatenate([forward, forward[-2:0:-1]])
    np.testing.assert_array_equal(loop.frame_indices, expected)
    assert build_expression(wd, prepared, n_lip=4, idle_length_s=0.8)[2] is False


def test_inflated_silhouette_faces_outward_at_its_edges_only():
    from models.enroll.frame_layers import inflated_silhouette_normals

    yy, xx = np.mgrid[0:100, 0:100]
    person = ((xx - 50) ** 2 + (yy - 40) ** 2 < 30 ** 2) | (yy > 80)  # a head, and a body cut off by the border
    n = inflated_silhouette_normals(person, radius_px=10.0)
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
    assert n[40, 50, 2] > 0.99  # deep inside: facing the camera
    assert n[40, 22, 0] < -0.5 and n[40, 78, 0] > 0.5  # left and right edges turn outward (camera x right)
    assert n[12, 50, 1] > 0.5  # the top edge turns up (camera y up)
    assert n[98, 10:90, 2].min() > 0.95  # the array border is not an edge


def test_edge_feathering_smooths_the_step_between_mesh_and_fill_only():
    from models.enroll.frame_layers import edge_band, feather_edges

    covered = np.zeros((40, 40), bool)
    covered[:, :20] = True  # the mesh on the left, what fills around it on the right
    band = edge_band(covered, 3.0)
    assert band[:, 17:23].all() and not band[:, :16].any() and not band[:, 24:].any()
    down = np.array([0.0, -0.8, 0.6]) / np.linalg.norm([0.0, -0.8, 0.6])  # jaw underside
    normals = np.zeros((40, 40, 3), np.float32)
    normals[:, :20] = down
    normals[:, 20:36] = (0.0, 0.0, 1.0)  # neck facing the camera; the last columns are off the person (zero)
    out = feather_edges(normals, band, sigma_px=1.5)
    np.testing.assert_array_equal(out[~band], normals[~band])
    assert not out[:, 36:].any()
    on = np.linalg.norm(normals, axis=-1) > 0.5
    np.testing.assert_allclose(np.linalg.norm(out[on], axis=-1), 1.0, atol=1e-5)
    row = out[20]
    step_before = np.degrees(np.arccos(np.clip(normals[20, 19] @ normals[20, 20], -1, 1)))
    steps_after = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", row[16:24], row[17:25]), -1, 1)))
    assert step_before > 35 and steps_after.max() < 0.5 * step_before
    assert np.all(np.diff(row[16:25, 2]) >= -1e-6)  # z turns monotonically from the jaw to the neck


def test_head_ellipsoid_turns_into_the_silhouette_without_a_step_at_its_rim():
    from models.enroll.frame_layers import _into_silhouette

    # A row across the ellipsoid's right rim inside wider hair: the ellipsoid's normal turns to grazing, the
    # silhouette's (hair) still faces the camera, and past the rim only the silhouette is there.
    x = np.linspace(0.0, 1.2, 121)
    inside = x < 1.0
    nz = np.sqrt(np.clip(1.0 - x ** 2, 0.0, 1.0))
    ellipsoid = np.stack([np.where(inside, x, 1.0), np.zeros_like(x), nz], axis=1)
    hair = np.tile([0.2, 0.0, 1.0], (x.size, 1)) / np.linalg.norm([0.2, 0.0, 1.0])
    out = _into_silhouette(ellipsoid.astype(np.float32), inside, hair.astype(np.float32))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out[x < 0.5], ellipsoid[x < 0.5], atol=1e-6)  # facing the camera: the ellipsoid's
    np.testing.assert_allclose(out[~inside], hair[~inside], atol=1e-6)
    step = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", out[1:], out[:-1]), -1, 1)))
    hard = np.degrees(np.arccos(np.clip(ellipsoid[inside][-1] @ hair[0], -1, 1)))
    rim = int(np.flatnonzero(inside)[-1])
    assert hard > 60 and step[rim] < 1.0  # across the rim: the hard switch's step, against none
    assert step.max() < 0.25 * hard  # and no new step elsewhere (the ellipsoid curves fast near its rim by itself)


def test_a_browser_recording_too_short_is_refused_before_any_tracking(tmp_path):
    # MediaRecorder's WebM declares no duration; its packets give it, so the length check needs no tracking
    # (this canvas holds no face: tracking would have ended in "no face found" instead).
    webm = Path(__file__).parent / "data" / "mediarecorder" / "canvas10_uneven.webm"
    with pytest.raises(ValueError, match=r"is 3\.0 s long; enrollment needs at least 20 s"):
        prepare_video(webm, tmp_path / "w", size_px=64, progress=False)
