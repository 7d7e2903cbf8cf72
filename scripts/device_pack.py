#!/usr/bin/env python3
"""Build .device/site.tar.xz: the Python packages relitcam needs on the lent GPU machine that its image lacks, and
.device/weights.tar.xz: the dlib face-recognition weights enrollment's mouth stage reads.

    .venv/bin/python scripts/device_pack.py                 # download (or reuse) wheels, build + check both
    .venv/bin/python scripts/device_pack.py --weights-only  # (re)build the weights only; no download
    .venv/bin/python scripts/device_pack.py --check-only    # check the existing pack and weights; no download
    .venv/bin/python scripts/device_pack.py --python-version 3.11 --out-dir /tmp/pack311   # a pack for THIS machine

The GPU machine (docs/gpu.md, "Device pack") runs Python 3.12 with torch, CuPy, ONNX Runtime and NumPy but has
neither PyAV (`av`: video decode/encode) nor LiteRT (`ai-edge-litert`: the MediaPipe .tflite face models), and it
reaches no package index. This script downloads their cp312 manylinux wheels (versions pinned to this venv's), plus
pure-Python wheels of the test run's helpers (pytest, rich, imageio, ...), unpacks them, prunes what relitcam never
loads (LiteRT's WebGPU accelerator, NPU vendor plugins, AOT/converter tools; PyAV's Cython sources and stubs),
strips the shared objects, and writes one tar.xz:

    pack.json                  what is inside (wheels, versions, sha256, pruned paths, sizes)
    site/                      av, ai_edge_litert: always first on PYTHONPATH there
    fallback/<dist>/           pure-Python packages the image normally has; scripts/device_check.sh adds one to
                               PYTHONPATH only when `import <name>` fails there

Wheels are cached in .device/wheels, so a rerun needs no network. The clip for the enrollment step is copied to
.device/clip.mp4 (--clip, default the development clip ../shared/data/talking_obama_24s.mp4 when present).

The weights do not fit in the same call as the pack, so they travel in a second call on the same warm machine
(scripts/device_check.sh keeps what each call unpacked). weights.tar.xz holds, from the `face_recognition_models`
package installed in this venv, only what relitcam reads: the package's __init__.py (so that
importlib.util.find_spec finds it, as models/face/identity.py does), the one model file identity.py names
(MODEL_NAME), and the package's dist-info (metadata, licence) without RECORD:

    weights.json               what is inside (package, version, each file's sha256 and size, what was left out)
    site/face_recognition_models/...   on PYTHONPATH there

A device call sends the working tree (tracked + untracked files not ignored) plus the carried paths, 64 MiB in all;
this script prints that sum and the margin left for both calls (call 1: pack + clip; call 2: weights + clip).
Carry the files, not the folder: .device/wheels would go too.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
DEVICE_DIR = ROOT / ".device"
PACK_NAME = "site.tar.xz"
CLIP_NAME = "clip.mp4"
WEIGHTS_NAME = "weights.tar.xz"
WEIGHTS_FORMAT = 1
WEIGHTS_PACKAGE = "face_recognition_models"
IDENTITY_SOURCE = ROOT / "models" / "face" / "identity.py"  # its MODEL_NAME is the one weights file relitcam reads
DEFAULT_CLIP = ROOT.parent / "shared" / "data" / "talking_obama_24s.mp4"
LIMIT_BYTES = 64 * 2**20  # the device tool's cap on working tree + carried paths
PACK_FORMAT = 1
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


class Dist(NamedTuple):
    name: str  # distribution name as pip spells it
    module: str  # what `import` checks
    group: str  # "site" (always on the path) or "fallback" (only where the machine lacks it)


# Compiled packages the GPU image lacks (checked against docs of its image, 2026-11-17), then pure-Python packages
# it has but that the test run, bench and `relitcam enroll` import (rich: enroll's progress; imageio: lighting files).
DISTS = (
    Dist("av", "av", "site"),
    Dist("ai-edge-litert", "ai_edge_litert", "site"),
    Dist("pytest", "pytest", "fallback"),
    Dist("pluggy", "pluggy", "fallback"),
    Dist("iniconfig", "iniconfig", "fallback"),
    Dist("packaging", "packaging", "fallback"),
    Dist("pygments", "pygments", "fallback"),
    Dist("rich", "rich", "fallback"),
    Dist("markdown-it-py", "markdown_it", "fallback"),
    Dist("mdurl", "mdurl", "fallback"),
    Dist("imageio", "imageio", "fallback"),
)

# Paths under site/ relitcam never loads (it uses ai_edge_litert.interpreter.Interpreter on the CPU, and PyAV's
# compiled modules). Checked by running the three face models and a PyAV encode/decode from the pruned pack.
PRUNE = (
    "ai_edge_litert/libLiteRtWebGpuAccelerator.so",  # WebGPU accelerator of the CompiledModel API
    "ai_edge_litert/libLiteRt.so",  # CompiledModel runtime; the Interpreter links libpywrap_litert_common.so only
    "ai_edge_litert/vendors",  # NPU compiler plugins (Qualcomm, MediaTek, Samsung, Google Tensor, OpenVINO)
    "ai_edge_litert/aot",  # ahead-of-time NPU compilation
    "ai_edge_litert/tools",  # apply_plugin_main, benchmark scripts
    "ai_edge_litert/tflite",  # converter
    "ai_edge_litert/_pywrap_litert_converter.so",
    "ai_edge_litert/_pywrap_analyzer_wrapper.so",
    "ai_edge_litert/_pywrap_tfl_calibration.so",
    "ai_edge_litert/_pywrap_tensorflow_lite_calibration_wrapper.so",
    "ai_edge_litert/_pywrap_modify_model_interface.so",
    "ai_edge_litert/pywrap_genai_ops.so",
    "av/*.pxd", "av/*/*.pxd", "av/*.pyi", "av/*/*.pyi", "av/*.pyx", "av/*/*.pyx",  # Cython sources, type stubs
)


class PackError(Exception):
    """A problem with the pack the user can act on: printed as one line, exit status 1."""


# --------------------------------------------------------------------------------------------------- sizes


def mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def budget(tracked: int, untracked: int, carried: dict[str, int], limit: int = LIMIT_BYTES) -> dict:
    """What a device call sends (working tree + carried paths) against the tool's limit."""
    if min(tracked, untracked, *carried.values(), 0) < 0:
        raise ValueError("sizes must be >= 0")
    total = tracked + untracked + sum(carried.values())
    return {"tracked_bytes": tracked, "untracked_bytes": untracked, "carried_bytes": dict(carried),
            "total_bytes": total, "limit_bytes": limit, "margin_bytes": limit - total, "fits": total <= limit}


