"""espeak-ng phonemes -> mouth articulation curves for animating a face mesh.

Four parameters, each in [0, 1]:
  jaw_open    0 closed teeth, 1 wide open (/A:/ in "father")
  lip_round   protrusion and rounding (/u:/, /w/, /S/)
  lip_spread  corners pulled back (/i:/ in "see")
  lip_press   lips sealed against each other (/p b m/ = 1); /f v/ get 0.5 for the lower lip on the teeth

Co-articulation follows the dominance model of Cohen & Massaro (1993): each phoneme segment has a target and, per
parameter, a dominance D(t) = alpha * exp(-d(t) / tau) where d is the distance from t to the segment (0 inside it: a
flat top, so a segment holds its own shape for its whole length rather than only at its centre). A frame's value is
sum(D * target) / sum(D) over all segments plus a weak constant REST dominance, so stretches far from any phoneme
relax to the neutral face. Dominance is per parameter: bilabials dominate lip_press and jaw (closure must happen) but
vowels open the lips again within ~15 ms, while alveolars and velars leave the lips to their neighbours, which is what
spreads rounding from /u:/ across "st" in "stew". Pauses dominate in proportion to their length (up to 150 ms), so a
10 ms word gap does not shut the mouth mid-phrase but a sentence pause returns it to rest.

Diphthongs and r-coloured vowels have two or three targets, splitting their segment in equal parts (/aI/ opens then
spreads). Video frames sample the curves at j / fps; a bilabial too short to contain a sample instant moves the
nearest sample to its midpoint, so no closure falls between frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.speech.clip import PhonemeEvent

VISEME_PARAMS = ("jaw_open", "lip_round", "lip_spread", "lip_press")


@dataclass(frozen=True)
class VisemeTarget:
    jaw_open: float
    lip_round: float
    lip_spread: float
    lip_press: float

    def __post_init__(self) -> None:
        for name in VISEME_PARAMS:
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"VisemeTarget.{name} must be in [0, 1], got {getattr(self, name)}")

    def as_array(self) -> np.ndarray:
        return np.array([self.jaw_open, self.lip_round, self.lip_spread, self.lip_press], np.float64)


T = VisemeTarget
REST = T(0.0, 0.0, 0.0, 0.0)  # jaw closed, lips relaxed and touching

# Dominance alpha per parameter (jaw, round, spread, press) for each articulation class.
CLASS_DOMINANCE: dict[str, tuple[float, float, float, float]] = {
    "vowel": (1.0, 1.0, 1.0, 1.0),
    "bilabial": (1.5, 0.4, 0.6, 4.0),
    "labiodental": (1.0, 0.4, 0.5, 1.2),
    "coronal": (0.5, 0.15, 0.3, 0.05),  # dental, alveolar, velar: tongue sounds, lips follow the vowels
    "sibilant": (0.9, 0.2, 0.5, 0.05),  # /s z/ need the teeth nearly closed
    "postalveolar": (0.7, 0.8, 0.6, 0.05),
    "glide": (0.6, 1.2, 0.9, 0.05),  # /w j r/
    "weak": (0.1, 0.1, 0.1, 0.02),  # /h/, glottal stop, espeak's ';' linking glide: take the neighbours' shape
    "pause": (0.8, 0.8, 0.8, 0.8),
}
# Decay time constant per parameter in seconds; rounding spreads furthest (anticipatory rounding spans consonants).
TAU_S = np.array([0.025, 0.05, 0.04, 0.015])
REST_DOMINANCE = 0.02
PAUSE_FULL_DOMINANCE_S = 0.15
_CUTOFF_S = 12 * float(TAU_S.max())  # exp(-12) ~ 6e-6: beyond this a segment no longer matters

# Vowel qualities reused by the diphthongs below.
_I_ = T(0.22, 0.0, 0.55, 0.0)
_E_ = T(0.45, 0.0, 0.5, 0.0)
_a_ = T(0.75, 0.0, 0.4, 0.0)
_A_ = T(0.85, 0.05, 0.05, 0.0)
_O_ = T(0.55, 0.65, 0.0, 0.0)
_o_ = T(0.4, 0.55, 0.0, 0.0)
_U_ = T(0.25, 0.65, 0.0, 0.0)
_V_ = T(0.55, 0.0, 0.1, 0.0)
_SCHWA_ = T(0.35, 0.0, 0.05, 0.0)
_RHOTIC_ = T(0.3, 0.3, 0.0, 0.0)
_R_ = T(0.2, 0.45, 0.0, 0.0)

_BILABIAL = T(0.05, 0.15, 0.0, 1.0)
_LABIODENTAL = T(0.12, 0.0, 0.15, 0.5)
_DENTAL = T(0.18, 0.0, 0.15, 0.0)
_ALVEOLAR = T(0.15, 0.0, 0.2, 0.0)
_LATERAL = T(0.22, 0.0, 0.2, 0.0)
_SIBILANT = T(0.08, 0.0, 0.4, 0.0)
_POSTALVEOLAR = T(0.12, 0.6, 0.0, 0.0)
_VELAR = T(0.25, 0.0, 0.1, 0.0)
_GLOTTAL = T(0.3, 0.0, 0.0, 0.0)

# espeak-ng English mnemonics (all English voices of espeak-ng 1.51) -> (class, targets in time order).
PHONEME_VISEMES: dict[str, tuple[str, tuple[VisemeTarget, ...]]] = {
    # monophthongs
    "i:": ("vowel", (T(0.15, 0.0, 0.85, 0.0),)),
    "i": ("vowel", (T(0.15, 0.0, 0.7, 0.0),)),
    "I": ("vowel", (_I_,)),
    "I2": ("vowel", (T(0.2, 0.0, 0.4, 0.0),)),
    "I#": ("vowel", (T(0.2, 0.0, 0.4, 0.0),)),
    "e": ("vowel", (T(0.35, 0.0, 0.6, 0.0),)),
    "E": ("vowel", (_E_,)),
    "a": ("vowel", (_a_,)),
    "aa": ("vowel", (_a_,)),
    "a2": ("vowel", (_a_,)),
    "a#": ("vowel", (T(0.45, 0.0, 0.15, 0.0),)),
    "A:": ("vowel", (_A_,)),
    "A": ("vowel", (_A_,)),
    "0": ("vowel", (T(0.7, 0.35, 0.0, 0.0),)),
    "Q": ("vowel", (T(0.7, 0.35, 0.0, 0.0),)),
    "O:": ("vowel", (_O_,)),
    "O": ("vowel", (_O_,)),
    "O2": ("vowel", (_O_,)),
    "V": ("vowel", (_V_,)),
    "U": ("vowel", (_U_,)),
    "u:": ("vowel", (T(0.15, 0.9, 0.0, 0.0),)),
    "u": ("vowel", (T(0.18, 0.8, 0.0, 0.0),)),
    "@": ("vowel", (_SCHWA_,)),
    "@2": ("vowel", (_SCHWA_,)),
    "@5": ("vowel", (_SCHWA_,)),
    "@-": ("vowel", (T(0.3, 0.0, 0.05, 0.0),)),
    "3:": ("vowel", (T(0.35, 0.3, 0.0, 0.0),)),
    "3": ("vowel", (_RHOTIC_,)),
    "@L": ("vowel", (T(0.25, 0.0, 0.15, 0.0),)),
    # diphthongs, triphthongs, r-coloured vowels
    "aI": ("vowel", (_a_, _I_)),
    "aI2": ("vowel", (_a_, _I_)),
    "aI@": ("vowel", (_a_, _I_, _SCHWA_)),
    "aI3": ("vowel", (_a_, _I_, _RHOTIC_)),
    "aU": ("vowel", (_a_, _U_)),
    "aU@": ("vowel", (_a_, _U_, _SCHWA_)),
    "eI": ("vowel", (_E_, _I_)),
    "oU": ("vowel", (_o_, _U_)),
    "OI": ("vowel", (_O_, _I_)),
    "e@": ("vowel", (_E_, _SCHWA_)),
    "i@": ("vowel", (_I_, _SCHWA_)),
    "i@3": ("vowel", (_I_, _RHOTIC_)),
    "U@": ("vowel", (_U_, _SCHWA_)),
    "A@": ("vowel", (_A_, _RHOTIC_)),
    "O@": ("vowel", (_O_, _RHOTIC_)),
    "o@": ("vowel", (_o_, _RHOTIC_)),
    "IR": ("vowel", (_I_, _R_)),
    "VR": ("vowel", (_V_, _R_)),
    # consonants
    "p": ("bilabial", (_BILABIAL,)),
    "b": ("bilabial", (_BILABIAL,)),
    "m": ("bilabial", (_BILABIAL,)),
    "f": ("labiodental", (_LABIODENTAL,)),
    "v": ("labiodental", (_LABIODENTAL,)),
    "T": ("coronal", (_DENTAL,)),
    "D": ("coronal", (_DENTAL,)),
    "t": ("coronal", (_ALVEOLAR,)),
    "d": ("coronal", (_ALVEOLAR,)),
    "n": ("coronal", (_ALVEOLAR,)),
    "n-": ("coronal", (_ALVEOLAR,)),
    "t#": ("coronal", (_ALVEOLAR,)),  # flap in "little" (en-us)
    "t2": ("coronal", (_ALVEOLAR,)),
    "t[": ("coronal", (_DENTAL,)),  # dental t (en-029)
    "d#": ("coronal", (_ALVEOLAR,)),
    "l": ("coronal", (_LATERAL,)),
    "l/": ("coronal", (_LATERAL,)),
    "s": ("sibilant", (_SIBILANT,)),
    "z": ("sibilant", (_SIBILANT,)),
    "S": ("postalveolar", (_POSTALVEOLAR,)),
    "Z": ("postalveolar", (_POSTALVEOLAR,)),
    "tS": ("postalveolar", (_POSTALVEOLAR,)),
    "dZ": ("postalveolar", (_POSTALVEOLAR,)),
    "k": ("coronal", (_VELAR,)),
    "g": ("coronal", (_VELAR,)),
    "N": ("coronal", (_VELAR,)),
    "x": ("coronal", (_VELAR,)),
    "h": ("weak", (_GLOTTAL,)),
    "?": ("weak", (_GLOTTAL,)),
    ";": ("weak", (T(0.25, 0.0, 0.3, 0.0),)),  # espeak's linking glide between vowels across words
    "r": ("glide", (_R_,)),
    "r-": ("glide", (_R_,)),
    "r/": ("glide", (_R_,)),
    "w": ("glide", (T(0.1, 0.9, 0.0, 0.0),)),
    "w#": ("glide", (T(0.1, 0.9, 0.0, 0.0),)),
    "j": ("glide", (T(0.15, 0.0, 0.5, 0.0),)),
}

BILABIALS = frozenset(p for p, (cls, _) in PHONEME_VISEMES.items() if cls == "bilabial")

# espeak suffixes for allophones ('@5', 't2', 'l/2'); stripped when a mnemonic is not in the table itself.
_ALLOPHONE_SUFFIX = "#0123456789[/-!"


def viseme_entry(phoneme: str) -> tuple[str, tuple[VisemeTarget, ...]]:
    """(class, targets) for an espeak mnemonic; pauses ('_', '_:', '_!', ...) map to ('pause', (REST,))."""
    if not phoneme:
        raise ValueError("empty phoneme mnemonic")
    if phoneme.startswith("_"):
        return "pause", (REST,)
    if phoneme in PHONEME_VISEMES:
        return PHONEME_VISEMES[phoneme]
    base = phoneme.rstrip(_ALLOPHONE_SUFFIX)
    if base and base in PHONEME_VISEMES:
        return PHONEME_VISEMES[base]
    raise ValueError(f"no viseme for espeak phoneme {phoneme!r}; add it to PHONEME_VISEMES")


def _segments(phonemes: Sequence[PhonemeEvent]) -> list[tuple[float, float, np.ndarray, np.ndarray]]:
    """(start_s, end_s, target[4], dominance[4]) with multi-target phonemes split into equal parts."""
    out = []
    for ev in phonemes:
        cls, targets = viseme_entry(ev.phoneme)
        alpha = np.array(CLASS_DOMINANCE[cls])
        if cls == "pause":
            alpha = alpha * min(1.0, ev.duration_s / PAUSE_FULL_DOMINANCE_S)
        step = ev.duration_s / len(targets)
        for k, target in enumerate(targets):
            out.append((ev.start_s + k * step, ev.start_s + (k + 1) * step, target.as_array(), alpha))
    return out


def sample_times(phonemes: Sequence[PhonemeEvent], fps: float, n_frames: int) -> np.ndarray:
    """Instant each video frame samples the curves: j / fps, moved to a bilabial's midpoint if it would be missed."""
    times = np.arange(n_frames) / fps
    for ev in phonemes:
        if ev.phoneme not in BILABIALS or n_frames == 0:
            continue
        first_inside = np.searchsorted(times, ev.start_s)
        if first_inside < n_frames and times[first_inside] < ev.end_s:
            continue
        mid_s = 0.5 * (ev.start_s + ev.end_s)
        j = int(np.clip(round(mid_s * fps), 0, n_frames - 1))
        times[j] = mid_s
    return times


def viseme_curves(phonemes: Sequence[PhonemeEvent], fps: float, n_frames: int) -> np.ndarray:
    """(n_frames, 4) float32 [jaw_open, lip_round, lip_spread, lip_press] for video frames shown at j / fps."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    for a, b in zip(phonemes, phonemes[1:]):
        if b.start_s < a.start_s:
            raise ValueError(f"phonemes must be in time order: {a} before {b}")
    times = sample_times(phonemes, fps, n_frames)
    num = np.tile(REST_DOMINANCE * REST.as_array(), (n_frames, 1))
    den = np.full((n_frames, 4), REST_DOMINANCE)
    for start_s, end_s, target, alpha in _segments(phonemes):
        lo = np.searchsorted(times, start_s - _CUTOFF_S)
        hi = np.searchsorted(times, end_s + _CUTOFF_S)
        if lo >= hi:
            continue
        t = times[lo:hi, None]
        distance_s = np.maximum(np.maximum(start_s - t, t - end_s), 0.0)
        dominance = alpha * np.exp(-distance_s / TAU_S)
        num[lo:hi] += dominance * target
        den[lo:hi] += dominance
    return (num / den).astype(np.float32)
