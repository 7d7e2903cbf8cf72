"""The GPU-machine tooling, checked without a GPU or the network: scripts/device_probe.py reports what is missing as
JSON and exits 0, scripts/device_check.sh runs its steps under limits and writes a summary, scripts/device_pack.py's
size arithmetic and its --check-only errors."""

import importlib.util
import json
import lzma
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from models.xp import cupy_available

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "scripts" / "device_probe.py"
CHECK = ROOT / "scripts" / "device_check.sh"
MIB = 2**20

_SPEC = importlib.util.spec_from_file_location("device_pack", ROOT / "scripts" / "device_pack.py")
device_pack = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(device_pack)


# ------------------------------------------------------------------------------------------------ probe


@pytest.mark.skipif(cupy_available(), reason="this machine has a GPU")
def test_probe_on_cpu_reports_no_gpu_and_runs_the_face_models(tmp_path):
    out = tmp_path / "probe.json"
    r = subprocess.run([sys.executable, str(PROBE), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert json.loads(out.read_text()) == report
    assert report["gpu"] is False and report["gpu_name"] is None
    assert report["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert report["torch"]["cuda_available"] is False
    assert any("cupy" in m or "CUDA" in m for m in report["missing"])
    # the venv has PyAV and LiteRT: the round trip and all three MediaPipe models run
    assert report["av"]["roundtrip"]["ok"] and report["av"]["roundtrip"]["frames_out"] == 12
    models = report["litert"]["models"]
    assert set(models) == {"face_detection_short_range.tflite", "face_landmark.tflite", "selfie_segmentation.tflite"}
    assert models["face_detection_short_range.tflite"]["outputs"] == {"regressors": [1, 896, 16],
                                                                      "classificators": [1, 896, 1]}
    assert models["face_landmark.tflite"]["input"] == [1, 192, 192, 3]
    assert all("error" not in m for m in models.values())


def test_probe_on_a_bare_python_exits_0_and_lists_what_is_missing(tmp_path):
    # -I -S: no site-packages at all (no numpy, torch, av, LiteRT), as on a machine that has only Python
    r = subprocess.run([sys.executable, "-I", "-S", str(PROBE)], capture_output=True, text=True, timeout=60,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["gpu"] is False
    for needle in ("import numpy", "import av", "import ai_edge_litert", "LiteRT face models", "PyAV round trip"):
        assert any(m.startswith(needle) for m in report["missing"]), (needle, report["missing"])
    assert report["tensorrt"]["tensorrt"]["present"] is False


# ------------------------------------------------------------------------------------------------ check


def _fake_pack_root(tmp_path: Path) -> Path:
    """An unpacked pack: site/ with one module, a fallback the machine lacks and one it has (stdlib json)."""
    root = tmp_path / "pack"
    (root / "site").mkdir(parents=True)
    (root / "site" / "relitcam_fake_site.py").write_text("")
    (root / "fallback" / "fake-dist").mkdir(parents=True)
    (root / "fallback" / "fake-dist" / "relitcam_fake_fallback.py").write_text("")
    (root / "fallback" / "json-dist").mkdir(parents=True)
    py = "%d.%d" % sys.version_info[:2]
    (root / "pack.json").write_text(json.dumps({
        "format": 1, "python_version": py, "created_utc": "now",
        "wheels": [{"dist": "fake-dist", "version": "1"}],
        "fallback": [{"dist": "fake-dist", "import": "relitcam_fake_fallback", "path": "fallback/fake-dist"},
                     {"dist": "json-dist", "import": "json", "path": "fallback/json-dist"}]}))
    return root


def _bare_python(tmp_path: Path, slow_pytest: bool = False) -> Path:
    """This interpreter without site-packages (fast, and lacking pytest); optionally one whose pytest hangs."""
    wrapper = tmp_path / "python3"
    hang = 'if [ "$1" = -m ] && [ "$2" = pytest ]; then sleep 30; exit 0; fi\n' if slow_pytest else ""
    wrapper.write_text(f'#!/bin/sh\n{hang}exec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def _run_check(tmp_path: Path, **env) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "out"
    # DEVICE_ROOT and WEIGHTS: never the real /tmp/relitcam-device, nor the checkout's .device/weights.tar.xz
    full = {**os.environ, "OUT": str(out), "SITE_DIR": str(_fake_pack_root(tmp_path)),
            "CLIP": str(tmp_path / "no_clip.mp4"), "ENROLL_WORK": str(tmp_path / "enroll"),
            "DEVICE_ROOT": str(tmp_path / "root"), "WEIGHTS": str(tmp_path / "no_weights.tar.xz"), **env}
    full.pop("PYTHONPATH", None)
    r = subprocess.run(["bash", str(CHECK)], capture_output=True, text=True, env=full, timeout=60, cwd=tmp_path)
    return r, out


def test_check_probe_step_writes_probe_and_summary(tmp_path):
    r, out = _run_check(tmp_path, STEPS="probe enroll bogus", PYTHON=str(_bare_python(tmp_path)))
    assert r.returncode == 0, r.stdout + r.stderr
    probe = json.loads((out / "probe.json").read_text())
    assert probe["gpu"] is False and any(m.startswith("import numpy") for m in probe["missing"])
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    assert steps["probe"]["status"] == "ok" and steps["probe"]["rc"] == 0 and steps["probe"]["limit_s"] == 90
    assert any(line.startswith("device_probe: python") for line in steps["probe"]["tail"])
    assert steps["enroll"]["status"] == "skipped" and "no clip" in steps["enroll"]["note"]
    assert any("unknown step bogus" in n for n in summary["notes"])
    assert summary["fallbacks_activated"] == ["fake-dist"]  # json imports there: its fallback stays off the path
    assert summary["pack"]["python_version"] == "%d.%d" % sys.version_info[:2]
    assert summary["probe"]["gpu"] is False and summary["ok"] is True
    log = (out / "log.txt").read_text()
    assert "fallback/fake-dist" in log and "fallback/json-dist" not in log
    # what the device tool hands back: at most 8 files, plain names
    names = sorted(p.name for p in out.iterdir())
    assert names == ["log.txt", "probe.json", "summary.json"]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)


def test_check_logs_a_failed_and_a_timed_out_step_and_runs_the_next(tmp_path):
    # tests fails (no pytest on the bare python); then the same with a pytest that hangs past its limit
    r, out = _run_check(tmp_path, STEPS="tests probe", PYTHON=str(_bare_python(tmp_path)))
    assert r.returncode == 1
    steps = [(s["step"], s["status"]) for s in json.loads((out / "summary.json").read_text())["steps"]]
    assert steps == [("tests", "failed"), ("probe", "ok")]
    assert "No module named pytest" in (out / "log.txt").read_text()

    slow = tmp_path / "slow"
    slow.mkdir()
    r, out = _run_check(slow, STEPS="tests probe", PYTHON=str(_bare_python(slow, slow_pytest=True)),
                        LIMIT_TESTS="1", MIN_STEP_S="1")
    assert r.returncode == 1
    steps = json.loads((out / "summary.json").read_text())["steps"]
    assert [(s["step"], s["status"], s["rc"]) for s in steps] == [("tests", "timeout", 124), ("probe", "ok", 0)]
    assert steps[0]["seconds"] < 10


def test_check_without_a_pack_says_so_and_still_probes(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "STEPS": "probe", "PACK": str(tmp_path / "missing.tar.xz"),
           "PYTHON": str(_bare_python(tmp_path)), "CLIP": str(tmp_path / "none.mp4"),
           "DEVICE_ROOT": str(tmp_path / "root"), "WEIGHTS": str(tmp_path / "none.tar.xz")}
    env.pop("SITE_DIR", None)
    r = subprocess.run(["bash", str(CHECK)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pack"] is None and any("no pack at" in n for n in summary["notes"])
    assert (out / "probe.json").is_file()


# ------------------------------------------------------------------------------------------------- pack


def test_budget_arithmetic():
    b = device_pack.budget(30 * MIB, 1 * MIB, {".device/site.tar.xz": 20 * MIB, ".device/clip.mp4": 2 * MIB})
    assert b["total_bytes"] == 53 * MIB and b["margin_bytes"] == 11 * MIB and b["fits"]
    assert b["limit_bytes"] == 64 * MIB
    over = device_pack.budget(40 * MIB, 0, {"pack": 25 * MIB})
    assert over["margin_bytes"] == -1 * MIB and not over["fits"]
    assert "OVER THE LIMIT" in device_pack.format_budget(over)
    assert "OVER" not in device_pack.format_budget(b) and "11.00 MiB" in device_pack.format_budget(b)
    with pytest.raises(ValueError):
        device_pack.budget(-1, 0, {})


def test_check_only_without_a_pack_is_a_clear_error(tmp_path, capsys):
    assert device_pack.main(["--check-only", "--out-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"no pack at {tmp_path / 'site.tar.xz'}" in err and "scripts/device_pack.py" in err


def test_check_only_on_a_damaged_pack(tmp_path, capsys):
    (tmp_path / "site.tar.xz").write_bytes(b"not an xz file")
    assert device_pack.main(["--check-only", "--out-dir", str(tmp_path)]) == 1
    assert "not a readable device pack" in capsys.readouterr().err


def _write_fake_pack(folder: Path, python_version: str = "3.99") -> Path:
    stage = folder / "stage"
    for rel in ("site/av/__init__.py", "site/ai_edge_litert/interpreter.py",
                "site/ai_edge_litert/libpywrap_litert_common.so", "fallback/pytest/pytest.py"):
        (stage / rel).parent.mkdir(parents=True, exist_ok=True)
        (stage / rel).write_text("")
    manifest = {"format": 1, "python_version": python_version, "site_bytes": 0,
                "wheels": [{"group": "site", "dist": "av", "version": "1", "file": "av.whl", "bytes": 1}],
                "fallback": [{"dist": "pytest", "import": "pytest", "path": "fallback/pytest"}]}
    pack = folder / "site.tar.xz"
    device_pack.write_pack(stage, manifest, pack)
    return pack


def test_check_only_on_a_pack_for_another_python_checks_sizes_only(tmp_path, capsys, monkeypatch):
    pack = _write_fake_pack(tmp_path)
    with lzma.open(pack) as f, tarfile.open(fileobj=f) as tar:
        assert {"pack.json", "site/av/__init__.py", "fallback/pytest"} <= set(tar.getnames())
    assert device_pack.main(["--check-only", "--out-dir", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "Python 3.99" in text and "margin" in text and "imports and models not run here" in text
    monkeypatch.setattr(device_pack, "LIMIT_BYTES", 1000)  # the repository alone is over that
    assert device_pack.main(["--check-only", "--out-dir", str(tmp_path)]) == 1
    assert "over the device tool's" in capsys.readouterr().err


def test_check_only_names_what_a_pack_lacks(tmp_path, capsys):
    pack = _write_fake_pack(tmp_path)
    stage = tmp_path / "stage"
    (stage / "fallback" / "pytest" / "pytest.py").unlink()
    (stage / "fallback" / "pytest").rmdir()
    device_pack.write_pack(stage, json.loads((stage / "pack.json").read_text()), pack)
    assert device_pack.main(["--check-only", "--out-dir", str(tmp_path)]) == 1
    assert "lacks fallback/pytest" in capsys.readouterr().err


def test_wheel_tags():
    ok = device_pack._wheel_tags_ok
    assert ok("av-18.1.0-cp311-abi3-manylinux_2_28_x86_64.whl", "3.12")  # stable ABI from 3.11 on
    assert not ok("av-18.1.0-cp313-abi3-manylinux_2_28_x86_64.whl", "3.12")
    assert ok("ai_edge_litert-2.3.0-cp312-cp312-manylinux_2_27_x86_64.whl", "3.12")
    assert not ok("ai_edge_litert-2.3.0-cp311-cp311-manylinux_2_27_x86_64.whl", "3.12")
    assert not ok("ai_edge_litert-2.3.0-cp312-cp312-macosx_12_0_arm64.whl", "3.12")
    assert not ok("x-1-cp312-cp312-manylinux_2_17_aarch64.whl", "3.12")
    assert ok("pytest-9.2.0-py3-none-any.whl", "3.12")


def test_prune_removes_litert_extras_and_keeps_the_interpreter(tmp_path):
    site = tmp_path / "site"
    for rel in ("ai_edge_litert/interpreter.py", "ai_edge_litert/libpywrap_litert_common.so",
                "ai_edge_litert/libLiteRtWebGpuAccelerator.so", "ai_edge_litert/vendors/qualcomm/x.so",
                "ai_edge_litert-2.3.0.dist-info/RECORD", "av/__init__.py", "av/video/frame.pyi", "av/codec/codec.pxd"):
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text("x")
    removed = device_pack.prune(site)
    assert "ai_edge_litert/libLiteRtWebGpuAccelerator.so" in removed and "ai_edge_litert/vendors" in removed
    assert "av/video/frame.pyi" in removed and "av/codec/codec.pxd" in removed
    left = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    assert left == ["ai_edge_litert/interpreter.py", "ai_edge_litert/libpywrap_litert_common.so", "av/__init__.py"]


# ------------------------------------------------------------------------------------- two calls, weights


def _tar_xz(folder: Path, dest: Path) -> Path:
    with lzma.open(dest, "wb") as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        for entry in sorted(folder.iterdir()):
            tar.add(entry, arcname=entry.name)
    return dest


def _fake_weights(tmp_path: Path, model: bytes = b"not a dlib stream") -> Path:
    """weights.tar.xz built by device_pack from a stand-in face_recognition_models package (and a file it omits)."""
    site = tmp_path / "fake_site"
    pkg = site / "face_recognition_models"
    (pkg / "models").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / device_pack.identity_model_name()).write_bytes(model)
    (pkg / "models" / "shape_predictor_68_face_landmarks.dat").write_bytes(b"x" * 100)
    info = site / "face_recognition_models-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: face_recognition_models\nVersion: 0.3.0\n")
    (info / "RECORD").write_text("")
    stage = tmp_path / "weights_stage"
    manifest = device_pack.build_weights(pkg, stage, device_pack.identity_model_name())
    dest = tmp_path / "weights.tar.xz"
    device_pack.write_weights(stage, manifest, dest)
    return dest


def _check_call(tmp_path: Path, name: str, **env) -> tuple[subprocess.CompletedProcess, dict, str]:
    """One device_check.sh run as on the machine (no SITE_DIR); DEVICE_ROOT and TMPDIR under tmp_path."""
    out = tmp_path / name
    (tmp_path / "tmpdir").mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SITE_DIR", "ENROLL_WORK")}
    full = {**base, "OUT": str(out), "DEVICE_ROOT": str(tmp_path / "root"), "TMPDIR": str(tmp_path / "tmpdir"),
            "PYTHON": str(_bare_python(tmp_path)), "CLIP": str(tmp_path / "no_clip.mp4"),
            "PACK": str(tmp_path / "no_pack.tar.xz"), "WEIGHTS": str(tmp_path / "no_weights.tar.xz"), **env}
    r = subprocess.run(["bash", str(CHECK)], capture_output=True, text=True, env=full, timeout=60, cwd=tmp_path)
    return r, json.loads((out / "summary.json").read_text()), (out / "log.txt").read_text()


def test_check_keeps_the_unpacked_pack_for_the_next_call(tmp_path):
    pack = _tar_xz(_fake_pack_root(tmp_path), tmp_path / "site.tar.xz")
    sha = device_pack.sha256(pack)
    site = tmp_path / "root" / "site"

    # call 1 carries the pack: unpacked into DEVICE_ROOT/site, which outlives the call (the scratch folder does not)
    r, summary, log = _check_call(tmp_path, "call1", PACK=str(pack), STEPS="enroll")
    assert r.returncode == 0, r.stdout + r.stderr
    assert summary["pack"]["from"] == "this call" and summary["pack"]["sha256"] == sha
    assert summary["site_dir"] == str(site) and (site / "pack.json").is_file()
    assert summary["fallbacks_activated"] == ["fake-dist"] and f"{site}/site:" in log
    assert summary["weights"] is None and "no weights at" in log
    assert list((tmp_path / "tmpdir").iterdir()) == []
    (site / "sentinel").write_text("")

    # call 2 carries no pack: the folder from call 1 is used as it is
    r, summary, log = _check_call(tmp_path, "call2", STEPS="enroll")
    assert r.returncode == 0, r.stdout + r.stderr
    assert summary["pack"]["from"] == "earlier call" and summary["pack"]["sha256"] == sha
    assert summary["pack"]["wheels"] == {"fake-dist": "1"} and summary["site_dir"] == str(site)
    assert any("none carried" in n for n in summary["notes"]) and f"{site}/site:" in log
    assert summary["fallbacks_activated"] == ["fake-dist"] and (site / "sentinel").exists()

    # the same pack carried again: not unpacked again
    r, summary, log = _check_call(tmp_path, "call3", PACK=str(pack), STEPS="enroll")
    assert summary["pack"]["from"] == "earlier call" and "reused" in log and (site / "sentinel").exists()

    # another pack replaces the folder
    root2 = _fake_pack_root(tmp_path / "other")
    (root2 / "site" / "relitcam_other.py").write_text("")
    pack2 = _tar_xz(root2, tmp_path / "other.tar.xz")
    r, summary, log = _check_call(tmp_path, "call4", PACK=str(pack2), STEPS="enroll")
    assert summary["pack"]["from"] == "this call" and summary["pack"]["sha256"] == device_pack.sha256(pack2)
    assert not (site / "sentinel").exists() and (site / "site" / "relitcam_other.py").exists()
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["site"]  # no half-unpacked folder left

    # nothing carried and nothing from an earlier call: said plainly
    r, summary, log = _check_call(tmp_path / "other", "call5", STEPS="enroll")
    assert summary["pack"] is None and any("no pack at" in n and "earlier call" in n for n in summary["notes"])


def test_check_puts_the_weights_on_the_path_and_keeps_them(tmp_path):
    weights = _fake_weights(tmp_path)
    folder = tmp_path / "root" / "weights"
    r, summary, log = _check_call(tmp_path, "call2", WEIGHTS=str(weights), STEPS="probe",
                                  SITE_DIR=str(_fake_pack_root(tmp_path)))
    assert r.returncode == 0, r.stdout + r.stderr
    w = summary["weights"]
    assert w["from"] == "this call" and w["sha256"] == device_pack.sha256(weights) and w["dir"] == str(folder)
    assert w["package"] == "face_recognition_models" and w["version"] == "0.3.0"
    assert summary["pack"]["from"] == "SITE_DIR"
    # the probe finds the package as models.face.identity does, in the unpacked weights
    frm = json.loads((tmp_path / "call2" / "probe.json").read_text())["packages"]["face_recognition_models"]
    assert frm["present"] is True
    assert frm["file"] == str(folder / "site" / "face_recognition_models" / "models" /
                              device_pack.identity_model_name())
    assert not any(m.startswith("face_recognition_models") for m in summary["probe"]["missing"])
    # only what relitcam reads travelled
    assert not (folder / "site" / "face_recognition_models" / "models" / "shape_predictor_68_face_landmarks.dat"
                ).exists()

    # a later call without the weights still has them
    r, summary, log = _check_call(tmp_path, "call3", STEPS="probe", SITE_DIR=str(tmp_path / "pack"))
    assert summary["weights"]["from"] == "earlier call" and f"{folder}/site" in log
    frm = json.loads((tmp_path / "call3" / "probe.json").read_text())["packages"]["face_recognition_models"]
    assert frm["present"] is True and frm["file"].startswith(str(folder))


def test_weights_build_and_check(tmp_path, capsys):
    assert device_pack.identity_model_name() == "dlib_face_recognition_resnet_model_v1.dat"
    bad_source = tmp_path / "identity.py"
    bad_source.write_text("OTHER = 1\n")
    with pytest.raises(device_pack.PackError, match="no MODEL_NAME"):
        device_pack.identity_model_name(bad_source)

    weights = _fake_weights(tmp_path)
    with lzma.open(weights) as f, tarfile.open(fileobj=f) as tar:
        names = set(tar.getnames())
    model = "site/face_recognition_models/models/" + device_pack.identity_model_name()
    assert {"weights.json", "site/face_recognition_models/__init__.py", model,
            "site/face_recognition_models-0.3.0.dist-info/METADATA"} <= names
    assert not any(n.endswith(("RECORD", "shape_predictor_68_face_landmarks.dat")) for n in names)
    manifest = device_pack.read_weights_manifest(weights)
    assert manifest["version"] == "0.3.0" and any("shape_predictor_68" in x for x in manifest["left_out"])
    assert device_pack.check_weights(weights, load=False) == 0
    assert "files match weights.json" in capsys.readouterr().out

    # --check-only prints call 2's budget beside call 1's, then loads the model: a stand-in is refused
    _write_fake_pack(tmp_path)
    assert device_pack.main(["--check-only", "--out-dir", str(tmp_path)]) == 1
    cap = capsys.readouterr()
    assert "what call 1" in cap.out and "what call 2" in cap.out and f"carry {weights}" in cap.out
    assert "the weights do not work" in cap.err

    # a file that differs from weights.json, and a tarball without the model
    stage = tmp_path / "weights_stage"
    (stage / model).write_bytes(b"NOT a dlib stream")  # same size, other bytes
    device_pack.write_weights(stage, manifest, weights)
    assert device_pack.check_weights(weights, load=False) == 1
    assert "differ from weights.json" in capsys.readouterr().err
    (stage / model).unlink()
    manifest["files"] = [f for f in manifest["files"] if f["path"] != model]
    device_pack.write_weights(stage, manifest, weights)
    assert device_pack.main(["--check-only", "--out-dir", str(tmp_path)]) == 1
    assert f"lacks {model}" in capsys.readouterr().err


def test_check_only_without_weights_says_call_2_cannot_run(tmp_path, capsys):
    _write_fake_pack(tmp_path)
    assert device_pack.main(["--check-only", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "what call 1" in out and "what call 2" not in out and "no weights at" in out