def format_budget(b: dict) -> str:
    rows = [("tracked files", b["tracked_bytes"]), ("untracked, not ignored", b["untracked_bytes"])]
    rows += [(f"carry {path}", n) for path, n in b["carried_bytes"].items()]
    w = max(24, *(len(label) + 1 for label, _ in rows))
    lines = [f"  {label:<{w}}{mib(n):>12}" for label, n in rows]
    lines += [f"  {'total':<{w}}{mib(b['total_bytes']):>12}   of {mib(b['limit_bytes'])}",
              f"  {'margin':<{w}}{mib(b['margin_bytes']):>12}" + ("" if b["fits"] else "   OVER THE LIMIT")]
    return "\n".join(lines)


def _git_files(*args: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z", *args], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / p for p in out.decode("utf-8", "surrogateescape").split("\0") if p]


def _bytes(paths: list[Path]) -> int:
    total = 0
    for p in paths:
        try:
            total += p.lstat().st_size
        except FileNotFoundError:  # deleted, not yet committed
            pass
    return total


def working_tree_bytes() -> tuple[int, int]:
    """(tracked files, untracked files git does not ignore): both travel with every device call."""
    return _bytes(_git_files()), _bytes(_git_files("--others", "--exclude-standard"))


def carried(out_dir: Path, names: tuple[str, ...] = (PACK_NAME, CLIP_NAME)) -> dict[str, int]:
    """The files of `names` that exist in out_dir, by the path a device call's `carry` names them."""
    found = {}
    for name in names:
        p = out_dir / name
        if p.is_file():
            found[p.relative_to(ROOT).as_posix() if p.is_relative_to(ROOT) else str(p)] = p.stat().st_size
    return found


# ----------------------------------------------------------------------------------------------- download


def pinned_versions(overrides: dict[str, str]) -> dict[str, str]:
    """Each dist's version: --pin, else the version installed in the interpreter running this script."""
    from importlib import metadata

    pins = {}
    for d in DISTS:
        if d.name in overrides:
            pins[d.name] = overrides[d.name]
            continue
        try:
            pins[d.name] = metadata.version(d.name)
        except metadata.PackageNotFoundError:
            raise PackError(f"{d.name} is not installed in {sys.executable}: run with the project's .venv/bin/python "
                            f"or give --pin {d.name}==VERSION") from None
    return pins


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def _wheel_tags_ok(filename: str, py: str) -> bool:
    """A wheel file name usable on CPython `py` (e.g. "3.12") on x86_64 Linux."""
    parts = filename[:-4].split("-")
    pytag, abi, plat = parts[-3], parts[-2], parts[-1]
    cp = "cp" + py.replace(".", "")
    if plat == "any":
        return True
    if not any(p in PLATFORMS or p.startswith("manylinux") and p.endswith("x86_64") for p in plat.split(".")):
        return False
    if abi == "abi3":  # stable ABI: usable on this and later versions
        return any(t.startswith("cp") and int(t[2:]) <= int(cp[2:]) for t in pytag.split("."))
    return cp in pytag.split(".")


def find_wheel(wheels: Path, dist: str, version: str, py: str) -> Path | None:
    for f in sorted(wheels.glob("*.whl")):
        name, ver = f.name.split("-")[:2]
        if _norm(name) == _norm(dist) and ver == version and _wheel_tags_ok(f.name, py):
            return f
    return None


def download(wheels: Path, pins: dict[str, str], py: str, offline: bool) -> dict[str, Path]:
    """The wheel of every dist for CPython `py`, from the cache or (unless offline) from the package index."""
    wheels.mkdir(parents=True, exist_ok=True)
    found = {}
    for d in DISTS:
        w = find_wheel(wheels, d.name, pins[d.name], py)
        if w is None:
            if offline:
                raise PackError(f"no cached wheel of {d.name}=={pins[d.name]} for Python {py} in {wheels} "
                                "(and --offline)")
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                   "--python-version", py, "--implementation", "cp", "--dest", str(wheels)]
            for p in PLATFORMS:
                cmd += ["--platform", p]
            print(f"downloading {d.name}=={pins[d.name]} for Python {py}", flush=True)
            r = subprocess.run(cmd + [f"{d.name}=={pins[d.name]}"], capture_output=True, text=True)
            w = find_wheel(wheels, d.name, pins[d.name], py)
            if r.returncode != 0 or w is None:
                tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
                raise PackError(f"pip could not download {d.name}=={pins[d.name]} for Python {py}: {tail[0]}")
        found[d.name] = w
    return found


