"""Avatar bundles: the folder enrollment writes and the live pipeline loads.

A bundle is a folder with `manifest.json`, one ONNX file per net, and arrays (idle-loop layers, expression basis,
...): `.npy`, except uint8 frame sequences (the idle-loop layers), which are stored as each frame's difference from
the one before (mod 256) in a deflated `.npz`. Consecutive idle frames are aligned crops of one face, so that stores
the layers 3-5x smaller and exactly, and the loop can be that much longer in the same bundle size (format 2; format
1 bundles, all `.npy`, still load). The manifest records the format version, frame size, fps, audio lookahead, the
SH convention of `sh_coeffs`, and a SHA-256 of every file. It is written whole or not at all: everything goes into a
temporary sibling folder that is renamed into place, so a crash never leaves a half-written bundle behind.

Loading validates before anything runs: format name and version, every listed file present with the recorded
checksum, array shapes and dtypes as recorded, and every ONNX graph's inputs as recorded. A bad bundle raises
`BundleError` naming the problem.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.enroll.workdir import file_sha256

FORMAT_NAME = "relitcam-avatar"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: every array a plain .npy
FRAME_DELTA = "frame-delta-deflate"
# The SH convention of models/lighting/sh.py; a bundle made under another convention must not be relit with ours.
SH_CONVENTION = "sh9-radiance-xright-yup-ztoviewer-v1"
MANIFEST = "manifest.json"


class BundleError(ValueError):
    """The avatar bundle is missing, from another format version, or damaged; the message says which file and why."""


@dataclass(frozen=True)
class NetSpec:
    """One ONNX net of the bundle: file name, and input/output names with shapes (-1 for a dynamic axis)."""

    file: str
    inputs: dict[str, list[int]]
    outputs: dict[str, list[int]]


@dataclass
class AvatarBundle:
    """A loaded, validated avatar. `arrays` are host NumPy arrays; `nets` map net name -> ONNX file path."""

    path: Path
    name: str
    size_px: int
    fps: float
    lookahead_ms: float
    sh_coeffs: np.ndarray  # (9, 3) learned lighting of the enrollment video, radiance SH
    nets: dict[str, NetSpec]
    arrays: dict[str, np.ndarray]
    info: dict = field(default_factory=dict)  # training facts: video, frames, time, metrics

    def learned_lighting(self):
        """The enrollment video's lighting as models.lighting.Lighting: `sh_coeffs` plus the specular key light(s)
        of `info.learned_specular_lights` (none when the bundle does not record them). Under it the idle frames
        render as recorded."""
        from models.lighting.lighting import Lighting

        spec = self.info.get("learned_specular_lights", {"dirs": [], "colours": []})
        return Lighting(np.asarray(self.sh_coeffs, np.float32), np.asarray(spec["dirs"], np.float32).reshape(-1, 3),
                        np.asarray(spec["colours"], np.float32).reshape(-1, 3), name="learned")

    def net_path(self, name: str) -> Path:
        if name not in self.nets:
            raise BundleError(f"bundle {self.path} has no net {name!r}; it has {sorted(self.nets)}")
        return self.path / self.nets[name].file


def is_frame_sequence(a: np.ndarray) -> bool:
    """What the bundle stores as frame differences: uint8 arrays of frames (N, H, W[, C])."""
    return a.dtype == np.uint8 and a.ndim >= 3


def frame_deltas(frames: np.ndarray) -> np.ndarray:
    """Frame 0 as is, then each frame minus the one before, mod 256 (uint8): `undo_frame_deltas` restores exactly."""
    out = np.empty_like(frames)
    out[0] = frames[0]
    np.subtract(frames[1:], frames[:-1], out=out[1:])  # uint8 arithmetic wraps: the difference mod 256
    return out


def undo_frame_deltas(deltas: np.ndarray) -> np.ndarray:
    """The frames back, in place (uint8 addition wraps: the running sum mod 256). One frame-sized add at a time:
    contiguous, ~100x faster than cumsum along the first axis."""
    frames = np.require(deltas, np.uint8, ["C_CONTIGUOUS", "WRITEABLE"])
    for t in range(1, frames.shape[0]):
        np.add(frames[t], frames[t - 1], out=frames[t])
    return frames


def save_frame_sequence(path_or_file, frames: np.ndarray) -> None:
    np.savez_compressed(path_or_file, frame_deltas=frame_deltas(np.ascontiguousarray(frames)))


def stored_bytes(a: np.ndarray) -> int:
    """Bytes `a` takes in a bundle (compressed for frame sequences): what export budgets with."""
    if not is_frame_sequence(a):
        return a.nbytes + 128
    buf = io.BytesIO()
    save_frame_sequence(buf, a)
    return buf.getbuffer().nbytes


def write_bundle(
    out_dir: str | os.PathLike,
    *,
    name: str,
    size_px: int,
    fps: float,
    lookahead_ms: float,
    sh_coeffs: np.ndarray,
    onnx_files: dict[str, tuple[str | os.PathLike, NetSpec]],
    arrays: dict[str, np.ndarray],
    info: dict | None = None,
) -> Path:
    """Write a bundle atomically to `out_dir` (replacing an existing bundle there) and return its path.

    `onnx_files` maps net name -> (path of an exported .onnx, its NetSpec; the spec's `file` is set here).
    """
    out = Path(out_dir)
    sh = np.asarray(sh_coeffs, dtype=np.float32)
    if sh.shape != (9, 3) or not np.all(np.isfinite(sh)):
        raise BundleError(f"sh_coeffs must be finite with shape (9, 3), got {sh.shape}")
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise PermissionError(f"cannot write the avatar bundle: folder {parent} is not writable")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=parent))
    try:
        files: dict[str, str] = {}
        nets: dict[str, dict] = {}
        for net_name, (src, spec) in onnx_files.items():
            fname = f"{net_name}.onnx"
            shutil.copyfile(src, tmp / fname)
            files[fname] = file_sha256(tmp / fname)
            nets[net_name] = {"file": fname, "inputs": spec.inputs, "outputs": spec.outputs}
        array_meta: dict[str, dict] = {}
        for key, arr in arrays.items():
            a = np.ascontiguousarray(arr)
            if a.dtype == object:
                raise BundleError(f"array {key!r} has dtype object; bundles hold numeric arrays only")
            meta = {"shape": list(a.shape), "dtype": str(a.dtype)}
            if is_frame_sequence(a):
                fname = f"{key}.npz"
                save_frame_sequence(tmp / fname, a)
                meta["encoding"] = FRAME_DELTA
            else:
                fname = f"{key}.npy"
                np.save(tmp / fname, a, allow_pickle=False)
            files[fname] = file_sha256(tmp / fname)
            array_meta[key] = {"file": fname, **meta}
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "name": name,
            "size_px": int(size_px),
            "fps": float(fps),
            "lookahead_ms": float(lookahead_ms),
            "sh_convention": SH_CONVENTION,
            "sh_coeffs": sh.tolist(),
            "nets": nets,
            "arrays": array_meta,
            "sha256": files,
            "info": info or {},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        # Swap in: move an old bundle aside first so that at every instant a complete bundle is at `out` or nowhere.
        old = None
        if out.exists():
            old = parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _require(manifest: dict, key: str, kind: type | tuple[type, ...], where: Path):
    if key not in manifest:
        raise BundleError(f"{where}: manifest lacks {key!r}")
    value = manifest[key]
    # bool is an int subclass in Python; a manifest saying `"fps": true` is still wrong.
    if not isinstance(value, kind) or isinstance(value, bool):
        names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise BundleError(f"{where}: manifest field {key!r} must be {names}, got {value!r}")
    return value


def load_bundle(path: str | os.PathLike, *, verify_checksums: bool = True) -> AvatarBundle:
    """Load and validate the bundle at `path`; raise BundleError with the reason if it is not usable."""
    root = Path(path)
    mpath = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"avatar bundle {root} does not exist or is not a folder")
    if not mpath.is_file():
        raise BundleError(f"{root} is not an avatar bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{mpath}: manifest is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BundleError(f"{mpath}: not a {FORMAT_NAME} manifest")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise BundleError(
            f"{root}: avatar bundle format version {version!r}, this relitcam reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}; re-run enrollment (relitcam enroll) or use a matching relitcam "
            f"release"
        )
    if manifest.get("sh_convention") != SH_CONVENTION:
        raise BundleError(f"{root}: SH convention {manifest.get('sh_convention')!r} differs from {SH_CONVENTION!r}")
    sums = _require(manifest, "sha256", dict, mpath)
    for fname, digest in sums.items():
        fpath = root / fname
        if not fpath.is_file():
            raise BundleError(f"{root}: file {fname} listed in the manifest is missing")
        if verify_checksums and file_sha256(fpath) != digest:
            raise BundleError(f"{root}: file {fname} is damaged (SHA-256 differs from the manifest)")

    sh = np.asarray(_require(manifest, "sh_coeffs", list, mpath), dtype=np.float32)
    if sh.shape != (9, 3) or not np.all(np.isfinite(sh)):
        raise BundleError(f"{mpath}: sh_coeffs must be 9x3 finite numbers, got shape {sh.shape}")

    arrays: dict[str, np.ndarray] = {}
    for key, meta in _require(manifest, "arrays", dict, mpath).items():
        a = _load_array(root, key, meta)
        if list(a.shape) != list(meta["shape"]) or str(a.dtype) != meta["dtype"]:
            raise BundleError(
                f"{root}: array {key!r} has shape {list(a.shape)} {a.dtype}, manifest says {meta['shape']} {meta['dtype']}"
            )
        arrays[key] = a

    nets: dict[str, NetSpec] = {}
    for net_name, meta in _require(manifest, "nets", dict, mpath).items():
        spec = NetSpec(file=meta["file"], inputs=meta["inputs"], outputs=meta["outputs"])
        _check_onnx_inputs(root / spec.file, spec, net_name)
        nets[net_name] = spec

    return AvatarBundle(
        path=root,
        name=_require(manifest, "name", str, mpath),
        size_px=_require(manifest, "size_px", int, mpath),
        fps=float(_require(manifest, "fps", (int, float), mpath)),
        lookahead_ms=float(_require(manifest, "lookahead_ms", (int, float), mpath)),
        sh_coeffs=sh,
        nets=nets,
        arrays=arrays,
        info=manifest.get("info", {}),
    )


def _load_array(root: Path, key: str, meta: dict) -> np.ndarray:
    encoding = meta.get("encoding", "npy")
    try:
        if encoding == "npy":
            return np.load(root / meta["file"], allow_pickle=False)
        if encoding == FRAME_DELTA:
            with np.load(root / meta["file"], allow_pickle=False) as z:
                return undo_frame_deltas(z["frame_deltas"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise BundleError(f"{root}: array {key!r} ({meta['file']}) cannot be read: {e}") from None
    raise BundleError(f"{root}: array {key!r} has encoding {encoding!r}, which this relitcam does not know")


def _check_onnx_inputs(path: Path, spec: NetSpec, net_name: str) -> None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and others for a damaged protobuf
        raise BundleError(f"net {net_name!r}: {path.name} is not a readable ONNX model ({e})") from None
    graph_inputs = {}
    for value in model.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        graph_inputs[value.name] = dims
    for in_name, shape in spec.inputs.items():
        if in_name not in graph_inputs:
            raise BundleError(f"net {net_name!r}: ONNX graph has no input {in_name!r} (has {sorted(graph_inputs)})")
        got = graph_inputs[in_name]
        if len(got) != len(shape) or any(g != s for g, s in zip(got, shape) if g != -1 and s != -1):
            raise BundleError(f"net {net_name!r}: input {in_name!r} has shape {got}, manifest says {shape}")
