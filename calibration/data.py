"""Calibration and held-out inputs for every net, from the user's own enrollment (never generic data).

What each net sees live is rebuilt from the enrollment work folder's PreparedVideo and the bundle:

  audio_to_expression  mel windows of the enrollment audio at the prepared frames' times (the live window layout:
                       mel_past_frames + 1 + mel_lookahead_frames rows, silence-padded at the clip's ends);
  mouth                the live chain on the CPU: those windows -> audio_to_expression (ONNX Runtime) -> lip
                       coefficients -> driven idle frame -> mouth-box coarse normals and masked idle layers, exactly
                       BundleRenderer.mouth_inputs;
  shading              the idle frames' normals with SH shading under the enrollment lighting and rotations of it;
  decomposition        the prepared crops (sRGB -> linear) with their coarse normals.

Frames are split by a fixed stride: every `held_out_every`-th frame is held out for the INT8 acceptance rule
(calibration/acceptance.py) and never calibrated on. Every sample is one net call with batch 1, float32, channels
first, as the renderer feeds it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from models.audio.mel import MelSpec, log_mel
from models.colour import srgb_to_linear
from models.lighting.lighting import Lighting
from models.lighting.sh import axis_angle_matrix, rotate_sh

Sample = dict[str, np.ndarray]


class PreparedFrames(Protocol):
    """What calibration reads of models.enroll.prepare.PreparedVideo."""

    t_s: np.ndarray
    audio: np.ndarray
    audio_rate_hz: int

    @property
    def frame_count(self) -> int: ...

    def crops(self, indices) -> np.ndarray: ...

    def coarse_normals(self, indices) -> np.ndarray: ...


@dataclass
class NetSamples:
    net: str
    calibration: list[Sample] = field(default_factory=list)
    held_out: list[Sample] = field(default_factory=list)


@dataclass
class CalibrationData:
    nets: dict[str, NetSamples]
    source: str  # the work folder the frames came from

    def for_net(self, net: str) -> NetSamples | None:
        return self.nets.get(net)


def split_frames(n_frames: int, max_frames: int, held_out_every: int) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, held-out) frame indices: `max_frames` spread evenly over the clip, every k-th held out."""
    if n_frames < 1:
        raise ValueError("the enrollment has no prepared frames to calibrate with")
    if held_out_every < 2:
        raise ValueError(f"held_out_every must be >= 2 (some frames must be calibrated on), got {held_out_every}")
    if max_frames < held_out_every:
        raise ValueError(f"max_frames {max_frames} leaves no held-out frame at held_out_every {held_out_every}")
    picked = np.unique(np.linspace(0, n_frames - 1, min(n_frames, max_frames)).round().astype(np.int64))
    held = (np.arange(picked.size) % held_out_every) == held_out_every - 1
    return picked[~held], picked[held]


def mel_windows_at_times(audio: np.ndarray, rate_hz: int, t_s: np.ndarray, past_frames: int,
                         lookahead_frames: int, spec: MelSpec = MelSpec()) -> np.ndarray:
    """(n, n_mels, past + 1 + lookahead) log-mel windows centred at times `t_s`, as the net takes them."""
    if rate_hz != spec.sample_rate_hz:
        raise ValueError(f"audio at {rate_hz} Hz; the mel front end takes {spec.sample_rate_hz} Hz")
    mel = log_mel(np.asarray(audio, np.float32), spec)  # (n_mel_frames, n_mels)
    centres = np.rint(np.asarray(t_s, np.float64) * spec.frame_rate_hz).astype(np.int64)
    rows = centres[:, None] + np.arange(-past_frames, lookahead_frames + 1)[None, :]
    padded = np.concatenate([mel, np.full((1, mel.shape[1]), spec.silence_value, mel.dtype)])
    rows = np.where((rows >= 0) & (rows < len(mel)), rows, len(mel))  # outside the clip: silence
    return np.ascontiguousarray(padded[rows].transpose(0, 2, 1), dtype=np.float32)


