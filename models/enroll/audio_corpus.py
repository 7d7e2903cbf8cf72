"""Offline training corpus for the speaker-independent audio encoder: espeak-ng speech with exact viseme labels.

Each *recording* is one voice (an espeak base accent plus a timbre variant, e.g. 'en-gb-scotland+f3') speaking a few
seeded utterances separated by silence gaps, at its own rate, pitch and pitch range. Labels are the four viseme curves
of `models.speech.visemes` sampled at the mel frame rate (100 Hz), so label i belongs to mel frame i (centred at
i * 10 ms). Augmentation exists so the net transfers to real microphones, rooms and voices: a speed change by
resampling (pitch and tempo move together, labels are time-scaled with it), a short reverb tail, random EQ, an
always-present noise floor (espeak renders pauses as exact digital zeros, which no microphone ever produces), added
white or pink noise at 10-30 dB SNR, and a random recording level.

Voices are split by identity: held-out variants and a held-out accent never occur in training, which is what
"works on voices it never heard" is measured on.
"""

from __future__ import annotations

import json
import multiprocessing as mp
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import signal

from models.audio.mel import MelSpec, log_mel
from models.audio.resample import resample
from models.speech.clip import PhonemeEvent
from models.speech.espeak import SynthesisParams, native_sample_rate_hz, synthesize
from models.speech.script import random_script
from models.speech.visemes import viseme_curves

SAMPLE_RATE_HZ = 16000
LABEL_RATE_HZ = 100.0  # = MelSpec().frame_rate_hz: one label per mel frame

TRAIN_BASES = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan", "en-us-nyc")
HELDOUT_BASES = ("en-gb-x-gbcwmd",)
# "" is the base voice's own timbre. The mix covers both synthesizers espeak has (formant and klatt) and whispered
# speech, so the net cannot key on one excitation model.
TRAIN_VARIANTS = (
    "", "f1", "f2", "f3", "m1", "m2", "m3", "m4", "m6", "m7", "klatt", "klatt3", "Alex", "Andy", "Annie", "belinda",
    "benjamin", "david", "edward", "iven", "john", "linda", "max", "michel", "paul", "robert", "steph", "travis",
    "victor", "zac", "aunty", "grandma", "norbert", "whisperf",
)
HELDOUT_VARIANTS = ("f4", "f5", "m5", "m8", "klatt2", "adam", "anika", "caleb", "steph2", "Lee", "shelby", "grandpa")


def voice_name(base: str, variant: str) -> str:
    return f"{base}+{variant}" if variant else base


def train_voices() -> list[str]:
    return [voice_name(b, v) for b in TRAIN_BASES for v in TRAIN_VARIANTS]