# ------------------------------------------------------------------------------------------------- build


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tree_bytes(folder: Path) -> int:
    return sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def prune(site: Path, patterns=PRUNE) -> list[str]:
    """Remove the paths under site/ that match `patterns` (relative globs); returns what was removed."""
    removed = []
    for pattern in patterns:
        for p in sorted(site.glob(pattern)):
            rel = p.relative_to(site).as_posix()
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(rel)
    # RECORD lists every file with its hash; pruned files would make it lie, and pip is never run on the pack.
    for record in site.glob("*.dist-info/RECORD"):
        record.unlink()
    return removed


def shared_objects(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()
                  and (p.suffix == ".so" or ".so." in p.name) and p.read_bytes()[:4] == b"\x7fELF")


def strip(folder: Path) -> int:
    """strip --strip-unneeded every shared object (keeps the dynamic symbol table); returns bytes saved."""
    if shutil.which("strip") is None:
        raise PackError("`strip` (binutils) is not installed; use --no-strip")
    before = _tree_bytes(folder)
    files = shared_objects(folder)
    for i in range(0, len(files), 50):
        subprocess.run(["strip", "--strip-unneeded", *map(str, files[i:i + 50])], check=True)
    return before - _tree_bytes(folder)


def elf_ok(path: Path) -> bool:
    """The dynamic section and dynamic symbols still read (what the loader needs)."""
    if shutil.which("readelf") is None:
        return True
    r = subprocess.run(["readelf", "--dyn-syms", "--dynamic", str(path)], capture_output=True, text=True)
    return r.returncode == 0 and "Dynamic section" in r.stdout and ".dynsym" in r.stdout


# Libraries the pack's shared objects may take from the machine: glibc's, the C++ runtime's and zlib (every
# manylinux_2_28 system has them); anything else must be inside the pack.
SYSTEM_LIBS = {"ld-linux-x86-64.so.2", "libc.so.6", "libdl.so.2", "libgcc_s.so.1", "libm.so.6", "libmvec.so.1",
               "libpthread.so.0", "librt.so.1", "libstdc++.so.6", "libz.so.1"}


