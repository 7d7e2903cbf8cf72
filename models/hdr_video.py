"""HDR video pictures (HLG or PQ, BT.2020) to the SDR sRGB pictures the rest of relitcam reads.

Phones record HDR video by default (an iPhone's is 10-bit HLG in BT.2020). Decoded as if it were SDR, such a video
is flat and washed out, and an avatar enrolled from it keeps that look. The conversion follows ITU-R BT.2408's
anchor: HDR reference white (HLG at 75 % signal, PQ at 203 cd/m2) becomes SDR white. HLG goes through its OOTF
for a 1000 cd/m2 display (BT.2100); colours move from BT.2020 to BT.709 primaries in linear light; values above
reference white (highlights) are scaled down by their largest channel, which keeps their hue.

Inputs are the decoder's RGB (the YUV matrix already applied, tagged BT.2020 in these files), 16 bits per channel.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from models.colour import linear_to_srgb

# FFmpeg's AVColorTransferCharacteristic / AVColorPrimaries codes, as PyAV reports them on decoded frames.
TRC_PQ = 16  # SMPTE ST 2084
TRC_HLG = 18  # ARIB STD-B67
PRIMARIES_BT2020 = 9
HDR_TRANSFERS = (TRC_PQ, TRC_HLG)

REFERENCE_WHITE_NITS = 203.0  # BT.2408: HDR reference white, mapped to SDR white
HLG_DISPLAY_PEAK_NITS = 1000.0
HLG_SYSTEM_GAMMA = 1.2  # BT.2100 for a 1000 cd/m2 display
BT2020_LUMA = np.array([0.2627, 0.6780, 0.0593], np.float32)

# Linear BT.2020 RGB -> linear BT.709 RGB (ITU-R BT.2087, derived from both sets of primaries and D65).
BT2020_TO_BT709 = np.array(
    [
        [1.660491, -0.587641, -0.072850],
        [-0.124550, 1.132900, -0.008349],
        [-0.018151, -0.100579, 1.118730],
    ],
    np.float32,
)

_HLG_A = 0.17883277
_HLG_B = 1.0 - 4.0 * _HLG_A
_HLG_C = 0.5 - _HLG_A * np.log(4.0 * _HLG_A)

_PQ_M1 = 2610.0 / 16384.0
_PQ_M2 = 2523.0 / 4096.0 * 128.0
_PQ_C1 = 3424.0 / 4096.0
_PQ_C2 = 2413.0 / 4096.0 * 32.0
_PQ_C3 = 2392.0 / 4096.0 * 32.0


def hlg_to_scene_linear(signal: np.ndarray) -> np.ndarray:
    """BT.2100 HLG inverse OETF: signal E' in [0, 1] -> normalised scene light E in [0, 1]."""
    e = np.clip(np.asarray(signal, np.float64), 0.0, 1.0)
    low = e * e / 3.0
    high = (np.exp((np.maximum(e, 0.5) - _HLG_C) / _HLG_A) + _HLG_B) / 12.0
    return np.where(e <= 0.5, low, high)


def pq_to_nits(signal: np.ndarray) -> np.ndarray:
    """SMPTE ST 2084 EOTF: signal E' in [0, 1] -> display light in cd/m2 (0..10000)."""
    p = np.clip(np.asarray(signal, np.float64), 0.0, 1.0) ** (1.0 / _PQ_M2)
    return 10000.0 * (np.maximum(p - _PQ_C1, 0.0) / (_PQ_C2 - _PQ_C3 * p)) ** (1.0 / _PQ_M1)


def relative_linear_to_signal(relative_709: np.ndarray, transfer: int) -> np.ndarray:
    """The way back, for making test recordings: linear BT.709 RGB (1.0 = reference white, up to the display's
    peak) -> HLG or PQ signal in BT.2020, float64 in [0, 1]; `hdr_to_srgb8` reads it back as the same RGB."""
    rgb = np.asarray(relative_709, np.float64) @ np.linalg.inv(BT2020_TO_BT709.astype(np.float64)).T
    rgb = np.maximum(rgb, 0.0)
    if transfer == TRC_PQ:
        y = (rgb * REFERENCE_WHITE_NITS / 10000.0) ** _PQ_M1
        return np.clip(((_PQ_C1 + _PQ_C2 * y) / (1.0 + _PQ_C3 * y)) ** _PQ_M2, 0.0, 1.0)
    if transfer != TRC_HLG:
        raise ValueError(f"not an HDR transfer: {transfer} (expected {TRC_PQ} PQ or {TRC_HLG} HLG)")
    # Inverse OOTF: display light Fd = peak * Ys^(gamma - 1) * E, with Yd = peak * Ys^gamma.
    display = rgb * REFERENCE_WHITE_NITS / HLG_DISPLAY_PEAK_NITS
    ys = np.maximum(display @ BT2020_LUMA.astype(np.float64), 1e-12) ** (1.0 / HLG_SYSTEM_GAMMA)
    e = np.clip(display / ys[..., None] ** (HLG_SYSTEM_GAMMA - 1.0), 0.0, 1.0)
    high = _HLG_A * np.log(np.maximum(12.0 * e - _HLG_B, 1e-12)) + _HLG_C
    return np.where(e <= 1.0 / 12.0, np.sqrt(3.0 * e), high)