def heldout_voices() -> list[str]:
    """Voices whose timbre (variant) or accent (base) never occurs in training."""
    out = [voice_name(b, v) for b in TRAIN_BASES for v in HELDOUT_VARIANTS]
    out += [voice_name(b, v) for b in HELDOUT_BASES for v in TRAIN_VARIANTS[:6] + HELDOUT_VARIANTS]
    return out


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the acoustic augmentation. Levels in dB; None disables a stage."""

    speed_factor: float  # > 1 plays faster and higher
    reverb_rt60_s: float | None
    reverb_wet: float  # wet/dry amplitude ratio of the reverb tail
    highpass_hz: float | None
    lowpass_hz: float | None
    tilt_db: float  # spectral tilt: + brightens, - darkens (one first-order shelf at 1 kHz)
    noise_colour: str  # "white" or "pink"
    snr_db: float
    peak_dbfs: float

    def __post_init__(self) -> None:
        if not 0.5 < self.speed_factor < 2.0:
            raise ValueError(f"speed_factor must be in (0.5, 2), got {self.speed_factor}")
        if self.noise_colour not in ("white", "pink"):
            raise ValueError(f"noise_colour must be 'white' or 'pink', got {self.noise_colour!r}")
        if self.peak_dbfs > 0:
            raise ValueError(f"peak_dbfs must be <= 0, got {self.peak_dbfs}")


@dataclass(frozen=True)
class RecordingSpec:
    """Everything that determines one corpus recording; the same spec always gives the same audio and labels."""

    seed: int
    voice: str
    rate_wpm: int
    pitch: int
    pitch_range: int
    n_utterances: int
    augment: AugmentParams | None  # None: clean, only the speed change of 1 and a -60 dB noise floor


@dataclass(frozen=True)
class Recording:
    """16 kHz audio, its log-mel (n, 80) and viseme labels (n, 4) at 100 Hz, and the spec that made it."""

    samples: np.ndarray
    mel: np.ndarray
    visemes: np.ndarray
    spec: RecordingSpec


def draw_augment(rng: np.random.Generator, strength: float = 1.0) -> AugmentParams:
    """Random augmentation; `strength` 0 gives a nearly clean recording, 1 the full ranges."""
    loud_noise = rng.random() < 0.7 * strength
    return AugmentParams(
        speed_factor=float(np.exp(rng.uniform(-0.08, 0.08) * strength)),
        reverb_rt60_s=float(rng.uniform(0.1, 0.6)) if rng.random() < 0.5 * strength else None,
        reverb_wet=float(rng.uniform(0.1, 0.6)),
        highpass_hz=float(rng.uniform(50, 300)) if rng.random() < 0.6 * strength else None,
        lowpass_hz=float(rng.uniform(3000, 7500)) if rng.random() < 0.5 * strength else None,
        tilt_db=float(rng.uniform(-8, 8) * strength),
        noise_colour="pink" if rng.random() < 0.5 else "white",
        snr_db=float(rng.uniform(10, 30) if loud_noise else rng.uniform(30, 55)),
        peak_dbfs=float(rng.uniform(-30, -1)),
    )


def draw_spec(seed: int, voices: list[str], augment_probability: float = 0.85) -> RecordingSpec:
    rng = np.random.default_rng(seed)
    return RecordingSpec(
        seed=seed,
        voice=voices[int(rng.integers(len(voices)))],
        rate_wpm=int(rng.integers(130, 221)),
        pitch=int(rng.integers(20, 81)),
        pitch_range=int(rng.integers(20, 91)),
        n_utterances=int(rng.integers(2, 6)),
        augment=draw_augment(rng) if rng.random() < augment_probability else None,
    )


def _speed_change(samples: np.ndarray, native_hz: int, speed_factor: float) -> tuple[np.ndarray, float]:
    """Resample `samples` (at native_hz) as if they had been recorded at native_hz * speed, to 16 kHz.

    The source rate is rounded to a multiple of 50 Hz so the polyphase ratio stays small (gcd with 16000 >= 50);
    returns the audio and the speed factor actually applied.
    """
    source_hz = int(round(native_hz * speed_factor / 50.0)) * 50
    return resample(samples, source_hz, SAMPLE_RATE_HZ), source_hz / native_hz


def _pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    spectrum[1:] /= np.sqrt(f[1:])
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n)


def _reverb(x: np.ndarray, rt60_s: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    """Direct path plus an exponentially decaying noise tail (a small room); energy of the tail set by `wet`."""
    n = int(rt60_s * SAMPLE_RATE_HZ)
    t = np.arange(n) / SAMPLE_RATE_HZ
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s)  # -60 dB at rt60
    tail[: int(0.002 * SAMPLE_RATE_HZ)] = 0.0  # first reflections arrive a few ms after the direct sound
    tail *= wet / max(np.sqrt(np.sum(tail**2)), 1e-12)
    ir = np.concatenate([[1.0], tail[1:]])
    return signal.fftconvolve(x, ir)[: len(x)]


def _equalise(x: np.ndarray, a: AugmentParams) -> np.ndarray:
    if a.highpass_hz is not None:
        x = signal.sosfilt(signal.butter(2, a.highpass_hz, "highpass", fs=SAMPLE_RATE_HZ, output="sos"), x)
    if a.lowpass_hz is not None:
        x = signal.sosfilt(signal.butter(4, a.lowpass_hz, "lowpass", fs=SAMPLE_RATE_HZ, output="sos"), x)
    if a.tilt_db != 0.0:
        # Shelf = x + g * highpass(x): +tilt brightens the highs by up to tilt_db, -tilt darkens them.
        high = signal.sosfilt(signal.butter(1, 1000.0, "highpass", fs=SAMPLE_RATE_HZ, output="sos"), x)
        x = x + (10.0 ** (a.tilt_db / 20.0) - 1.0) * high
    return x


def _speech_rms(x: np.ndarray) -> float:
    """RMS over the louder half of 20 ms blocks: the level of speech itself, not diluted by the pauses."""
    block = SAMPLE_RATE_HZ // 50
    n = len(x) // block
    if n == 0:
        return float(np.sqrt(np.mean(x**2)) + 1e-12)
    power = np.sort((x[: n * block].reshape(n, block) ** 2).mean(axis=1))
    return float(np.sqrt(power[n // 2 :].mean()) + 1e-12)


def augment_audio(x: np.ndarray, a: AugmentParams, rng: np.random.Generator) -> np.ndarray:
    """Reverb, EQ, noise and level (not the speed change, which also moves labels) on 16 kHz audio; float32 out."""
    y = np.asarray(x, np.float64)
    if a.reverb_rt60_s is not None:
        y = _reverb(y, a.reverb_rt60_s, a.reverb_wet, rng)
    y = _equalise(y, a)
    noise = _pink_noise(len(y), rng) if a.noise_colour == "pink" else rng.standard_normal(len(y))
    noise *= _speech_rms(y) / max(np.sqrt(np.mean(noise**2)), 1e-12) * 10.0 ** (-a.snr_db / 20.0)
    y = y + noise
    y *= 10.0 ** (a.peak_dbfs / 20.0) / max(np.abs(y).max(), 1e-12)
    return y.astype(np.float32)


def _join(parts: list[tuple[np.ndarray, list[PhonemeEvent]]], gaps_s: list[float]) -> tuple[np.ndarray, list[PhonemeEvent]]:
    """Concatenate utterances with silences gaps_s[0] before, gaps_s[k] between and gaps_s[-1] after them."""
    chunks: list[np.ndarray] = []
    events: list[PhonemeEvent] = []
    t_s = 0.0
    for k, (samples, phonemes) in enumerate(parts):
        gap = np.zeros(int(round(gaps_s[k] * SAMPLE_RATE_HZ)), np.float32)
        if len(gap):
            events.append(PhonemeEvent(t_s, t_s + len(gap) / SAMPLE_RATE_HZ, "_"))
            chunks.append(gap)
            t_s += len(gap) / SAMPLE_RATE_HZ
        duration_s = len(samples) / SAMPLE_RATE_HZ
        for ev in phonemes:
            end_s = min(ev.end_s, duration_s)
            if end_s > ev.start_s:
                events.append(PhonemeEvent(t_s + ev.start_s, t_s + end_s, ev.phoneme))
        chunks.append(samples)
        t_s += duration_s
    tail = np.zeros(int(round(gaps_s[-1] * SAMPLE_RATE_HZ)), np.float32)
    if len(tail):
        events.append(PhonemeEvent(t_s, t_s + len(tail) / SAMPLE_RATE_HZ, "_"))
        chunks.append(tail)
    return np.concatenate(chunks), events


def make_recording(spec: RecordingSpec, mel_spec: MelSpec = MelSpec()) -> Recording:
    """Synthesize, speed-change, augment and label one recording (deterministic in `spec`)."""
    if mel_spec.sample_rate_hz != SAMPLE_RATE_HZ or mel_spec.frame_rate_hz != LABEL_RATE_HZ:
        raise ValueError(f"the corpus is made at {SAMPLE_RATE_HZ} Hz with {LABEL_RATE_HZ} Hz labels, got {mel_spec}")
    rng = np.random.default_rng([spec.seed, 1])
    native_hz = native_sample_rate_hz()
    speed = spec.augment.speed_factor if spec.augment is not None else 1.0
    params = SynthesisParams(spec.voice, spec.rate_wpm, spec.pitch, spec.pitch_range)
    parts = []
    for k in range(spec.n_utterances):
        text = random_script(spec.seed * 16 + k, n_sentences=int(rng.integers(1, 4)))
        clip = synthesize(text, params, sample_rate_hz=None)
        samples, applied = _speed_change(clip.samples, native_hz, speed)
        phonemes = [PhonemeEvent(ev.start_s / applied, ev.end_s / applied, ev.phoneme) for ev in clip.phonemes]
        parts.append((samples, phonemes))
    gaps_s = [float(rng.uniform(0.1, 1.2)) for _ in range(spec.n_utterances + 1)]
    samples, phonemes = _join(parts, gaps_s)
    if spec.augment is not None:
        samples = augment_audio(samples, spec.augment, rng)
    else:
        floor = rng.standard_normal(len(samples)) * _speech_rms(samples.astype(np.float64)) * 1e-3
        samples = (samples + floor).astype(np.float32)
    mel = log_mel(samples, mel_spec)
    visemes = viseme_curves(phonemes, LABEL_RATE_HZ, len(mel))
    return Recording(samples, mel, visemes, spec)


@dataclass(frozen=True)
class CorpusConfig:
    """How much of what to generate. Seeds of the held-out split start at 10**6 so the scripts differ too."""

    n_train_recordings: int = 600
    n_heldout_recordings: int = 40
    augment_probability: float = 0.85
    n_workers: int = 2
    shard_recordings: int = 25

    def __post_init__(self) -> None:
        if self.n_train_recordings <= 0 or self.n_heldout_recordings < 0 or self.n_workers <= 0:
            raise ValueError(f"CorpusConfig counts must be positive: {self}")
        if not 0.0 <= self.augment_probability <= 1.0:
            raise ValueError(f"augment_probability must be in [0, 1], got {self.augment_probability}")


HELDOUT_SEED0 = 10**6


def _write_shard(job: tuple[Path, list[int], list[str], float]) -> tuple[str, int, float]:
    path, seeds, voices, augment_probability = job
    if path.exists():
        with np.load(path) as z:
            return path.name, int(len(z["offsets"]) - 1), float(len(z["mel"]) / LABEL_RATE_HZ)
    mels, labels, offsets, names = [], [], [0], []
    for seed in seeds:
        rec = make_recording(draw_spec(seed, voices, augment_probability))
        mels.append(rec.mel.astype(np.float16))
        labels.append(rec.visemes.astype(np.float16))
        offsets.append(offsets[-1] + len(rec.mel))
        names.append(rec.spec.voice)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, mel=np.concatenate(mels), visemes=np.concatenate(labels), offsets=np.array(offsets, np.int64),
             voices=np.array(names), seeds=np.array(seeds, np.int64))
    tmp.replace(path)  # a shard exists only once complete, so an interrupted run resumes shard by shard
    return path.name, len(seeds), offsets[-1] / LABEL_RATE_HZ


def build_corpus(out_dir: Path, config: CorpusConfig = CorpusConfig(), progress=None) -> dict:
    """Write train_*.npz and heldout_*.npz shards into `out_dir` in parallel; returns a summary (also corpus.json).

    Existing shards are kept, so rerunning after an interruption only makes the missing ones.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for split, n, seed0, voices in (
        ("train", config.n_train_recordings, 0, train_voices()),
        ("heldout", config.n_heldout_recordings, HELDOUT_SEED0, heldout_voices()),
    ):
        for k, lo in enumerate(range(0, n, config.shard_recordings)):
            seeds = list(range(seed0 + lo, seed0 + min(n, lo + config.shard_recordings)))
            jobs.append((out_dir / f"{split}_{k:04d}.npz", seeds, voices, config.augment_probability))
    seconds = {"train": 0.0, "heldout": 0.0}
    with mp.get_context("spawn").Pool(config.n_workers) as pool:
        for name, _, dur_s in pool.imap_unordered(_write_shard, jobs):
            seconds[name.split("_")[0]] += dur_s
            if progress is not None:
                progress(name, dur_s)
    summary = {
        "config": asdict(config),
        "train_hours": seconds["train"] / 3600.0,
        "heldout_hours": seconds["heldout"] / 3600.0,
        "train_voices": train_voices(),
        "heldout_voices": heldout_voices(),
        "label_rate_hz": LABEL_RATE_HZ,
    }
    (out_dir / "corpus.json").write_text(json.dumps(summary, indent=1))
    return summary


@dataclass(frozen=True)
class CorpusArrays:
    """A split loaded into memory: mel (N, 80) float16, visemes (N, 4) float16, recording boundaries (R + 1,)."""

    mel: np.ndarray
    visemes: np.ndarray
    offsets: np.ndarray
    voices: list[str]

    @property
    def hours(self) -> float:
        return len(self.mel) / LABEL_RATE_HZ / 3600.0


def load_split(out_dir: Path, split: str) -> CorpusArrays:
    paths = sorted(Path(out_dir).glob(f"{split}_[0-9][0-9][0-9][0-9].npz"))
    if not paths:
        raise ValueError(f"no {split} shards in {out_dir}; build the corpus first (scripts/train_audio_encoder.py)")
    mels, labels, offsets, voices = [], [], [0], []
    for p in paths:
        with np.load(p) as z:
            mels.append(z["mel"])
            labels.append(z["visemes"])
            offsets.extend((z["offsets"][1:] + offsets[-1]).tolist())
            voices.extend(str(v) for v in z["voices"])
    return CorpusArrays(np.concatenate(mels), np.concatenate(labels), np.array(offsets, np.int64), voices)