def structure_problems(root: Path) -> list[str]:
    """Checks that need no matching interpreter: every shared object is x86-64 ELF and finds its libraries."""
    problems = []
    files = shared_objects(root / "site")
    inside = {p.name for p in files}
    needed: set[str] = set()
    for p in files:
        head = p.read_bytes()[:20]
        if head[4] != 2 or int.from_bytes(head[18:20], "little") != 62:  # ELFCLASS64, EM_X86_64
            problems.append(f"{p.relative_to(root)} is not x86-64 ELF")
        if shutil.which("readelf"):
            out = subprocess.run(["readelf", "-d", str(p)], capture_output=True, text=True).stdout
            needed |= {line.split("[", 1)[1].split("]", 1)[0] for line in out.splitlines() if "(NEEDED)" in line}
    problems += [f"needs {lib}, which is neither in the pack nor a system library" for lib in
                 sorted(needed - inside - SYSTEM_LIBS)]
    return problems


def same_python(py: str) -> bool:
    return f"{sys.version_info.major}.{sys.version_info.minor}" == py


def import_check(root: Path, python: str = sys.executable) -> tuple[bool, str]:
    """Import av and LiteRT's interpreter from the unpacked pack `root` (site/ first on the path)."""
    code = ("import av, ai_edge_litert.interpreter as i, sys; site = sys.argv[1]; "
            "assert av.__file__.startswith(site) and i.__file__.startswith(site), (av.__file__, i.__file__); "
            "print(av.__version__, av.ffmpeg_version_info)")
    env = {**os.environ, "PYTHONPATH": str(root / "site")}
    r = subprocess.run([python, "-c", code, str(root / "site")], capture_output=True, text=True, env=env, timeout=120)
    return r.returncode == 0, (r.stdout + r.stderr).strip().splitlines()[-1] if (r.stdout + r.stderr).strip() else ""


def build(wheel_files: dict[str, Path], pins: dict[str, str], py: str, stage: Path, do_strip: bool) -> dict:
    """Unpack, prune and strip into `stage` (pack.json, site/, fallback/<dist>/); returns the manifest."""
    site = stage / "site"
    site.mkdir(parents=True)
    wheels, fallback = [], []
    unpacked = 0
    for d in DISTS:
        whl = wheel_files[d.name]
        target = site if d.group == "site" else stage / "fallback" / d.name
        target.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(whl) as z:
            z.extractall(target)
            unpacked += sum(i.file_size for i in z.infolist())
            modes = {i.filename: i.external_attr >> 16 for i in z.infolist()}
        for name, mode in modes.items():  # zipfile drops the exec bits
            if mode & 0o111 and (target / name).is_file():
                (target / name).chmod(0o755)
        wheels.append({"file": whl.name, "dist": d.name, "version": pins[d.name], "group": d.group,
                       "sha256": sha256(whl), "bytes": whl.stat().st_size})
        if d.group == "fallback":
            fallback.append({"dist": d.name, "import": d.module, "path": f"fallback/{d.name}"})
    removed = prune(site)
    for stale in stage.rglob("__pycache__"):
        shutil.rmtree(stale)
    saved = strip(site) if do_strip else 0
    bad = [p.relative_to(stage).as_posix() for p in shared_objects(site) if not elf_ok(p)]
    if bad:
        raise PackError(f"shared objects unreadable after strip: {bad[:3]}; rerun with --no-strip")
    return {"format": PACK_FORMAT, "python_version": py, "platforms": list(PLATFORMS),
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "wheels": wheels,
            "fallback": fallback, "pruned": removed, "stripped": do_strip, "strip_saved_bytes": saved,
            "wheel_bytes": sum(w["bytes"] for w in wheels), "unpacked_wheel_bytes": unpacked,
            "site_bytes": _tree_bytes(site), "fallback_bytes": _tree_bytes(stage / "fallback")}


