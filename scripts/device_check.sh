#!/usr/bin/env bash
# The one command for a lent GPU machine (docs/gpu.md, "Device pack"). Build the pack here first
# (.venv/bin/python scripts/device_pack.py), then call the device tool with
#     command: bash scripts/device_check.sh
#     carry:   [".device/site.tar.xz", ".device/clip.mp4"]      timeout_s: 600
#
# Unpacks .device/site.tar.xz (PyAV + LiteRT for the machine's Python 3.12, pure-Python fallbacks) into a scratch
# folder, puts it on PYTHONPATH, then runs the steps in $STEPS (default "probe tests bench enroll"), each under
# `timeout`, so the whole run ends within $BUDGET_S seconds (default 540: the tool stops a command at 600 s).
# A failed or timed-out step is logged and the next step still runs. Everything lands in $OUT (at most 7 files:
# the tool returns 8):
#     summary.json   per step: status (ok / failed / timeout / skipped), exit code, seconds, limit, last lines
#     log.txt        every step's output
#     probe.json     scripts/device_probe.py: Python, GPU, versions, TensorRT?, PyAV round trip, 3 face models
#     tests.xml      JUnit XML of the GPU-marked tests (pytest -m gpu over the files that have such tests)
#     bench.json, bench_gpu.png   scripts/bench_gpu.py
#     enroll.json    `relitcam enroll --device cuda` of .device/clip.mp4: wall time, exit code, every finished
#                    stage's record (elapsed_s, figures), the bundle's manifest info when it finished
# Environment: OUT (default out/device), STEPS, BUDGET_S, PYTHON (python3), PACK (.device/site.tar.xz),
# SITE_DIR (an already unpacked pack: skips the unpack), CLIP (.device/clip.mp4), ENROLL_WORK (enroll's work folder,
# default /tmp/relitcam-device/enroll: a later call on the same warm machine resumes it), ENROLL_DEVICE (cuda;
# cpu only to try the step without a GPU), per-step limits
# LIMIT_PROBE (90) LIMIT_TESTS (200) LIMIT_BENCH (200) LIMIT_ENROLL (whatever is left), BENCH_REPEATS (50),
# BENCH_MAX_BATCH (16), MIN_STEP_S (15: a step with less time left is skipped).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
OUT=${OUT:-$REPO/out/device}
PY=${PYTHON:-python3}
STEPS=${STEPS:-probe tests bench enroll}
BUDGET_S=${BUDGET_S:-540}
PACK=${PACK:-.device/site.tar.xz}
CLIP=${CLIP:-.device/clip.mp4}
ENROLL_WORK=${ENROLL_WORK:-/tmp/relitcam-device/enroll}
ENROLL_DEVICE=${ENROLL_DEVICE:-cuda}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
: >"$LOG"
START=$(date +%s)
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/relitcam-device.XXXXXX")
STEPS_TSV="$SCRATCH/steps.tsv"
: >"$STEPS_TSV"
ACTIVATED=""
NOTES=""

log() { echo "[device_check +$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }
note() { NOTES="$NOTES$*"$'\n'; log "$*"; }

write_summary() {
  "$PY" - "$STEPS_TSV" "$OUT/summary.json" "$SCRATCH" "$START" "${SITE_ROOT:-}" "$ACTIVATED" "$NOTES" "$STEPS" \
    "$BUDGET_S" <<'EOF' || log "could not write summary.json"
import json, os, platform, sys, time
tsv, dest, scratch, start, site_root, activated, notes, steps, budget = sys.argv[1:10]
rows = []
for line in open(tsv):
    name, status, rc, seconds, limit, note = (line.rstrip("\n").split("\t") + [""] * 6)[:6]
    tail = []
    out = os.path.join(scratch, name + ".out")
    if os.path.exists(out):
        tail = open(out, errors="replace").read().splitlines()[-15:]
    rows.append({"step": name, "status": status, "rc": int(rc) if rc.lstrip("-").isdigit() else None,
                 "seconds": float(seconds or 0), "limit_s": int(limit or 0), "note": note, "tail": tail})
pack = None
if site_root and os.path.exists(os.path.join(site_root, "pack.json")):
    m = json.load(open(os.path.join(site_root, "pack.json")))
    pack = {"python_version": m.get("python_version"), "created_utc": m.get("created_utc"),
            "wheels": {w["dist"]: w["version"] for w in m.get("wheels", [])}}
probe = {}
try:
    p = json.load(open(os.path.join(os.path.dirname(dest), "probe.json")))
    probe = {"gpu": p.get("gpu"), "gpu_name": p.get("gpu_name"), "missing": p.get("missing")}
except Exception:
    pass
summary = {"python": platform.python_version(), "python_executable": sys.executable, "host": platform.node(),
           "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(start))),
           "elapsed_s": round(time.time() - int(start), 1), "budget_s": int(budget), "steps_asked": steps.split(),
           "pack": pack, "site_dir": site_root or None, "fallbacks_activated": activated.split(),
           "notes": [n for n in notes.splitlines() if n], "probe": probe, "steps": rows,
           "ok": bool(rows) and all(r["status"] in ("ok", "skipped") for r in rows)}
with open(dest + ".part", "w") as f:
    json.dump(summary, f, indent=1)
os.replace(dest + ".part", dest)
EOF
}

# record NAME STATUS RC SECONDS LIMIT NOTE
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "${6//$'\t'/ }" >>"$STEPS_TSV"; write_summary; }

