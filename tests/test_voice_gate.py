"""The voice gate: frames far under the speaker's loud level read as silence to the audio-to-expression net; the
speaker's own frames, and what follows them within the hold, pass unchanged."""

import numpy as np
import pytest

from models.audio import MelSpec, log_mel
from stream.features import MelFeatures
from stream.types import AudioChunk
from stream.voice_gate import VoiceGate

RATE = 16000


def _tone(seconds: float, amplitude: float, hz: float = 300.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_quiet_frames_after_the_hold_are_closed_near_ones_stay_open():
    loud, near, far = _tone(0.5, 0.3), _tone(1.0, 0.3 * 10 ** (-10 / 20)), _tone(1.0, 0.3 * 10 ** (-30 / 20))
    gate = VoiceGate(below_peak_db=20.0, hold_ms=200.0)
    assert gate.update(log_mel(loud)).all()
    assert gate.update(log_mel(near)).all()  # 10 dB down: still the speaker
    verdict = gate.update(log_mel(far))  # 30 dB down: someone else, once the hold has run out
    assert verdict[:18].all() and not verdict[22:].any()
    # The loud level falls slowly: a second later it is 0.25 dB lower, not down to the room's.
    level = VoiceGate.level_db(log_mel(loud)[10:11])[0]
    assert gate.peak_db == pytest.approx(level - 0.25 * 2.0, abs=0.3)


def test_gate_validates_its_settings():
    with pytest.raises(ValueError, match="below_peak_db"):
        VoiceGate(below_peak_db=0)
    with pytest.raises(ValueError, match="hold_ms"):
        VoiceGate(hold_ms=-1)


def _windows(audio: np.ndarray, gate) -> np.ndarray:
    feats = MelFeatures(30.0, past_frames=8, lookahead_frames=4, gate=gate)
    out = []
    for s in range(0, audio.size, 512):
        out += feats.process(AudioChunk(audio[s:s + 512], s, s / RATE))
    out += feats.flush(10.0)
    return np.stack([w.mel for w in out])


def test_features_show_silence_where_the_gate_is_closed_and_the_sound_elsewhere():
    audio = np.concatenate([_tone(1.0, 0.3), _tone(1.0, 0.3 * 10 ** (-30 / 20), hz=500.0), _tone(1.0, 0.3)])
    plain, gated = _windows(audio, None), _windows(audio, VoiceGate(below_peak_db=20.0))
    assert plain.shape == gated.shape == (90, 13, 80)
    silence = MelSpec().silence_value
    centre = 8  # the window row at the frame's own time
    np.testing.assert_array_equal(gated[5:25], plain[5:25])  # the speaker: untouched
    np.testing.assert_array_equal(gated[68:88], plain[68:88])
    assert np.all(gated[40:55, centre] == silence)  # the quiet voice in between: silence
    assert np.all(plain[40:55, centre].max(axis=-1) > silence + 5)  # ungated, the tone is there


def test_a_click_far_louder_than_the_voice_does_not_shut_the_voice_out():
    voice = _tone(1.0, 0.01)
    click = _tone(0.03, 0.01 * 10 ** (30 / 20), hz=2000.0)  # 30 ms, 30 dB louder
    gate = VoiceGate(below_peak_db=20.0)
    gate.update(log_mel(voice))
    before = gate.peak_db
    gate.update(log_mel(np.concatenate([click, _tone(0.5, 0.0)])))
    assert gate.peak_db - before < 3.0  # 30 ms of a 200 ms window: under its 75th percentile, it does not count
    assert gate.update(log_mel(voice))[5:].all()  # and the voice afterwards is still the speaker


def test_pipeline_and_cli_take_the_gate():
    from stream.commands.run import build_parser
    from stream.pipeline import PipelineConfig

    with pytest.raises(ValueError, match="voice_gate_db"):
        PipelineConfig(voice_gate_db=0.0)
    args = build_parser().parse_args(["--voice-gate-db", "20"])
    assert args.voice_gate_db == 20.0 and build_parser().parse_args([]).voice_gate_db is None