def write_pack(stage: Path, manifest: dict, dest: Path) -> None:
    (stage / "pack.json").write_text(json.dumps(manifest, indent=1) + "\n")
    tmp = dest.with_name(dest.name + ".part")
    # x86 branch filter before LZMA2: ~2.5% smaller on the shared objects; `tar -xJf` (xz) reads it as usual.
    filters = [{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
    with lzma.open(tmp, "wb", format=lzma.FORMAT_XZ, filters=filters) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        for entry in ("pack.json", "site", "fallback"):
            tar.add(stage / entry, arcname=entry)
    tmp.replace(dest)


# ------------------------------------------------------------------------------------------------- check


def _tar_manifest(path: Path, manifest_name: str, fmt: str, what: str) -> tuple[dict, dict]:
    """(the JSON manifest `manifest_name` inside the xz tarball `path`, its members by name); PackError when the
    tarball does not read or its manifest is not of format `fmt`."""
    try:
        with tarfile.open(path, "r:xz") as tar:
            members = {m.name: m for m in tar.getmembers()}
            f = tar.extractfile(manifest_name)
            manifest = json.loads(f.read()) if f else None
    except (tarfile.TarError, KeyError, EOFError, OSError, json.JSONDecodeError, ValueError) as e:
        raise PackError(f"{path} is not a readable {what} ({type(e).__name__}: {e}); rebuild it") from None
    if not manifest or manifest.get("format") != fmt:
        raise PackError(f"{path} has no {manifest_name} of format {fmt}; rebuild it")
    return manifest, members


def read_manifest(pack: Path) -> dict:
    if not pack.is_file():
        raise PackError(f"no pack at {pack}: build it with `.venv/bin/python scripts/device_pack.py`")
    manifest, names = _tar_manifest(pack, "pack.json", PACK_FORMAT, "device pack")
    missing = [p for p in ("site/av/__init__.py", "site/ai_edge_litert/interpreter.py",
                           "site/ai_edge_litert/libpywrap_litert_common.so") if p not in names]
    missing += [fb["path"] for fb in manifest["fallback"] if fb["path"] not in names]
    if missing:
        raise PackError(f"{pack} lacks {', '.join(missing)}; rebuild it")
    return manifest


def unpack(pack: Path, into: Path) -> None:
    with tarfile.open(pack, "r:xz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:
            tar.extractall(into)


def run_probe(root: Path, python: str, clip: Path | None) -> dict:
    """scripts/device_probe.py with the unpacked pack on the path (as scripts/device_check.sh runs it)."""
    env = {**os.environ, "PYTHONPATH": f"{root / 'site'}{os.pathsep}{ROOT}"}
    cmd = [python, str(ROOT / "scripts" / "device_probe.py")] + (["--clip", str(clip)] if clip else [])
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    if r.returncode != 0:
        raise PackError(f"device_probe.py failed with the pack on the path: {r.stderr.strip()[-400:]}")
    return json.loads(r.stdout)


CALL_1 = "call 1, bash scripts/device_check.sh"
CALL_2 = "call 2, STEPS=enroll bash scripts/device_check.sh"


def check(pack: Path, out_dir: Path, probe: bool = True, load_weights: bool = True) -> int:
    """Both calls' sizes against the limit, the weights (when built), then the pack's contents and imports."""
    manifest = read_manifest(pack)
    py = manifest["python_version"]
    print(f"pack {os.path.relpath(pack, ROOT) if pack.is_relative_to(ROOT) else pack}: {mib(pack.stat().st_size)} "
          f"(Python {py}; {len(manifest['wheels'])} wheels, site {mib(manifest['site_bytes'])} unpacked)")
    for w in manifest["wheels"]:
        print(f"  {w['group']:<8} {w['dist']}=={w['version']}  {w['file']}  {mib(w['bytes'])}")
    weights = out_dir / WEIGHTS_NAME
    wmanifest = read_weights_manifest(weights) if weights.exists() else None
    if wmanifest:
        print(describe_weights(weights, wmanifest))
    tracked, untracked = working_tree_bytes()
    calls = {CALL_1: (PACK_NAME, CLIP_NAME)}
    if wmanifest:
        calls[CALL_2] = (WEIGHTS_NAME, CLIP_NAME)
    over = False
    for title, names in calls.items():
        b = budget(tracked, untracked, carried(out_dir, names), limit=LIMIT_BYTES)
        print(f"what {title} sends:\n" + format_budget(b))
        if not b["fits"]:
            print(f"error: {title}: {mib(-b['margin_bytes'])} over the device tool's {mib(b['limit_bytes'])}",
                  file=sys.stderr)
            over = True
    if not wmanifest:
        print(f"note: no weights at {weights}: enrollment's mouth stage cannot run on the device (build them with "
              "--weights-only)")
    if over:
        return 1
    if not probe:
        return 0
    if wmanifest and check_weights(weights, load=load_weights) != 0:
        return 1
    with tempfile.TemporaryDirectory(prefix="relitcam-pack-") as tmp:
        unpack(pack, Path(tmp))
        problems = structure_problems(Path(tmp))
        if problems:
            print("error: " + "; ".join(problems), file=sys.stderr)
            return 1
        n = len(shared_objects(Path(tmp) / "site"))
        print(f"{n} shared objects: x86-64, every library they need is in the pack or a system library")
        if not same_python(py):
            print(f"note: the pack is for Python {py} and this is {sys.version.split()[0]}: imports and models not "
                  f"run here (build one with --python-version {sys.version_info.major}.{sys.version_info.minor} to "
                  "check the same wheels' processing on this machine)")
            return 0
        ok, line = import_check(Path(tmp))
        if not ok:
            print(f"error: the pack does not import: {line}", file=sys.stderr)
            return 1
        clip = out_dir / CLIP_NAME
        report = run_probe(Path(tmp), sys.executable, clip if clip.is_file() else None)
        origins = [report.get("packages", {}).get("av", {}).get("file") or "", report.get("litert", {}).get("file") or ""]
        if not all(o.startswith(tmp) for o in origins):
            print(f"error: the probe did not load av and LiteRT from the pack: {origins}", file=sys.stderr)
            return 1
    litert = report.get("litert", {})
    models = litert.get("models", {})
    good = [n for n, m in models.items() if "error" not in m]
    print(f"probe with the pack: av {report.get('av', {}).get('version')} round trip "
          f"{'ok' if report.get('av', {}).get('roundtrip', {}).get('ok') else 'FAILED'}; "
          f"LiteRT {litert.get('version')} ran {len(good)}/3 face models")
    if len(good) != 3 or not report.get("av", {}).get("roundtrip", {}).get("ok"):
        print(f"error: probe failures: {json.dumps(report.get('missing'))}", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------------------- weights


def identity_model_name(source: Path = IDENTITY_SOURCE) -> str:
    """MODEL_NAME of models/face/identity.py, read from its source (importing it would load torch)."""
    try:
        tree = ast.parse(source.read_text())
    except (OSError, SyntaxError) as e:
        raise PackError(f"cannot read {source}: {e}") from None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                and any(isinstance(t, ast.Name) and t.id == "MODEL_NAME" for t in node.targets)):
            return node.value.value
    raise PackError(f"{source} defines no MODEL_NAME = \"...\": which weights file does relitcam read?")


def weights_package_dir() -> Path:
    """The installed face_recognition_models folder, found as identity.py finds it (its __init__ is not run: it
    needs pkg_resources, which new setuptools no longer has)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        raise PackError(f"{WEIGHTS_PACKAGE} is not installed in {sys.executable}: run with the project's "
                        f".venv/bin/python, or give --weights-from FOLDER (the package's folder)")
    return Path(spec.origin).parent


def build_weights(pkg_dir: Path, stage: Path, model_name: str) -> dict:
    """Copy what relitcam reads of the package at pkg_dir into stage/site; returns the manifest."""
    want = ["__init__.py", f"models/{model_name}"]
    missing = [rel for rel in want if not (pkg_dir / rel).is_file()]
    if missing:
        raise PackError(f"{pkg_dir} lacks {', '.join(missing)}: reinstall {WEIGHTS_PACKAGE}")
    site = stage / "site"
    copies = [(pkg_dir / rel, site / WEIGHTS_PACKAGE / rel) for rel in want]
    infos = sorted(pkg_dir.parent.glob(f"{WEIGHTS_PACKAGE}-*.dist-info"))
    version = None
    if infos:
        info = infos[-1]
        for f in sorted(info.rglob("*")):
            if f.is_file() and f.name not in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json"):
                copies.append((f, site / info.name / f.relative_to(info)))
        meta = info / "METADATA"
        if meta.is_file():
            version = next((line.split(":", 1)[1].strip() for line in meta.read_text(errors="replace").splitlines()
                            if line.startswith("Version:")), None)
    files = []
    for src, dst in copies:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        files.append({"path": dst.relative_to(stage).as_posix(), "sha256": sha256(dst), "bytes": dst.stat().st_size})
    left_out = sorted(f"{p.relative_to(pkg_dir).as_posix()} ({mib(p.stat().st_size)})" for p in pkg_dir.rglob("*")
                      if p.is_file() and "__pycache__" not in p.parts and p.relative_to(pkg_dir).as_posix() not in want)
    return {"format": WEIGHTS_FORMAT, "package": WEIGHTS_PACKAGE, "version": version, "model": model_name,
            "source": str(pkg_dir), "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files, "left_out": left_out, "unpacked_bytes": sum(f["bytes"] for f in files)}


def write_weights(stage: Path, manifest: dict, dest: Path) -> None:
    (stage / "weights.json").write_text(json.dumps(manifest, indent=1) + "\n")
    tmp = dest.with_name(dest.name + ".part")
    # The model is raw little-endian float32 (tar keeps it 4-byte aligned): lp=2 pb=2 model the 4-byte period and
    # lc=2 the byte before; 19.06 MB instead of 20.80 with plain -9e. `tar -xJf` reads it as usual.
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 2, "lp": 2, "pb": 2}]
    with lzma.open(tmp, "wb", format=lzma.FORMAT_XZ, filters=filters) as xz, tarfile.open(fileobj=xz, mode="w") as tar:
        for entry in ("weights.json", "site"):
            tar.add(stage / entry, arcname=entry)
    tmp.replace(dest)


def read_weights_manifest(weights: Path) -> dict:
    if not weights.is_file():
        raise PackError(f"no weights at {weights}: build them with `.venv/bin/python scripts/device_pack.py "
                        "--weights-only`")
    manifest, members = _tar_manifest(weights, "weights.json", WEIGHTS_FORMAT, "weights tarball")
    need = {f"site/{WEIGHTS_PACKAGE}/__init__.py": None, f"site/{WEIGHTS_PACKAGE}/models/{identity_model_name()}": None}
    need.update({f["path"]: f["bytes"] for f in manifest.get("files", [])})
    missing = [p for p in need if p not in members or not members[p].isfile()]
    if missing:
        raise PackError(f"{weights} lacks {', '.join(missing)}; rebuild it")
    wrong = [p for p, n in need.items() if n is not None and members[p].size != n]
    if wrong:
        raise PackError(f"{weights}: {', '.join(wrong)} differ in size from weights.json; rebuild it")
    return manifest


# Run with the unpacked weights' site/ and the repository on PYTHONPATH, as on the device: the package must be
# found there (not in the venv), and with "load", identity.py must resolve its model file there and read it.
_WEIGHTS_FIND = r"""
import importlib.util, sys
root, mode = sys.argv[1:3]
spec = importlib.util.find_spec("face_recognition_models")
origin = spec.origin if spec else None
assert origin and origin.startswith(root), f"face_recognition_models found at {origin}, not in the weights"
if mode == "load":
    from models.face.identity import model_path, read_dlib_resnet
    path = model_path()
    assert str(path).startswith(root), f"models.face.identity.model_path() is {path}, not in the weights"
    w = read_dlib_resnet(path)
    print(f"models.face.identity read {path.name}: {len(w.convs)} convs, fc {w.fc.shape[1]} -> {w.fc.shape[0]}")
else:
    print(f"face_recognition_models found at {origin}")
"""


def check_weights(weights: Path, load: bool = True, python: str = sys.executable) -> int:
    """Unpack the weights, compare every file with weights.json, and find (with `load`: read) the model from them."""
    manifest = read_weights_manifest(weights)
    with tempfile.TemporaryDirectory(prefix="relitcam-weights-") as tmp:
        unpack(weights, Path(tmp))
        bad = [f["path"] for f in manifest["files"] if sha256(Path(tmp) / f["path"]) != f["sha256"]]
        if bad:
            print(f"error: {', '.join(bad)} in {weights} differ from weights.json (sha256); rebuild it",
                  file=sys.stderr)
            return 1
        env = {**os.environ, "PYTHONPATH": f"{Path(tmp) / 'site'}{os.pathsep}{ROOT}"}
        r = subprocess.run([python, "-c", _WEIGHTS_FIND, tmp, "load" if load else "find"], capture_output=True,
                           text=True, env=env, cwd=ROOT, timeout=120)
        text = (r.stdout + r.stderr).strip().splitlines()
        if r.returncode != 0:
            print(f"error: the weights do not work from {weights}: {text[-1] if text else 'no output'}",
                  file=sys.stderr)
            return 1
    print(f"weights: {len(manifest['files'])} files match weights.json (sha256); {text[-1] if text else ''}")
    return 0


def describe_weights(weights: Path, manifest: dict) -> str:
    where = os.path.relpath(weights, ROOT) if weights.is_relative_to(ROOT) else str(weights)
    lines = [f"weights {where}: {mib(weights.stat().st_size)} ({manifest['package']} {manifest.get('version')}, "
             f"{mib(manifest['unpacked_bytes'])} unpacked)"]
    lines += [f"  {f['path']}  {mib(f['bytes'])}" for f in manifest["files"] if f["bytes"] > 2**16]
    if manifest.get("left_out"):
        lines.append(f"  left out (relitcam does not read them): {', '.join(manifest['left_out'])}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------------- main


def print_calls(out_dir: Path) -> None:
    print(f"device call 1: run(command=\"bash scripts/device_check.sh\", "
          f"carry={json.dumps(list(carried(out_dir, (PACK_NAME, CLIP_NAME))))}, timeout_s=600)")
    if (out_dir / WEIGHTS_NAME).is_file():
        print(f"device call 2, right after it on the same warm machine: run(command=\"STEPS=enroll bash "
              f"scripts/device_check.sh\", carry={json.dumps(list(carried(out_dir, (WEIGHTS_NAME, CLIP_NAME))))}, "
              "timeout_s=600)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check-only", action="store_true", help="check an existing pack (sizes, contents, imports)")
    p.add_argument("--python-version", default="3.12", help="CPython of the target machine (default 3.12)")
    p.add_argument("--out-dir", type=Path, default=DEVICE_DIR,
                   help="where site.tar.xz, weights.tar.xz and clip.mp4 go (.device)")
    p.add_argument("--wheels", type=Path, default=DEVICE_DIR / "wheels", help="wheel cache (.device/wheels)")
    p.add_argument("--pin", action="append", default=[], metavar="DIST==VERSION", help="override a version")
    p.add_argument("--offline", action="store_true", help="use cached wheels only")
    p.add_argument("--no-strip", action="store_true", help="keep shared objects as shipped")
    p.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="enrollment clip copied to OUT_DIR/clip.mp4")
    p.add_argument("--no-clip", action="store_true", help="no clip (the device's enroll step is then skipped)")
    p.add_argument("--weights-only", action="store_true", help="build OUT_DIR/weights.tar.xz only, then check both")
    p.add_argument("--no-weights", action="store_true", help="build the pack only (weights.tar.xz is left as it is)")
    p.add_argument("--weights-from", type=Path, default=None, metavar="FOLDER",
                   help=f"the {WEIGHTS_PACKAGE} package folder (default: the one this Python finds)")
    args = p.parse_args(argv)
    if args.weights_only and args.no_weights:
        p.error("--weights-only and --no-weights exclude each other")
    out_dir = args.out_dir.resolve()
    pack = out_dir / PACK_NAME
    try:
        if args.check_only:
            return check(pack, out_dir)
        if not args.no_weights:
            pkg_dir = args.weights_from.resolve() if args.weights_from else weights_package_dir()
            out_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="relitcam-weights-") as tmp:
                wmanifest = build_weights(pkg_dir, Path(tmp), identity_model_name())
                print(f"weights from {pkg_dir}: {len(wmanifest['files'])} files, "
                      f"{mib(wmanifest['unpacked_bytes'])}; compressing...", flush=True)
                write_weights(Path(tmp), wmanifest, out_dir / WEIGHTS_NAME)
            print(f"{out_dir / WEIGHTS_NAME}: {mib((out_dir / WEIGHTS_NAME).stat().st_size)}")
        if args.weights_only:
            if not pack.is_file():
                print(f"note: no pack at {pack}: checking the weights alone")
                return check_weights(out_dir / WEIGHTS_NAME)
            code = check(pack, out_dir)
            if code == 0 and out_dir == DEVICE_DIR.resolve():
                print_calls(out_dir)
            return code
        overrides = dict(s.split("==", 1) for s in args.pin)
        pins = pinned_versions(overrides)
        files = download(args.wheels.resolve(), pins, args.python_version, args.offline)
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="relitcam-pack-") as tmp:
            stage = Path(tmp)
            manifest = build(files, pins, args.python_version, stage, not args.no_strip)
            if manifest["stripped"] and same_python(args.python_version):
                ok, line = import_check(stage)
                if not ok:  # strip broke something: build again as shipped
                    print(f"warning: stripped pack does not import ({line}); building it unstripped", file=sys.stderr)
                    shutil.rmtree(stage / "site")
                    shutil.rmtree(stage / "fallback")
                    manifest = build(files, pins, args.python_version, stage, False)
            print(f"site/ {mib(manifest['site_bytes'])} + fallback/ {mib(manifest['fallback_bytes'])} unpacked "
                  f"(wheels {mib(manifest['wheel_bytes'])}, {mib(manifest['unpacked_wheel_bytes'])} unzipped; "
                  f"pruned {len(manifest['pruned'])} paths, strip saved {mib(manifest['strip_saved_bytes'])}); "
                  "compressing...", flush=True)
            write_pack(stage, manifest, pack)
        if not args.no_clip:
            if args.clip.is_file():
                shutil.copyfile(args.clip, out_dir / CLIP_NAME)
            else:
                print(f"note: no clip at {args.clip}; the device's enroll step will be skipped")
        elif (out_dir / CLIP_NAME).exists():
            (out_dir / CLIP_NAME).unlink()
        code = check(pack, out_dir)
        if code == 0 and out_dir == DEVICE_DIR.resolve():
            print_calls(out_dir)
        return code
    except PackError as e:
        print(f"device_pack: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
