import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("eval_relight_synth", ROOT / "scripts" / "eval_relight_synth.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_angle_between_normal_maps():
    mod = _script()
    a = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0], [1.0, 0.0, 0.0]])
    b = np.array([[0.0, 0.0, 3.0], [0.0, 1.0, 1.0], [-1.0, 0.0, 0.0]])
    np.testing.assert_allclose(mod.angle_deg(a, b), [0.0, 45.0, 180.0], atol=1e-5)


def test_squared_error_is_pooled_per_normal_error_bin():
    mod = _script()
    gt = np.full((2, 3, 3), 100, np.uint8)
    pred = gt.copy()
    pred[0, 0] = 151  # 51 levels off = 0.2 in [0, 1]: squared 0.04
    mask = np.ones((2, 3), bool)
    mask[1, 2] = False  # left out whatever its error
    pred[1, 2] = 0
    err = np.array([[1.0, 3.0, 5.0], [9.0, 1.5, 1.0]])
    sums, counts = mod.squared_error_by_bin(pred, gt, mask, err)
    np.testing.assert_allclose(sums, [0.04, 0.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_array_equal(counts, [2, 1, 1, 1])


def test_param_overrides_parse_each_field_by_its_type():
    import pytest

    from models.enroll.decompose import DecomposeParams
    from models.enroll.mouth import MouthParams
    from models.enroll.overrides import parse_overrides

    got = parse_overrides(DecomposeParams, ["w_identity=0.05", "widths=8,16", "steps=12"])
    assert got == {"w_identity": 0.05, "widths": (8, 16), "steps": 12} and isinstance(got["steps"], int)
    assert parse_overrides(MouthParams, ["cover_mask=false", "w_perceptual=2"]) == {"cover_mask": False,
                                                                                  "w_perceptual": 2.0}
    with pytest.raises(ValueError, match="MouthParams field"):
        parse_overrides(MouthParams, ["no_such=1"])
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_overrides(DecomposeParams, ["steps"])


def test_true_mesh_track_feeds_the_clip_mesh_to_the_later_stages(tmp_path):
    import pytest

    from models.enroll.prepare import PrepareParams, prepare_video
    from models.enroll.workdir import WorkDir
    from models.synth.clip import SynthConfig, synth_clip

    mod = _script()
    clip = tmp_path / "clip"
    synth_clip(SynthConfig(out_dir=clip, seconds=2.0, size_px=128, fps=25, seed=3, lightings=1, workers=1),
               log=lambda *_: None)
    wd = WorkDir(tmp_path / "true")
    params = PrepareParams(size_px=64, min_usable_s=1.0)
    mod.write_true_mesh_track(clip, wd, params)
    prepared = prepare_video(clip / "video.mp4", wd, params=params, progress=False)
    assert prepared.ran_stages == ("align", "crops")  # the written track stage counts as done
    with np.load(wd.path("track.npz")) as z:
        tracked = z["landmarks_raw"]
    true = np.load(clip / "landmarks.npz")["points_px"]
    np.testing.assert_array_equal(tracked[..., :2], true[..., :2])
    np.testing.assert_allclose(tracked[..., 2] - tracked[..., 2].mean(1, keepdims=True),
                               true[..., 2] - true[..., 2].mean(1, keepdims=True), atol=1e-3)
    # The crops' landmarks map back onto the true mesh (only the align stage's zero-phase smoothing differs).
    inv = np.linalg.inv(np.concatenate([prepared.image_to_crop, np.tile([[[0, 0, 1]]], (prepared.frame_count, 1, 1))], 1))
    xy = prepared.landmarks_px[..., :2]
    back = np.einsum("nij,nkj->nki", inv[:, :2, :2], xy) + inv[:, None, :2, 2]
    assert np.median(np.abs(back - true[prepared.source_frame_index, :, :2])) < 0.5

    tracked_wd = WorkDir(tmp_path / "tracked")
    prepare_video(clip / "video.mp4", tracked_wd, params=params, progress=False)
    with pytest.raises(SystemExit, match="tracked run"):
        mod.write_true_mesh_track(clip, tracked_wd, params)
    with pytest.raises(SystemExit, match="true mesh; add --true-mesh"):
        mod.main(["--synth", str(clip), "--workdir", str(wd.root), "--out", str(tmp_path / "r.json")])
