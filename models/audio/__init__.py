"""Audio front end shared by training, the synthetic data generator and the live pipeline.

Everything works on float32 mono samples in [-1, 1]; the network side expects 16 kHz (`MelSpec.sample_rate_hz`).
"""

from models.audio.clip import AudioClip
from models.audio.envelope import audio_envelope, envelope_onsets
from models.audio.mel import MelSpec, log_mel, mel_filterbank
from models.audio.resample import resample
from models.audio.ring import MelRingBuffer
from models.audio.wav import read_wav, write_wav
from models.audio.window import mel_frame_for_video_frame, mel_window, mel_windows_for_video

__all__ = [
    "AudioClip",
    "MelRingBuffer",
    "MelSpec",
    "audio_envelope",
    "envelope_onsets",
    "log_mel",
    "mel_filterbank",
    "mel_frame_for_video_frame",
    "mel_window",
    "mel_windows_for_video",
    "read_wav",
    "resample",
    "write_wav",
]