def _signal_lut(transfer: int) -> np.ndarray:
    """Per-channel part of the conversion for every 16-bit code: HLG scene light, or PQ light / reference white."""
    codes = np.arange(65536, dtype=np.float64) / 65535.0
    if transfer == TRC_HLG:
        return hlg_to_scene_linear(codes).astype(np.float32)
    if transfer == TRC_PQ:
        return (pq_to_nits(codes) / REFERENCE_WHITE_NITS).astype(np.float32)
    raise ValueError(f"not an HDR transfer: {transfer} (expected {TRC_PQ} PQ or {TRC_HLG} HLG)")


_LUTS: dict[int, np.ndarray] = {}
# sRGB encoding of linear [0, 1] quantised to 16 bits: finer than one 8-bit code everywhere (the steepest part,
# 12.92 x near black, moves 0.05 of a code per step).
_SRGB8_OF_LINEAR16 = np.round(linear_to_srgb(np.arange(65536, dtype=np.float32) / 65535.0) * 255.0).astype(np.uint8)


def _mix(planes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(3, H, W) -> (3, H, W): each output plane a weighted sum of the input planes (planar: contiguous, fast)."""
    out = np.empty_like(planes)
    for i in range(3):
        np.multiply(planes[0], np.float32(matrix[i, 0]), out=out[i])
        out[i] += np.float32(matrix[i, 1]) * planes[1]
        out[i] += np.float32(matrix[i, 2]) * planes[2]
    return out


def _relative_linear_planes(rgb16: np.ndarray, transfer: int, primaries: int) -> np.ndarray:
    lut = _LUTS.get(transfer)
    if lut is None:
        lut = _LUTS[transfer] = _signal_lut(transfer)
    planes = lut[np.ascontiguousarray(np.moveaxis(np.asarray(rgb16, np.uint16), -1, 0))]
    if transfer == TRC_HLG:
        # OOTF: display light = peak * Ys^(gamma - 1) * E, Ys the scene luminance (BT.2020 weights).
        ys = BT2020_LUMA[0] * planes[0] + BT2020_LUMA[1] * planes[1] + BT2020_LUMA[2] * planes[2]
        np.maximum(ys, np.float32(1e-9), out=ys)
        gain = np.power(ys, np.float32(HLG_SYSTEM_GAMMA - 1.0), out=ys)
        gain *= np.float32(HLG_DISPLAY_PEAK_NITS / REFERENCE_WHITE_NITS)
        planes *= gain
    if primaries == PRIMARIES_BT2020:
        planes = _mix(planes, BT2020_TO_BT709)
    return np.maximum(planes, np.float32(0.0), out=planes)


def _srgb8_band(rgb16: np.ndarray, transfer: int, primaries: int, out: np.ndarray) -> None:
    planes = _relative_linear_planes(rgb16, transfer, primaries)
    peak = np.maximum(np.maximum(planes[0], planes[1]), planes[2])
    np.maximum(peak, np.float32(1.0), out=peak)
    np.multiply(planes, np.float32(65535.0) / peak, out=planes)  # highlights to SDR white along their own hue
    planes += np.float32(0.5)
    codes = planes.astype(np.uint16)
    for i in range(3):
        out[..., i] = _SRGB8_OF_LINEAR16[codes[i]]


# Bands of rows small enough to stay in cache, converted on every core (NumPy releases the GIL in these loops):
# 4K HLG 195 -> 63 ms per frame on this 2-core machine, 1080p 48 -> ~16 ms.
_BAND_ROWS = 64
_workers: ThreadPoolExecutor | None = None


def hdr_to_srgb8(rgb16: np.ndarray, transfer: int, primaries: int) -> np.ndarray:
    """Decoded HDR RGB (uint16 (H, W, 3)) -> uint8 sRGB as an SDR picture of the same scene."""
    global _workers
    if _workers is None:
        _workers = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="hdr")
    rgb16 = np.asarray(rgb16, np.uint16)
    out = np.empty(rgb16.shape[:-1] + (3,), np.uint8)
    starts = range(0, rgb16.shape[0], _BAND_ROWS)
    for _ in _workers.map(lambda r: _srgb8_band(rgb16[r:r + _BAND_ROWS], transfer, primaries,
                                                out[r:r + _BAND_ROWS]), starts):
        pass
    return out
