"""Scores for rendered video against ground truth: image fidelity, temporal flicker, lip sync, landmarks.

Pure functions over NumPy arrays; `stream.commands.eval` wires them to files.
"""

from models.metrics.image import (
    PSNR_CAP_DB,
    decode_normal_map,
    mse,
    normal_angular_error_deg,
    psnr_db,
    psnr_from_mse,
    psnr_grad_db,
    ssim,
    ssim_map,
)
from models.metrics.landmarks import landmark_distance_px, load_landmarks_npz
from models.metrics.lipsync import SyncEstimate, audio_envelope, mouth_audio_offset
from models.metrics.temporal import FlickerMeter, frame_change, temporal_flicker

__all__ = [
    "PSNR_CAP_DB",
    "FlickerMeter",
    "SyncEstimate",
    "audio_envelope",
    "decode_normal_map",
    "frame_change",
    "landmark_distance_px",
    "load_landmarks_npz",
    "mouth_audio_offset",
    "mse",
    "normal_angular_error_deg",
    "psnr_db",
    "psnr_from_mse",
    "psnr_grad_db",
    "ssim",
    "ssim_map",
    "temporal_flicker",
]
