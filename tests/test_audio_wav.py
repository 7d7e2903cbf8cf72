import wave
from pathlib import Path

import numpy as np
import pytest

from models.audio import log_mel, read_wav, resample, write_wav

SPEECH_DIR = Path(__file__).resolve().parents[1] / "shared" / "data" / "speech"
if not SPEECH_DIR.is_dir():
    SPEECH_DIR = Path("/work/shared/data/speech")


def _peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))


def test_roundtrip_16bit(tmp_path):
    sr = 16000
    t = np.arange(sr // 2) / sr
    x = (0.7 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / "a.wav"
    write_wav(path, x, sr)
    clip = read_wav(path)
    assert clip.sample_rate_hz == sr and clip.samples.dtype == np.float32
    assert np.abs(clip.samples - x).max() < 2.0 / 32768


def test_read_stereo_44k_resamples_to_16k_mono(tmp_path):
    sr = 44100
    t = np.arange(sr) / sr
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    right = 0.5 * np.sin(2 * np.pi * 440 * t)
    pcm = (np.stack([left, right], axis=1) * 32767).astype("<i2")
    path = tmp_path / "stereo.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(sr)
        w.writeframes(pcm.tobytes())
    clip = read_wav(path)
    assert clip.sample_rate_hz == 16000
    assert abs(len(clip.samples) - 16000) <= 1
    assert abs(_peak_hz(clip.samples, 16000) - 440.0) < 2.0
    assert abs(float(np.abs(clip.samples[1000:-1000]).max()) - 0.5) < 0.01
    native = read_wav(path, target_sample_rate_hz=None)
    assert native.sample_rate_hz == sr


def test_read_24bit(tmp_path):
    values = np.array([0, 1 << 22, -(1 << 23), (1 << 23) - 1], np.int64)
    raw = b"".join(int(v & 0xFFFFFF).to_bytes(3, "little") for v in values)
    path = tmp_path / "a24.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(3)
        w.setframerate(16000)
        w.writeframes(raw)
    x = read_wav(path).samples
    assert np.allclose(x, [0.0, 0.5, -1.0, 1.0], atol=1e-6)


def test_resample_keeps_tone_and_rejects_aliases():
    sr = 22050
    t = np.arange(sr) / sr
    tone = np.sin(2 * np.pi * 1000 * t)
    above_new_nyquist = np.sin(2 * np.pi * 9500 * t)
    y = resample(tone + above_new_nyquist, sr, 16000)
    assert len(y) == 16000
    spectrum = np.abs(np.fft.rfft(y[2000:-2000] * np.hanning(12000)))
    freqs = np.fft.rfftfreq(12000, 1 / 16000)
    assert abs(freqs[np.argmax(spectrum)] - 1000.0) < 3.0
    # 9.5 kHz would alias to 6.5 kHz without the anti-aliasing filter.
    alias = spectrum[np.abs(freqs - 6500.0) < 50].max()
    assert alias < 1e-2 * spectrum.max()  # >= 40 dB down; unfiltered decimation leaves it at full level


def test_bad_input_raises(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        read_wav(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav file at all")
    with pytest.raises(ValueError, match="integer-PCM WAV"):
        read_wav(junk)
    with pytest.raises(ValueError, match="NaN"):
        write_wav(tmp_path / "x.wav", np.array([0.0, np.nan], np.float32), 16000)
    with pytest.raises(ValueError, match="1-D"):
        write_wav(tmp_path / "x.wav", np.zeros((2, 2), np.float32), 16000)
    with pytest.raises(ValueError, match="positive"):
        resample(np.zeros(10), 0, 16000)


@pytest.mark.skipif(not (SPEECH_DIR / "english_60s.wav").is_file(), reason="development speech data not present")
def test_real_speech_file():
    clip = read_wav(SPEECH_DIR / "english_60s.wav")
    assert clip.sample_rate_hz == 16000
    assert 55.0 < clip.duration_s < 65.0
    mel = log_mel(clip.samples)
    assert mel.shape[1] == 80 and abs(len(mel) - clip.duration_s * 100) < 2
    # Real speech spans a wide dynamic range between pauses and vowels.
    assert np.percentile(mel.max(axis=1), 95) - np.percentile(mel.max(axis=1), 5) > 5.0
