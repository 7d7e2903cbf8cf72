#!/usr/bin/env bash
# The default avatar's figures that README quotes, in one go, into out/measure_default/ (and the folders named below):
# lip sync driven by english_60s.wav and by the seed-11 synthetic clip's speech, the live latency bench, the microphone
# end to end, the look under presets, `make run`'s job for 30 s, load time and memory, a 10-minute memory soak.
#
#     bash scripts/measure_default_avatar.sh [SPEECH_WAV]     # default ../shared/data/speech/english_60s.wav
#
# About 20 minutes on 2 cores; run it on a quiet machine (the latency and frame-rate figures are real time).
set -euo pipefail
cd "$(dirname "$0")/.."
R=.venv/bin/relitcam
PY=.venv/bin/python
SPEECH=${1:-../shared/data/speech/english_60s.wav}
OUT=out/measure_default
mkdir -p "$OUT" out/makerun

if [ ! -f out/two_min/synth/video.mp4 ]; then
  # The 120 s clip the 2-minute enrollment timing uses; here only its speech drives the avatar.
  $R synth --seconds 120 --size 512 --fps 30 --seed 11 --lightings 1 --out out/two_min/synth
fi
$R run --no-settings --source file --audio "$SPEECH" --offline --fps 30 --mp4 "$OUT/english_60s.mp4" > "$OUT/run.log" 2>&1
$R eval --sync "$OUT/english_60s.mp4" -o "$OUT/sync_english.json"
$R run --no-settings --source file --audio out/two_min/synth/video.mp4 --offline --fps 30 --mp4 "$OUT/seed11.mp4" > "$OUT/run11.log" 2>&1
$R eval --sync "$OUT/seed11.mp4" -o "$OUT/sync_seed11.json"
$PY scripts/bench_latency.py --out out/bench_latency > "$OUT/bench_latency.log" 2>&1
$PY scripts/mic_sync.py --out out/mic_sync > "$OUT/mic_sync.log" 2>&1
$PY scripts/avatar_look.py --out out/avatar_look/LOOK.json > "$OUT/avatar_look.log" 2>&1
timeout -s INT 30 $R run --no-settings --source file --audio models/assets/speech_sample.wav --loop --web --mp4 out/makerun/run.mp4 \
  --stats out/makerun/stats.json > out/makerun/run.log 2>&1 || true
$R eval --sync out/makerun/run.mp4 -o out/makerun/sync.json
$PY scripts/bench_renderer.py --out out/bench_renderer > "$OUT/bench_renderer.log" 2>&1
$PY scripts/soak.py --minutes 10 --out out/soak_10min > "$OUT/soak.log" 2>&1
echo "done: $OUT, out/bench_latency, out/mic_sync, out/avatar_look, out/makerun, out/bench_renderer, out/soak_10min"
