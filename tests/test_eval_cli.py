"""`relitcam eval` end to end on tiny generated clips (and, when present, the real development clip)."""

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from models import media
from models.metrics.mouth import MouthMeasurement
from stream import cli
from stream.commands import eval as eval_cmd

FPS = 25
SR = media.AUDIO_RATE_HZ
REAL_CLIP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "talking_obama_24s.mp4"


def _textured_frames(count=10, h=48, w=64):
    rng = np.random.default_rng(0)
    base = (gaussian_filter(rng.random((h, w + count, 3)), (1, 1, 0)) * 255).astype(np.uint8)
    return [np.ascontiguousarray(base[:, k : k + w]) for k in range(count)]


def _run(argv, capsys):
    code = cli.main(["eval", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_clip_against_itself_scores_perfectly(tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    media.write_mp4(clip, _textured_frames(), FPS)
    report_path = tmp_path / "r.json"
    code, out, err = _run([str(clip), str(clip), "-o", str(report_path), "--sheet", str(tmp_path / "s.png"),
                           "--plots", str(tmp_path / "p.png")], capsys)
    assert code == 0, err
    text = report_path.read_text()
    assert "Infinity" not in text and "NaN" not in text  # strict JSON
    report = json.loads(text)
    assert report["frames"] == 10 and (report["width_px"], report["height_px"]) == (64, 48)
    assert report["psnr_db"]["frames_at_cap"] == 10 and report["psnr_db"]["mean"] == report["psnr_cap_db"]
    assert report["ssim"]["mean"] == pytest.approx(1.0)
    assert report["flicker"]["pred_mean_abs_change"] == report["flicker"]["gt_mean_abs_change"] > 0
    assert report["lip_sync"]["skipped"] == "neither input has audio"
    assert "identical frames" in out
    for png in ("s.png", "p.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_blurred_copy_scores_lower_and_frame_folders_work(tmp_path, capsys):
    frames = _textured_frames()
    media.write_frame_dir(tmp_path / "gt", frames)
    media.write_frame_dir(tmp_path / "pred", [gaussian_filter(f, (1.5, 1.5, 0)) for f in frames])
    mask = np.zeros((48, 64, 3), np.uint8)
    mask[8:40, 16:48] = 255
    media.write_frame_dir(tmp_path / "masks", [mask] * 10)
    code, out, err = _run([str(tmp_path / "pred"), str(tmp_path / "gt"), "--mask-dir", str(tmp_path / "masks"),
                           "-o", str(tmp_path / "r.json")], capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert 20 < report["psnr_db"]["mean"] < 40 and report["psnr_db"]["frames_at_cap"] == 0
    assert report["ssim"]["mean"] < 0.97
    assert report["roi"]["psnr_db"]["frames"] == 10
    assert report["flicker"]["region"] == "outside mask"


def test_mismatched_and_unreadable_inputs_exit_2_with_one_line(tmp_path, capsys):
    frames = _textured_frames()
    media.write_mp4(tmp_path / "a.mp4", frames, FPS)
    media.write_mp4(tmp_path / "b.mp4", frames[:7], FPS)
    code, _, err = _run([str(tmp_path / "b.mp4"), str(tmp_path / "a.mp4")], capsys)
    assert code == 2 and "mismatched frame counts: prediction has 7 frames, ground truth has 10" in err
    (tmp_path / "junk.mp4").write_bytes(b"\0" * 1000)
    code, _, err = _run([str(tmp_path / "junk.mp4"), str(tmp_path / "a.mp4")], capsys)
    assert code == 2 and "cannot decode video" in err and "Traceback" not in err
    code, _, err = _run([str(tmp_path / "nope.mp4"), str(tmp_path / "a.mp4")], capsys)
    assert code == 2 and "does not exist" in err
    media.write_frame_dir(tmp_path / "masks", frames[:3])
    code, _, err = _run([str(tmp_path / "a.mp4"), str(tmp_path / "a.mp4"), "--mask-dir", str(tmp_path / "masks")],
                        capsys)
    assert code == 2 and "3 masks for 10 frames" in err
    code, _, err = _run(["--sync", str(tmp_path / "a.mp4")], capsys)
    assert code == 2 and "has no audio" in err


def test_landmark_distance_and_normal_scores_in_report(tmp_path, capsys):
    normals = np.zeros((48, 64, 3))
    normals[..., 2] = 1.0
    tilted = normals.copy()
    tilted[..., 0], tilted[..., 2] = np.sin(np.radians(10)), np.cos(np.radians(10))
    encode = lambda n: np.round((n + 1) / 2 * 255).astype(np.uint8)  # noqa: E731
    media.write_frame_dir(tmp_path / "gt", [encode(normals)] * 4)
    media.write_frame_dir(tmp_path / "pred", [encode(tilted)] * 4)
    gt_lm = np.zeros((4, 20, 2))
    np.savez(tmp_path / "gt.npz", landmarks=gt_lm)
    np.savez(tmp_path / "pred.npz", landmarks=gt_lm + [3.0, 4.0])
    code, _, err = _run([str(tmp_path / "pred"), str(tmp_path / "gt"), "--normals", "-o", str(tmp_path / "r.json"),
                         "--gt-landmarks", str(tmp_path / "gt.npz"), "--pred-landmarks", str(tmp_path / "pred.npz")],
                        capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["normals"]["angular_error_deg"]["mean"] == pytest.approx(10, abs=0.6)
    assert report["normals"]["psnr_grad_db"]["frames_at_cap"] == 4  # constant maps: equal (zero) gradients
    assert report["landmarks"] == {"lmd_px": pytest.approx(5.0), "points": "all"}
    np.savez(tmp_path / "short.npz", landmarks=gt_lm[:2])
    code, _, err = _run([str(tmp_path / "pred"), str(tmp_path / "gt"), "--gt-landmarks", str(tmp_path / "short.npz"),
                         "--pred-landmarks", str(tmp_path / "pred.npz")], capsys)
    assert code == 2 and "mismatched frame counts" in err


# ------------------------------------------------------------------------------------------- lip sync on pixels


def _talking_clip(path: Path, audio_delay_ms: float, seconds: float = 6.0) -> None:
    """A grey face whose dark mouth bar opens with the speech loudness; the audio can be delayed against it."""
    rng = np.random.default_rng(3)
    knots = rng.random(int(seconds * 5) + 2) ** 2  # a syllable every 200 ms
    t = np.arange(int(seconds * SR)) / SR
    level = lambda s: np.interp(s, np.arange(knots.size) * 0.2, knots)  # noqa: E731
    audio = (0.3 * rng.standard_normal(t.size) * level(t - audio_delay_ms / 1000)).astype(np.float32)
    frames = []
    for k in range(int(seconds * FPS)):
        img = np.full((64, 64, 3), 170, np.uint8)
        half = 1 + int(round(12 * level((k + 0.5) / FPS)))  # opening shown over the frame's display interval
        img[32 - half : 32 + half, 20:44] = 20
        frames.append(img)
    media.write_mp4(path, frames, FPS, audio=audio)


class _MouthBarTracker:
    """Measures the synthetic mouth from pixels: the number of dark rows in the mouth column."""

    def measure(self, frame, pts_s):
        dark_rows = (frame[:, 28:36].mean(axis=(1, 2)) < 90).sum()
        return MouthMeasurement(opening=float(dark_rows), landmarks_px=None)


def test_sync_mode_recovers_a_100_ms_audio_delay(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(eval_cmd, "make_mouth_tracker", _MouthBarTracker)
    offsets = {}
    for delay in (0, 100):
        _talking_clip(tmp_path / f"d{delay}.mp4", delay)
        code, out, err = _run(["--sync", str(tmp_path / f"d{delay}.mp4"), "-o", str(tmp_path / f"{delay}.json"),
                               "--plots", str(tmp_path / f"{delay}.png")], capsys)
        assert code == 0, err
        report = json.loads((tmp_path / f"{delay}.json").read_text())
        assert report["lip_sync"]["peak_correlation"] > 0.5
        offsets[delay] = report["lip_sync"]["offset_ms"]
    assert abs(offsets[0]) < 20
    assert offsets[100] - offsets[0] == pytest.approx(100, abs=20)


def test_compare_mode_reports_sync_of_both_and_their_difference(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(eval_cmd, "make_mouth_tracker", _MouthBarTracker)
    _talking_clip(tmp_path / "gt.mp4", 0, seconds=5)
    _talking_clip(tmp_path / "pred.mp4", 100, seconds=5)
    code, _, err = _run([str(tmp_path / "pred.mp4"), str(tmp_path / "gt.mp4"), "-o", str(tmp_path / "r.json")],
                        capsys)
    assert code == 0, err
    sync = json.loads((tmp_path / "r.json").read_text())["lip_sync"]
    assert sync["pred_minus_gt_offset_ms"] == pytest.approx(100, abs=20)


# ------------------------------------------------------------------------------------------- real footage


def _face_tracker_ready() -> bool:
    try:
        eval_cmd.make_mouth_tracker()
    except ValueError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not REAL_CLIP.exists(), reason="development clip shared/data/talking_obama_24s.mp4 not present")
def test_real_clip_recovers_a_100_ms_audio_delay(tmp_path):
    if not _face_tracker_ready():
        pytest.skip("face tracker (models.face) not available")
    from models.metrics.lipsync import mouth_audio_offset

    tracker = eval_cmd.make_mouth_tracker()
    opening, pts = [], []
    for frame in media.iter_video_frames(REAL_CLIP):
        opening.append(tracker.measure(frame.image, frame.pts_s).opening)
        pts.append(frame.pts_s)
    audio = media.read_audio(REAL_CLIP)
    delayed = np.concatenate([np.zeros(int(0.1 * SR), np.float32), audio])[: audio.size]
    base = mouth_audio_offset(np.array(opening), np.array(pts), audio, SR)
    shifted = mouth_audio_offset(np.array(opening), np.array(pts), delayed, SR)
    assert np.isfinite(opening).mean() > 0.95  # the face is tracked on nearly every frame
    assert base.peak_correlation > 0.25
    assert abs(base.offset_ms) < 60  # broadcast footage is in sync to within lip-lead bias
    assert shifted.offset_ms - base.offset_ms == pytest.approx(100, abs=20)