# run_step NAME WANTED_LIMIT_S COMMAND...: run under timeout, output to log.txt, stdout and $SCRATCH/NAME.out
run_step() {
  local name=$1 want=$2
  shift 2
  local left=$((BUDGET_S - ($(date +%s) - START)))
  local limit=$((want < left ? want : left))
  if [ "$limit" -lt "${MIN_STEP_S:-15}" ]; then
    log "step $name: skipped, ${left}s left of BUDGET_S=$BUDGET_S"
    record "$name" skipped "" 0 "$limit" "no time left (${left}s of BUDGET_S=$BUDGET_S)"
    return
  fi
  log "step $name: limit ${limit}s: $*"
  local t0 t1 rc status
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$SCRATCH/$name.out" | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  t1=$(date +%s.%N)
  local secs
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  case $rc in
    0) status=ok ;;
    124 | 137) status=timeout ;;
    *) status=failed ;;
  esac
  log "step $name: $status (exit $rc) in ${secs}s"
  record "$name" "$status" "$rc" "$secs" "$limit" "${STEP_NOTE:-}"
  STEP_NOTE=""
}

# ------------------------------------------------------------------------------------------ the pack
SITE_ROOT=""
if [ -n "${SITE_DIR:-}" ]; then
  SITE_ROOT=$(cd "$SITE_DIR" && pwd) || { note "SITE_DIR=$SITE_DIR does not exist"; SITE_ROOT=""; }
  [ -n "$SITE_ROOT" ] && log "using the unpacked pack at $SITE_ROOT"
elif [ -f "$PACK" ]; then
  SITE_ROOT="$SCRATCH/pack"
  mkdir -p "$SITE_ROOT"
  t0=$(date +%s)
  if tar -xJf "$PACK" -C "$SITE_ROOT" ||
    "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$PACK" "$SITE_ROOT"; then
    log "unpacked $PACK ($(du -sh "$SITE_ROOT" | cut -f1)) in $(($(date +%s) - t0))s"
  else
    note "could not unpack $PACK"
    SITE_ROOT=""
  fi
else
  note "no pack at $PACK: av and LiteRT only if the machine has them (build it: scripts/device_pack.py)"
fi

