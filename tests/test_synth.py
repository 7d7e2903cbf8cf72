"""relitcam synth: determinism, ground-truth consistency, lip sync of the mesh, bad input."""

from __future__ import annotations

import hashlib
import json

import imageio.v3 as iio
import numpy as np
import pytest
from skimage import data

from models.media import read_video
from models.render import composite
from models.synth.clip import SynthConfig, synth_clip, to_srgb8
from models.synth.frame import FramePose, render_gbuffer
from models.synth.gt_store import decode_map, encode_map, load_ground_truth, read_lossless_video
from models.synth.head import build_head
from models.synth.portrait import load_portrait
from models.synth.shade import backdrop_image, shade

SIZE = 128


def _clip(out_dir, seconds=2.0, seed=3, lightings=2):
    cfg = SynthConfig(out_dir=out_dir, seconds=seconds, size_px=SIZE, fps=25, seed=seed, lightings=lightings, workers=1)
    synth_clip(cfg, log=lambda *_: None)
    return out_dir


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return _clip(tmp_path_factory.mktemp("synth") / "clip")


@pytest.fixture(scope="module")
def head():
    portrait, _ = load_portrait(None, SIZE)
    return build_head(portrait, seed=0)


def _digest(out_dir) -> str:
    h = hashlib.sha256()
    # Decoded pixels, not file bytes: containers stamp the creation date.
    h.update(read_video(out_dir / "video.mp4").frames.tobytes())
    for name in ("albedo", "normals", "masks"):
        h.update(read_lossless_video(out_dir / "gt" / f"{name}.mkv").tobytes())
    h.update(np.load(out_dir / "landmarks.npz")["points_px"].tobytes())
    return h.hexdigest()


def test_layout_and_manifest(clip_dir):
    manifest = json.loads((clip_dir / "manifest.json").read_text())
    assert manifest["n_frames"] == 50 and manifest["fps"] == 25 and manifest["size_px"] == SIZE
    assert len(manifest["videos"]) == 3 and (clip_dir / "relit").is_dir()
    for rel in [*manifest["videos"].values(), *manifest["ground_truth"]["files"].values(), "contact_sheet.png"]:
        assert (clip_dir / rel).is_file(), rel
    clip = read_video(clip_dir / "video.mp4")
    assert clip.frames.shape == (50, SIZE, SIZE, 3)
    assert clip.audio is not None and abs(len(clip.audio) / 16000 - 2.0) < 0.1
    assert iio.imread(clip_dir / "contact_sheet.png").shape == (2 * SIZE, 2 * SIZE, 3)  # 3 lightings in a 2x2 grid


def test_same_seed_same_frames_other_seed_differs(clip_dir, tmp_path):
    again = _clip(tmp_path / "again")
    assert _digest(again) == _digest(clip_dir)
    other = _clip(tmp_path / "other", seed=4)
    assert _digest(other) != _digest(clip_dir)


def test_ground_truth_reproduces_the_video(clip_dir):
    gt = load_ground_truth(clip_dir)
    assert gt.albedo.shape == (50, SIZE, SIZE, 3)
    np.testing.assert_allclose(np.linalg.norm(gt.normals, axis=-1), 1.0, atol=1e-2)
    from models.lighting.files import load_lighting

    lighting = load_lighting(clip_dir / "lightings" / "clip.json")
    backdrop = np.load(clip_dir / "landmarks.npz")["backdrop_albedo"]
    bg = backdrop_image(backdrop, lighting)
    rendered = np.stack([to_srgb8(composite(img, m, bg)) for img, m in zip(gt.render(), gt.matte)])
    video = read_video(clip_dir / "video.mp4").frames
    def psnr(a, b):
        return 10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b) ** 2))

    # H.264 (crf 18, 4:2:0 chroma at 128 px) is the only loss left ...
    assert psnr(rendered, video) > 32.0
    # ... and frame k matches frame k, not a neighbour (compared on the face, where speech changes the picture).
    pts = np.load(clip_dir / "landmarks.npz")["points_px"]
    (x0, y0), (x1, y1) = pts[..., :2].min((0, 1)).astype(int), pts[..., :2].max((0, 1)).astype(int)
    face, face_video = rendered[:, y0:y1, x0:x1], video[:, y0:y1, x0:x1]
    assert psnr(face, face_video) > psnr(face[3:], face_video[:-3]) + 2.0


