#!/usr/bin/env python3
"""Microphone end to end, measured the way a viewer would: speech played into a PulseAudio null sink is what
`relitcam run` hears through its microphone; the MP4 it records is then scored by `relitcam eval --sync`.

    .venv/bin/python scripts/mic_sync.py --out out/mic_sync            # espeak speech, default avatar
    .venv/bin/python scripts/mic_sync.py --speech some.wav --out ...   # any speech (>= 20 s for a stable figure)

Writes mic_sync.mp4, run_stats.json and SYNC.json (eval's lip_sync: offset_ms, > 0 when the audio lags the
picture; peak_correlation) in --out. Uses the running PulseAudio server, or starts one and stops it again. Exit 0 when |offset| <= --max-offset-ms.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATE_HZ = 16000
SINK = "relitcam_sync_voice"


def _pactl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=10)


def ensure_pulseaudio() -> bool:
    """True when this call started the server (the caller stops it)."""
    missing = [t for t in ("pulseaudio", "pactl", "pacat") if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"mic_sync: needs PulseAudio ({', '.join(missing)} not found; apt install pulseaudio)")
    if _pactl("info").returncode == 0:
        return False
    subprocess.run(["pulseaudio", "--daemon", "--exit-idle-time=-1"], capture_output=True, timeout=20)
    for _ in range(50):
        if _pactl("info").returncode == 0:
            return True
        time.sleep(0.1)
    raise SystemExit("mic_sync: PulseAudio could not be started")


def espeak_speech(seconds: float, seed: int) -> np.ndarray:
    """Sentences from several espeak voices (never the default avatar's own voice and script seed) to `seconds`."""
    from models.speech.espeak import SynthesisParams, synthesize
    from models.speech.script import random_script

    pieces, total, k = [], 0, 0
    voices = ("en-gb-x-rp", "en-us+f3", "en-029", "en+m7")
    while total < seconds * RATE_HZ:
        clip = synthesize(random_script(seed + k, n_sentences=3), SynthesisParams(voice=voices[k % len(voices)]))
        pieces += [clip.samples, np.zeros(int(0.4 * RATE_HZ), np.float32)]
        total += clip.samples.size + int(0.4 * RATE_HZ)
        k += 1
    return np.concatenate(pieces)[: int(seconds * RATE_HZ)].astype(np.float32)


def load_speech(path: Path | None, seconds: float, seed: int) -> np.ndarray:
    if path is None:
        return espeak_speech(seconds, seed)
    from models.media import read_audio

    return read_audio(path, RATE_HZ)[: int(seconds * RATE_HZ)].astype(np.float32)


def measure(args) -> dict:
    speech = load_speech(args.speech, args.seconds, args.seed)
    started = ensure_pulseaudio()
    module = _pactl("load-module", "module-null-sink", f"sink_name={SINK}").stdout.strip()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    mp4, stats = out / "mic_sync.mp4", out / "run_stats.json"
    try:
        # The monitor of the null sink is the microphone (PortAudio's "pulse" device opens PULSE_SOURCE): what
        # pacat plays into the sink is what relitcam hears.
        run = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "run", "--source", "mic", "--mic", "pulse",
             "--avatar", str(args.avatar), "--mp4", str(mp4), "--no-hotkeys", "--no-settings", "--stats", str(stats)],
            cwd=ROOT, env={**os.environ, "PULSE_SOURCE": f"{SINK}.monitor"}, stderr=subprocess.PIPE, text=True)
        time.sleep(args.warmup_s)  # nets loaded and capture open before the voice starts
        if run.poll() is not None:
            raise SystemExit(f"mic_sync: relitcam run ended early:\n{run.stderr.read()}")
        player = subprocess.run(
            ["pacat", "--playback", f"--device={SINK}", "--format=float32le", f"--rate={RATE_HZ}", "--channels=1"],
            input=speech.astype("<f4").tobytes(), capture_output=True, timeout=args.seconds + 60)
        if player.returncode:
            raise SystemExit(f"mic_sync: pacat failed: {player.stderr.decode().strip()}")
        time.sleep(1.0)  # the last words through the pipeline
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=60)
        if run.returncode:
            raise SystemExit(f"mic_sync: relitcam run exited {run.returncode}:\n{err}")
    finally:
        if module:
            _pactl("unload-module", module)
        if started:
            subprocess.run(["pulseaudio", "--kill"], capture_output=True, timeout=20)
    report_path = out / "SYNC.json"
    done = subprocess.run([sys.executable, "-m", "stream.cli", "eval", "--sync", str(mp4), "-o", str(report_path)],
                          cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"mic_sync: relitcam eval failed:\n{done.stderr}")
    report = json.loads(report_path.read_text())
    report.update({"speech": str(args.speech) if args.speech else f"espeak, seed {args.seed}",
                   "speech_s": speech.size / RATE_HZ, "avatar": str(args.avatar),
                   "run_stats": json.loads(stats.read_text()) if stats.exists() else None,
                   "cpu_cores": os.cpu_count()})
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--avatar", type=Path, default=ROOT / "models" / "avatars" / "default")
    p.add_argument("--speech", type=Path, help="speech WAV / video to play (default: espeak sentences)")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=4242)
    p.add_argument("--warmup-s", type=float, default=4.0)
    p.add_argument("--max-offset-ms", type=float, default=40.0)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "mic_sync")
    args = p.parse_args(argv)
    report = measure(args)
    sync = report["lip_sync"]
    print(json.dumps({"lip_sync": sync, "frames_with_face": report["frames_with_face"], "frames": report["frames"]},
                     indent=2))
    offset = sync["offset_ms"]
    return 0 if offset is not None and abs(offset) <= args.max_offset_ms else 1


if __name__ == "__main__":
    sys.exit(main())