PP=""
if [ -n "$SITE_ROOT" ] && [ -f "$SITE_ROOT/pack.json" ]; then
  PP="$SITE_ROOT/site"
  want_py=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["python_version"])' "$SITE_ROOT/pack.json")
  have_py=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  [ "$want_py" = "$have_py" ] || note "the pack is for Python $want_py, $PY is $have_py: its compiled modules will not load"
  # a fallback goes on the path only where the machine's own copy does not import
  while read -r dist module path; do
    if ! PYTHONPATH="$PP:$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PY" -c "import $module" >/dev/null 2>&1; then
      PP="$PP:$SITE_ROOT/$path"
      ACTIVATED="$ACTIVATED $dist"
    fi
  done < <("$PY" -c 'import json,sys
for f in json.load(open(sys.argv[1]))["fallback"]: print(f["dist"], f["import"], f["path"])' "$SITE_ROOT/pack.json")
  log "fallbacks put on the path (the machine lacks them):${ACTIVATED:- none}"
elif [ -n "$SITE_ROOT" ]; then
  note "$SITE_ROOT has no pack.json"
fi
export PYTHONPATH="${PP:+$PP:}$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
log "python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])' 2>&1); PYTHONPATH=$PYTHONPATH"
write_summary

# ------------------------------------------------------------------------------------------ the steps
step_probe() {
  local clip_args=()
  [ -f "$CLIP" ] && clip_args=(--clip "$CLIP")
  run_step probe "${LIMIT_PROBE:-90}" "$PY" scripts/device_probe.py --quiet --out "$OUT/probe.json" "${clip_args[@]}"
}

step_tests() {
  local files
  files=$(grep -l "pytest.mark.gpu" tests/test_*.py | tr '\n' ' ')
  if [ -z "$files" ]; then
    record tests skipped "" 0 0 "no test file has a pytest.mark.gpu test"
    return
  fi
  STEP_NOTE="pytest -m gpu $files"
  # shellcheck disable=SC2086
  run_step tests "${LIMIT_TESTS:-200}" "$PY" -m pytest -m gpu -rA -p no:cacheprovider \
    --junitxml="$OUT/tests.xml" $files
}

step_bench() {
  run_step bench "${LIMIT_BENCH:-200}" "$PY" scripts/bench_gpu.py --out "$SCRATCH/bench" \
    --repeats "${BENCH_REPEATS:-50}" --max-batch "${BENCH_MAX_BATCH:-16}"
  [ -f "$SCRATCH/bench/BENCH_GPU.json" ] && cp "$SCRATCH/bench/BENCH_GPU.json" "$OUT/bench.json"
  [ -f "$SCRATCH/bench/bench_gpu.png" ] && cp "$SCRATCH/bench/bench_gpu.png" "$OUT/bench_gpu.png"
}

step_enroll() {
  if [ ! -f "$CLIP" ]; then
    record enroll skipped "" 0 0 "no clip at $CLIP (device_pack.py copies one)"
    return
  fi
  mkdir -p "$ENROLL_WORK"
  local left=$((BUDGET_S - ($(date +%s) - START) - 5))
  STEP_NOTE="work folder $ENROLL_WORK (rerun on the same warm machine to resume)"
  run_step enroll "${LIMIT_ENROLL:-$left}" "$PY" -m stream.cli enroll "$CLIP" --name device --device "$ENROLL_DEVICE" \
    --out "$SCRATCH/avatars" --work-dir "$ENROLL_WORK" --quiet --resume
  local rc_line
  rc_line=$(tail -n 1 "$STEPS_TSV")
  "$PY" - "$ENROLL_WORK" "$SCRATCH/avatars/device" "$OUT/enroll.json" "$rc_line" "$ENROLL_DEVICE" <<'EOF' || log "could not write enroll.json"
import glob, json, os, sys
work, bundle, dest, row, device = sys.argv[1:6]
name, status, rc, seconds, limit = (row.split("\t") + [""] * 5)[:5]
stages = {}
for path in sorted(glob.glob(os.path.join(work, "stages", "*.json"))):
    try:
        rec = json.load(open(path))
    except Exception as e:
        rec = {"error": str(e)}
    stages[os.path.basename(path)[:-5]] = {k: rec.get(k) for k in ("elapsed_s", "finished_utc", "extra")}
manifest = None
if os.path.exists(os.path.join(bundle, "manifest.json")):
    m = json.load(open(os.path.join(bundle, "manifest.json")))
    manifest = {"info": m.get("info"), "files": sorted(m.get("sha256", {}))}
json.dump({"status": status, "rc": int(rc) if rc.lstrip("-").isdigit() else None, "wall_s": float(seconds or 0),
           "limit_s": int(limit or 0), "device": device, "work_dir": work, "stages_finished": stages,
           "bundle_manifest": manifest}, open(dest, "w"), indent=1, default=str)
EOF
}

for step in $STEPS; do
  case $step in
    probe | tests | bench | enroll) "step_$step" ;;
    *) note "unknown step $step (known: probe tests bench enroll)" ;;
  esac
done

write_summary
log "done in $(($(date +%s) - START))s; results in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
# exit 1 when a step failed or timed out (summary.json says which); skipped steps do not count
bad=$(cut -f1,2 "$STEPS_TSV" | grep -E $'\t(failed|timeout)$' | cut -f1 | tr '\n' ' ')
rm -rf "$SCRATCH"
[ -z "$bad" ] || { log "not ok: $bad"; exit 1; }