def test_ground_truth_codes_reproduce_the_frame_before_encoding(head):
    pose = FramePose(np.eye(3), np.zeros(2), np.array([0.7, 0.1, 0.2, 0.0]), 0.3)
    g = render_gbuffer(head, pose)
    lighting = head.clip_lighting
    bg = backdrop_image(head.backdrop_albedo, lighting)
    truth = shade(g.albedo, g.normals, g.spec_weight, g.matte, bg, lighting)
    maps = {"albedo": g.albedo, "normals": g.normals, "shading": truth.shading, "specular": truth.specular}
    back = {k: decode_map(k, encode_map(k, v)) for k, v in maps.items()}
    masks = decode_map("masks", encode_map("masks", np.stack([g.matte, g.mouth_mask, g.spec_weight], -1)))
    person = back["albedo"] * (back["shading"] + masks[..., 2:3] * back["specular"])
    frame = composite(person, masks[..., 0], bg)
    assert np.abs(to_srgb8(frame).astype(int) - to_srgb8(truth.image)).max() <= 3


def test_mouth_follows_the_visemes(clip_dir):
    lm = np.load(clip_dir / "landmarks.npz")
    jaw, press = lm["visemes"][:, 0], lm["visemes"][:, 3]
    opening = jaw * (1 - press)
    assert opening.std() > 0.05  # the clip really speaks
    gap = np.linalg.norm(lm["points_px"][:, 14, :2] - lm["points_px"][:, 13, :2], axis=1)  # inner lip mid points
    assert np.corrcoef(gap, opening)[0, 1] > 0.8
    # The area also counts the portrait's own resting lip gap, so it tracks the opening more loosely.
    area = lm["mouth_area_px"].astype(float)
    assert np.corrcoef(area, opening)[0, 1] > 0.5
    phonemes = json.loads((clip_dir / "phonemes.json").read_text())
    bilabial = np.zeros(len(jaw), bool)
    for ev in phonemes:
        if ev["phoneme"] in ("p", "b", "m"):
            bilabial[int(np.ceil(ev["start_s"] * 25)) : int(np.floor(ev["end_s"] * 25)) + 1] = True
    bilabial &= press > 0.8
    if bilabial.any():  # sealed lips show (almost) no mouth interior
        assert area[bilabial].mean() < 0.25 * area[jaw > 0.5].mean()


def test_blank_portrait_has_no_face(tmp_path):
    path = tmp_path / "blank.png"
    iio.imwrite(path, np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(ValueError, match="no face"):
        load_portrait(path, SIZE)


def test_two_faces_are_refused(tmp_path):
    crop = data.astronaut()[20:320, 80:370]
    path = tmp_path / "two.png"
    iio.imwrite(path, np.hstack([crop, crop]))
    with pytest.raises(ValueError, match="2 faces"):
        load_portrait(path, SIZE)


def test_unwritable_out_dir_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        synth_clip(SynthConfig(out_dir=blocker / "out", seconds=1.0, size_px=SIZE, workers=1))
    from stream.cli import main

    assert main(["synth", "--out", str(blocker / "out"), "--seconds", "1", "--size", str(SIZE)]) == 2
    err = capsys.readouterr().err
    assert "not writable" in err and err.count("\n") == 1


@pytest.mark.parametrize("kwargs, message", [({"seconds": 0}, "--seconds"), ({"size_px": 101}, "even"),
                                             ({"fps": 24}, "--fps")])
def test_bad_settings(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SynthConfig(out_dir=tmp_path, **kwargs)
