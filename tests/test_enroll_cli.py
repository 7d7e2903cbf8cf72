"""relitcam enroll: input errors are one line and exit 2 before any training; stages run in order, report their
figures, and finished stages are reused."""

from __future__ import annotations


import numpy as np
import pytest

from models.enroll import enroll as enroll_mod
from models.enroll.enroll import EnrollOptions, Stage, check_writable, enroll, lip_coeffs_on_grid
from models.media import write_mp4
from stream import cli


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if any stage starts: the error must come before training."""

    def forbidden(run):
        raise AssertionError("a stage ran before the input was checked")

    monkeypatch.setattr(enroll_mod, "STAGES", tuple(Stage(s.name, s.title, forbidden) for s in enroll_mod.STAGES))
    monkeypatch.setattr(enroll_mod.enroll, "__defaults__", (enroll_mod.STAGES, print))


def _enroll_cli(capsys, *args) -> tuple[int, str]:
    code = cli.main(["enroll", *map(str, args)])
    return code, capsys.readouterr().err.strip()


def test_unwritable_output_fails_before_training(tmp_path, capsys, no_training):
    video = tmp_path / "me.mp4"
    video.write_bytes(b"x")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, err = _enroll_cli(capsys, video, "--name", "me", "--out", blocker / "avatars", "--work-dir", tmp_path / "w")
    assert code == 2 and len(err.splitlines()) == 1
    assert "output folder" in err and "not writable" in err and str(blocker) in err
    assert not (tmp_path / "w").exists()


def test_bad_videos_are_one_line_errors(tmp_path, capsys):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    silent, short = tmp_path / "silent.mp4", tmp_path / "short.mp4"
    frames = [np.full((64, 64, 3), 90, np.uint8)] * 10
    write_mp4(silent, frames, 10.0)
    write_mp4(short, frames, 10.0, audio=_tone(1.0))
    common = ["--name", "me", "--out", tmp_path / "out", "--quiet"]
    for video, message in ((tmp_path / "missing.mp4", "does not exist"), (junk, "cannot decode"),
                           (silent, "no audio track"), (short, "needs at least 20 s")):
        code, err = _enroll_cli(capsys, video, *common, "--work-dir", tmp_path / f"w_{video.stem}")
        assert code == 2, err
        assert err.startswith("relitcam enroll: error:") and message in err and len(err.splitlines()) == 1


def test_bad_options_are_refused(tmp_path, capsys, no_training):
    video = tmp_path / "me.mp4"
    video.write_bytes(b"x")
    code, err = _enroll_cli(capsys, video, "--name", "me", "--train-fraction", "1.0", "--out", tmp_path)
    assert code == 2 and "train fraction" in err
    code, err = _enroll_cli(capsys, video, "--name", "../me", "--out", tmp_path)
    assert code == 2 and "plain folder name" in err
    with pytest.raises(SystemExit):
        cli.main(["enroll", str(video), "--name", "me", "--size", "300"])


def test_cuda_request_without_cuda_is_clear(tmp_path, capsys, no_training):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    video = tmp_path / "me.mp4"
    video.write_bytes(b"x")
    code, err = _enroll_cli(capsys, video, "--name", "me", "--device", "cuda", "--out", tmp_path)
    assert code == 2 and "--device cuda: no CUDA GPU is usable here" in err and "--device cpu" in err


def test_stages_run_in_order_with_figures_and_missing_stage_is_reported(tmp_path):
    video = tmp_path / "me.mp4"
    video.write_bytes(b"x")
    ran, lines = [], []

    def stage(name, figures=None, fail=None):
        def run(r):
            ran.append((name, r.options.resume))
            if fail:
                raise fail
            r.figures[name] = figures or {}

        return Stage(name, f"{name} title", run)

    options = EnrollOptions(video, "me", out_dir=tmp_path / "out", work_dir=tmp_path / "w", resume=True)
    result = enroll(options, (stage("prepare", {"usable_s": 31.5}), stage("a2e", {"variance_weighted_r": 0.8})),
                    say=lines.append)
    assert ran == [("prepare", True), ("a2e", True)]
    assert result.bundle_path == tmp_path / "out" / "me" and set(result.stage_seconds) == {"prepare", "a2e"}
    assert result.figures["a2e"] == {"variance_weighted_r": 0.8}
    assert lines[1] == "[1/2] prepare: prepare title" and "usable_s 31.5" in lines[2]


def test_refuses_to_replace_a_folder_that_is_not_a_bundle(tmp_path):
    video = tmp_path / "me.mp4"
    video.write_bytes(b"x")
    (tmp_path / "out" / "me").mkdir(parents=True)
    (tmp_path / "out" / "me" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="is not an avatar bundle; refusing to replace it"):
        enroll(EnrollOptions(video, "me", out_dir=tmp_path / "out", work_dir=tmp_path / "w"), ())
    check_writable(tmp_path / "fresh" / "deep", "x")
    assert (tmp_path / "fresh" / "deep").is_dir()


def test_lip_coefficients_fill_skipped_frames_on_the_grid():
    from types import SimpleNamespace

    from models.enroll.expression import fit_expression_space, lip_coeffs
    from models.face.pose import HeadPose
    from models.face.resources import load_canonical_face

    canonical = load_canonical_face().vertices
    rng = np.random.default_rng(0)
    meshes = []
    for k in range(20):
        v = canonical.copy()
        v[canonical[:, 1] < -0.3, 1] -= 0.02 * k  # the jaw opens a little more each frame
        v += rng.normal(0, 1e-3, v.shape)
        meshes.append((v * np.array([1, -1, 1]) * 50 + np.array([128, 128, 0])).astype(np.float32))
    meshes = np.stack(meshes)
    space = fit_expression_space(meshes, n_lip=3)
    kept = np.array([0, 1, 2, 5, 6, 9, 10, 14, 15, 19])  # frames 3, 4, 7, 8, 11-13, 16-18 were skipped
    pose = HeadPose(np.eye(3), 50.0, np.array([128.0, -128.0, 0.0]), 0.0)
    prepared = SimpleNamespace(frame_count=kept.size, landmarks_px=meshes[kept], source_frame_index=kept,
                               pose=lambda i: pose)
    grid = lip_coeffs_on_grid(prepared, space)
    assert grid.shape == (20, 3)
    full = np.stack([lip_coeffs(space, meshes[k], pose) for k in range(20)])
    np.testing.assert_allclose(grid[kept], full[kept], atol=1e-5)
    np.testing.assert_allclose(grid[3], full[2] + (full[5] - full[2]) / 3, atol=1e-5)  # linear between neighbours


@pytest.mark.parametrize("scale, noted", [(2.2, True), (1.0, False)])
def test_a_small_face_is_reported_as_soft_crops(tmp_path, monkeypatch, scale, noted):
    from types import SimpleNamespace

    from models.enroll import prepare as prepare_mod
    from models.enroll.prepare import PrepareReport

    report = PrepareReport(video="me.mp4", source_size_px=(640, 360), fps=30.0, total_frames=900, usable_frames=900,
                           skipped_no_face=0, skipped_yaw=0, skipped_short_runs=0, longest_gap_s=0.0,
                           detector_runs=1, track_fps=30.0, crops_fps=30.0)
    turn = np.deg2rad(5.0)
    affine = scale * np.array([[np.cos(turn), -np.sin(turn), 0.0], [np.sin(turn), np.cos(turn), 0.0]])
    affine[:, 2] = (-40.0, 12.0)
    fake = SimpleNamespace(report=report, image_to_crop=np.repeat(affine[None], 5, axis=0))
    monkeypatch.setattr(prepare_mod, "prepare_video", lambda *a, **k: fake)
    said = []
    options = EnrollOptions(video=tmp_path / "me.mp4", name="me", out_dir=tmp_path, progress=False)
    run = enroll_mod.EnrollRun(options, None, said.append)
    enroll_mod._prepare(run)
    assert run.figures["prepare"]["crop_upsampling"] == pytest.approx(scale)
    notes = [s for s in said if "the face is small in this video" in s]
    assert len(notes) == int(noted) and all(f"enlarged {scale:.1f}x" in n for n in notes)