def decomposition_samples(prepared: PreparedFrames, indices: Sequence[int]) -> list[Sample]:
    out = []
    for i in indices:
        image = srgb_to_linear(prepared.crops(int(i)).astype(np.float32) / 255.0)
        normals = prepared.coarse_normals(int(i))
        out.append({"image": np.ascontiguousarray(image.transpose(2, 0, 1))[None],
                    "coarse_normals": np.ascontiguousarray(normals.transpose(2, 0, 1))[None]})
    return out


def chain_samples(renderer, mel_windows: np.ndarray, frame_indices: Sequence[int]) -> tuple[list[Sample], list[Sample]]:
    """(audio_to_expression samples, mouth samples) through the live chain of a CPU BundleRenderer."""
    a2e, mouth = [], []
    for window, k in zip(mel_windows, frame_indices):
        a2e.append({"mel_window": window[None]})
        coeffs = renderer.lip_coeffs(window.T)  # ONNX Runtime on the CPU, as live
        i = renderer.loop_frame(int(k))
        mouth.append(renderer.mouth_inputs(i, coeffs, renderer.decode_layers(i)))
    return a2e, mouth


def lighting_variants(sh_coeffs: np.ndarray, count: int) -> list[Lighting]:
    """The enrollment lighting turned about the vertical axis: shading inputs cover the lights users pick."""
    out = []
    for k in range(count):
        angle = 2.0 * np.pi * k / max(count, 1)
        out.append(Lighting(sh_coeffs=rotate_sh(np.asarray(sh_coeffs, np.float32), axis_angle_matrix([0, 1, 0], angle))))
    return out


def shading_samples(renderer, frame_indices: Sequence[int], lightings: Sequence[Lighting]) -> list[Sample]:
    """Full S x S frames (1, 3, S, S) of normals and SH shading (zero off the matte, as the renderer's full path)."""
    from stream.bundle_renderer import sh_shading

    out = []
    for n, k in enumerate(frame_indices):
        layers = renderer.decode_layers(renderer.loop_frame(int(k)))
        lighting = lightings[n % len(lightings)]
        on = (layers.matte > 0)[..., None]
        normals = np.where(on, layers.normals, 0.0).astype(np.float32)
        sh = np.where(on, sh_shading(layers.normals, lighting.sh_coeffs), 0.0).astype(np.float32)
        out.append({"normals": normals.transpose(2, 0, 1)[None].copy(), "sh_shading": sh.transpose(2, 0, 1)[None].copy()})
    return out


def calibration_from_enrollment(bundle_path: str | os.PathLike, prepared: PreparedFrames, *, max_frames: int = 256,
                                held_out_every: int = 5, nets: Sequence[str] | None = None,
                                lightings: int = 4) -> CalibrationData:
    """Calibration and held-out samples for `nets` (default: every net of the bundle)."""
    from stream.bundle_renderer import BundleRenderer

    renderer = BundleRenderer(bundle_path, backend="onnxruntime", use_shading_net=False)
    wanted = tuple(renderer.bundle.nets) if nets is None else tuple(nets)
    calib_idx, held_idx = split_frames(prepared.frame_count, max_frames, held_out_every)
    result: dict[str, NetSamples] = {n: NetSamples(n) for n in wanted}
    if {"audio_to_expression", "mouth"} & set(wanted):
        for idx, target in ((calib_idx, "calibration"), (held_idx, "held_out")):
            windows = mel_windows_at_times(prepared.audio, prepared.audio_rate_hz, np.asarray(prepared.t_s)[idx],
                                           renderer.mel_past_frames, renderer.mel_lookahead_frames)
            a2e, mouth = chain_samples(renderer, windows, idx)
            for net, samples in (("audio_to_expression", a2e), ("mouth", mouth)):
                if net in result:
                    setattr(result[net], target, samples)
    if "shading" in wanted:
        variants = lighting_variants(renderer.bundle.sh_coeffs, lightings)
        result["shading"].calibration = shading_samples(renderer, calib_idx, variants)
        result["shading"].held_out = shading_samples(renderer, held_idx, variants[::-1])
    if "decomposition" in wanted:
        result["decomposition"].calibration = decomposition_samples(prepared, calib_idx)
        result["decomposition"].held_out = decomposition_samples(prepared, held_idx)
    return CalibrationData(result, source=str(getattr(prepared, "root", "")))
