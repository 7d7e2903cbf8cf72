#!/usr/bin/env python3
"""Lip sync when the microphone also hears noise: the avatar driven by speech mixed with noise, measured against
the clean speech.

    .venv/bin/python scripts/noisy_sync.py ../shared/data/speech/english_60s.wav --out out/noisy_sync

For each condition (clean; pink noise, as from a fan or air conditioning, and babble, other people talking, at
--snr-db signal-to-noise ratios) it writes the mix as a WAV, drives the avatar with it through the live pipeline
(`relitcam run --source file --offline`, every frame), puts the *clean* speech under the rendered frames and
measures the audio-video offset and correlation with `relitcam eval --sync`: how well the mouth still follows
what was said. NOISY.json collects them with the machine described.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.audio.wav import read_wav, write_wav  # noqa: E402
from models.media import AUDIO_RATE_HZ, iter_video_frames, probe_video, write_mp4  # noqa: E402

BABBLE_VOICES = ("en-us", "en-gb-x-rp", "en-us+f3", "en+m7")


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f power noise (shaped in the frequency domain), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    spectrum[1:] /= np.sqrt(f[1:])
    spectrum[0] = 0.0
    x = np.fft.irfft(spectrum, n)
    return (x / np.sqrt(np.mean(x**2))).astype(np.float32)


def babble(n: int, seed: int) -> np.ndarray:
    """Four espeak-ng voices reading different random scripts at once, unit RMS: other people talking."""
    from models.speech.espeak import SynthesisParams, synthesize
    from models.speech.script import random_script

    mix = np.zeros(n, np.float64)
    for k, voice in enumerate(BABBLE_VOICES):
        talk = np.zeros(0, np.float32)
        part = 0
        while talk.size < n:
            clip = synthesize(random_script(seed * 100 + k * 10 + part, 4), SynthesisParams(voice=voice, rate_wpm=170))
            talk = np.concatenate([talk, clip.samples.astype(np.float32)])
            part += 1
        mix += talk[:n] / max(float(np.sqrt(np.mean(talk[:n] ** 2))), 1e-9)
    return (mix / np.sqrt(np.mean(mix**2))).astype(np.float32)


def speech_rms(x: np.ndarray) -> float:
    """RMS over the voiced part (frames within 30 dB of the loudest), so pauses do not lower the speech level."""
    frames = x[: x.size // 320 * 320].reshape(-1, 320)
    level = np.sqrt(np.mean(frames**2, axis=1))
    return float(np.sqrt(np.mean(level[level > level.max() * 10 ** (-30 / 20)] ** 2)))


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    out = speech + noise * (speech_rms(speech) / 10 ** (snr_db / 20))
    return (out / max(1.0, float(np.abs(out).max()) / 0.99)).astype(np.float32)


def with_clean_audio(driven: Path, clean: np.ndarray, out: Path) -> None:
    """A copy of `driven` with `clean` as its sound; frames streamed (a minute of 720p is 5 GB decoded)."""
    info = probe_video(driven)
    n = int(round(info.duration_s * AUDIO_RATE_HZ))
    frames = (f.image for f in iter_video_frames(driven))
    write_mp4(out, frames, info.fps, audio=np.pad(clean, (0, max(0, n - clean.size)))[:n])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("speech", type=Path)
    p.add_argument("--out", type=Path, default=Path("out/noisy_sync"))
    p.add_argument("--avatar", help="avatar bundle (default: the embedded one)")
    p.add_argument("--snr-db", type=float, nargs="+", default=[20.0, 10.0, 5.0])
    p.add_argument("--noises", nargs="+", choices=("pink", "babble"), default=["pink", "babble"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--voice-gate-db", type=float, help="passed to relitcam run (stream/voice_gate.py)")
    args = p.parse_args()

    relitcam = str(Path(sys.executable).with_name("relitcam"))
    args.out.mkdir(parents=True, exist_ok=True)
    speech = read_wav(args.speech, AUDIO_RATE_HZ).samples.astype(np.float32)
    rng = np.random.default_rng(args.seed)
    noises = {"pink": lambda: pink_noise(speech.size, rng), "babble": lambda: babble(speech.size, args.seed)}
    conditions = [("clean", None, None)] + [(f"{kind}_{snr:g}db", kind, snr) for kind in args.noises
                                              for snr in args.snr_db]
    made = {}
    report = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}, "speech": str(args.speech),
              "avatar": args.avatar or "embedded default", "voice_gate_db": args.voice_gate_db, "conditions": {}}
    for name, kind, snr in conditions:
        if kind is not None and kind not in made:
            made[kind] = noises[kind]()
        mix = speech if kind is None else mix_at_snr(speech, made[kind], snr)
        wav, driven, scored = (args.out / f"{name}{suffix}" for suffix in (".wav", "_driven.mp4", "_clean_audio.mp4"))
        write_wav(wav, mix, AUDIO_RATE_HZ)
        run = [relitcam, "run", "--source", "file", "--audio", str(wav), "--offline", "--fps", "30", "--no-settings",
               "--mp4", str(driven)] + (["--avatar", args.avatar] if args.avatar else []) + \
              (["--voice-gate-db", str(args.voice_gate_db)] if args.voice_gate_db else [])
        subprocess.run(run, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with_clean_audio(driven, speech, scored)
        sync_json = args.out / f"{name}_sync.json"
        subprocess.run([relitcam, "eval", "--sync", str(scored), "-o", str(sync_json)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sync = json.loads(sync_json.read_text())
        report["conditions"][name] = {"noise": kind, "snr_db": snr, **sync["lip_sync"]}
        print(name, json.dumps(report["conditions"][name]), flush=True)
    (args.out / "NOISY.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
