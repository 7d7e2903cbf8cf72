"""Voice gate: log-mel frames much quieter than the speaker's own voice are treated as silence.

The microphone also hears other people in the room; the audio-to-expression net cannot tell their voices from the
speaker's and the avatar mouths them too (scripts/noisy_sync.py, default avatar: lip-sync correlation 0.674 clean,
0.610 with other talkers 20 dB below the speaker; with this gate at 15 dB: 0.676 and 0.644). The speaker is nearest the microphone, so level separates them where
spectrum cannot: a frame more than `below_peak_db` under the speaker's recent loud level is not the speaker, and the
net is shown silence there instead. The recent loud level is a peak follower of the 75th percentile of the level
over `window_ms` (a click or a door banging for up to a quarter of that does not move it; a voice's vowels do; the
median sat between syllables and let the other talkers through, measured), falling
`release_db_per_s` (slowly: a call has long stretches of listening, and the gate must not drift down to the room's
level in them); `hold_ms` after the last loud frame the gate stays open, so word endings and the quiet consonants
between syllables pass.

Where it fails: speech more than `below_peak_db` under the speaker's own loud moments (a whisper after a laugh) is
gated until the peak has fallen that far. So it is off unless asked for (`relitcam run --voice-gate-db 15`).
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np


LOUD_PERCENTILE = 75.0


class VoiceGate:
    """update(log-mel rows) -> bool per row: True where the row is (or may be) the speaker."""

    def __init__(self, below_peak_db: float = 20.0, hold_ms: float = 200.0, release_db_per_s: float = 0.25,
                 window_ms: float = 200.0, frame_rate_hz: float = 100.0) -> None:
        if not below_peak_db > 0:
            raise ValueError(f"below_peak_db must be positive, got {below_peak_db}")
        if hold_ms < 0 or release_db_per_s < 0 or not frame_rate_hz > 0:
            raise ValueError("hold_ms and release_db_per_s must be >= 0, frame_rate_hz > 0")
        self.below_peak_db = float(below_peak_db)
        self.hold_frames = int(round(hold_ms * frame_rate_hz / 1000.0))
        self.release_db_per_frame = release_db_per_s / frame_rate_hz
        self._recent_levels: deque[float] = deque(maxlen=max(1, int(round(window_ms * frame_rate_hz / 1000.0))))
        self.peak_db = -math.inf
        self._hold_left = 0

    @staticmethod
    def level_db(mel_rows: np.ndarray) -> np.ndarray:
        """Each row's power (sum over mel bands of exp(log-mel)) in dB."""
        return 10.0 * np.log10(np.exp(np.asarray(mel_rows, np.float64)).sum(axis=-1))

    def update(self, mel_rows: np.ndarray) -> np.ndarray:
        levels = self.level_db(mel_rows)
        open_ = np.zeros(levels.shape[0], bool)
        for i, level in enumerate(levels):
            self._recent_levels.append(float(level))
            loud_db = float(np.percentile(self._recent_levels, LOUD_PERCENTILE))
            self.peak_db = max(loud_db, self.peak_db - self.release_db_per_frame)
            if level >= self.peak_db - self.below_peak_db:
                self._hold_left = self.hold_frames
                open_[i] = True
            elif self._hold_left > 0:
                self._hold_left -= 1
                open_[i] = True
        return open_
