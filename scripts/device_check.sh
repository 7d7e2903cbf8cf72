#!/usr/bin/env bash
# The command for a lent GPU machine (docs/gpu.md, "Device pack"). Build the pack and the weights here first
# (.venv/bin/python scripts/device_pack.py), then call the device tool twice, the second right after the first
# (the machine stays warm 30 s):
#     call 1  command: bash scripts/device_check.sh
#             carry:   [".device/site.tar.xz", ".device/clip.mp4"]       timeout_s: 600
#     call 2  command: STEPS=enroll bash scripts/device_check.sh
#             carry:   [".device/weights.tar.xz", ".device/clip.mp4"]    timeout_s: 600
#
# Unpacks .device/site.tar.xz (PyAV + LiteRT for the machine's Python 3.12, pure-Python fallbacks) into
# $DEVICE_ROOT/site and .device/weights.tar.xz (face_recognition_models: enroll's mouth stage) into
# $DEVICE_ROOT/weights. Both folders outlive the call: a later call on the same warm machine reuses a folder when it
# carries the same tarball (same sha256) or none at all, and replaces it when it carries another. Both go on
# PYTHONPATH, then the steps in $STEPS (default "probe tests bench enroll") run, each under
# `timeout`, so the whole run ends within $BUDGET_S seconds (default 540: the tool stops a command at 600 s).
# A failed or timed-out step is logged and the next step still runs. Everything lands in $OUT (at most 7 files:
# the tool returns 8):
#     summary.json   per step: status (ok / failed / timeout / skipped), exit code, seconds, limit, last lines;
#                    "pack" and "weights": which tarball (sha256), the folder, and "from": this call, an earlier one
#                    (unpacked then, reused now) or SITE_DIR
#     log.txt        every step's output
#     probe.json     scripts/device_probe.py: Python, GPU, versions, TensorRT?, PyAV round trip, 3 face models
#     tests.xml      JUnit XML of the GPU-marked tests (pytest -m gpu over the files that have such tests)
#     bench.json, bench_gpu.png   scripts/bench_gpu.py
#     enroll.json    `relitcam enroll --device cuda` of .device/clip.mp4: wall time, exit code, every finished
#                    stage's record (elapsed_s, figures), the bundle's manifest info when it finished
# Environment: OUT (default out/device), STEPS, BUDGET_S, PYTHON (python3), DEVICE_ROOT (/tmp/relitcam-device: the
# folders kept between calls), PACK (.device/site.tar.xz), SITE_DIR (an already unpacked pack: no unpack, no
# $DEVICE_ROOT/site), WEIGHTS (.device/weights.tar.xz), CLIP (.device/clip.mp4), ENROLL_WORK (enroll's work folder,
# default $DEVICE_ROOT/enroll: a later call on the same warm machine resumes it), ENROLL_DEVICE (cuda;
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
DEVICE_ROOT=${DEVICE_ROOT:-/tmp/relitcam-device}
PACK=${PACK:-.device/site.tar.xz}
WEIGHTS=${WEIGHTS:-.device/weights.tar.xz}
CLIP=${CLIP:-.device/clip.mp4}
ENROLL_WORK=${ENROLL_WORK:-$DEVICE_ROOT/enroll}
ENROLL_DEVICE=${ENROLL_DEVICE:-cuda}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
: >"$LOG"
START=$(date +%s)
# per-call temporaries only (step outputs, bench, the enrolled bundle); removed at the end
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/relitcam-device.XXXXXX")
STEPS_TSV="$SCRATCH/steps.tsv"
: >"$STEPS_TSV"
ACTIVATED=""
NOTES=""

log() { echo "[device_check +$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }
note() { NOTES="$NOTES$*"$'\n'; log "$*"; }

write_summary() {
  "$PY" - "$STEPS_TSV" "$OUT/summary.json" "$SCRATCH" "$START" "${SITE_ROOT:-}" "$ACTIVATED" "$NOTES" "$STEPS" \
    "$BUDGET_S" "${SITE_FROM:-}" "${WEIGHTS_ROOT:-}" "${WEIGHTS_FROM:-}" <<'EOF' || log "could not write summary.json"
import json, os, platform, sys, time
tsv, dest, scratch, start, site_root, activated, notes, steps, budget, site_from, weights_root, weights_from = \
    sys.argv[1:13]


def origin(root, came_from):
    """Which tarball a folder was unpacked from (device_check's .tarball file), and whether by this call."""
    info = {"dir": root, "from": came_from}
    try:
        sha, tarball, unpacked = (open(os.path.join(root, ".tarball")).read().split("\t") + ["", ""])[:3]
        info.update(sha256=sha.strip(), tarball=tarball.strip(), unpacked_utc=unpacked.strip())
    except OSError:
        pass
    return info


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
            "wheels": {w["dist"]: w["version"] for w in m.get("wheels", [])}, **origin(site_root, site_from)}
weights = None
if weights_root:
    weights = origin(weights_root, weights_from)
    try:
        m = json.load(open(os.path.join(weights_root, "weights.json")))
        weights.update(package=m.get("package"), version=m.get("version"), model=m.get("model"),
                       created_utc=m.get("created_utc"))
    except Exception as e:
        weights["error"] = f"weights.json: {e}"
probe = {}
try:
    p = json.load(open(os.path.join(os.path.dirname(dest), "probe.json")))
    probe = {"gpu": p.get("gpu"), "gpu_name": p.get("gpu_name"), "missing": p.get("missing")}
except Exception:
    pass
summary = {"python": platform.python_version(), "python_executable": sys.executable, "host": platform.node(),
           "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(start))),
           "elapsed_s": round(time.time() - int(start), 1), "budget_s": int(budget), "steps_asked": steps.split(),
           "pack": pack, "site_dir": site_root or None, "weights": weights,
           "fallbacks_activated": activated.split(),
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
sha256_of() {
  if command -v sha256sum >/dev/null; then
    sha256sum "$1" | cut -d' ' -f1
  else
    "$PY" -c 'import hashlib, sys; print(hashlib.file_digest(open(sys.argv[1], "rb"), "sha256").hexdigest())' "$1"
  fi
}

# persist KIND TARBALL DEST: sets FOLDER and FROM. DEST is kept between calls on the same machine, and its .tarball
# file ("sha256 TAB tarball TAB unpacked_utc", written last) says what it holds. A carried TARBALL whose sha256 is
# DEST's is not unpacked again; another one replaces DEST (unpacked beside it, then moved in). Without TARBALL, DEST
# from an earlier call is used as it is.
persist() {
  local kind=$1 tarball=$2 dest=$3 sha held="" t0 tmp
  FOLDER="" FROM=""
  [ -f "$dest/.tarball" ] && held=$(cut -f1 "$dest/.tarball")
  if [ -f "$tarball" ]; then
    sha=$(sha256_of "$tarball")
    if [ -n "$sha" ] && [ "$sha" = "$held" ]; then
      FOLDER=$dest FROM="earlier call"
      log "$kind: $tarball (sha256 ${sha:0:12}) is already unpacked at $dest by an earlier call: reused"
      return
    fi
    tmp="$dest.new.$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    t0=$(date +%s)
    if tar -xJf "$tarball" -C "$tmp" ||
      { rm -rf "$tmp" && mkdir -p "$tmp" &&
        "$PY" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$tarball" "$tmp"; }; then
      printf '%s\t%s\t%s\n' "$sha" "$(cd "$(dirname "$tarball")" && pwd)/$(basename "$tarball")" \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$tmp/.tarball"
      rm -rf "$dest"
      mv "$tmp" "$dest"
      FOLDER=$dest FROM="this call"
      log "$kind: unpacked $tarball (sha256 ${sha:0:12}, $(du -sh "$dest" | cut -f1)) into $dest" \
        "in $(($(date +%s) - t0))s"
    else
      rm -rf "$tmp"
      note "$kind: could not unpack $tarball"
    fi
  elif [ -n "$held" ]; then
    FOLDER=$dest FROM="earlier call"
    note "$kind: none carried ($tarball); using $dest, unpacked by an earlier call on this machine" \
      "(sha256 ${held:0:12})"
  fi
}

SITE_ROOT="" SITE_FROM=""
if [ -n "${SITE_DIR:-}" ]; then
  SITE_ROOT=$(cd "$SITE_DIR" && pwd) || { note "SITE_DIR=$SITE_DIR does not exist"; SITE_ROOT=""; }
  [ -n "$SITE_ROOT" ] && SITE_FROM=SITE_DIR && log "using the unpacked pack at $SITE_ROOT"
else
  persist pack "$PACK" "$DEVICE_ROOT/site"
  SITE_ROOT=$FOLDER SITE_FROM=$FROM
  [ -n "$SITE_ROOT" ] || [ -f "$PACK" ] ||
    note "no pack at $PACK nor one unpacked by an earlier call in $DEVICE_ROOT/site: av and LiteRT only if" \
      "the machine has them (build it: scripts/device_pack.py)"
fi

persist weights "$WEIGHTS" "$DEVICE_ROOT/weights"
WEIGHTS_ROOT=$FOLDER WEIGHTS_FROM=$FROM
[ -n "$WEIGHTS_ROOT" ] || [ -f "$WEIGHTS" ] ||
  log "no weights at $WEIGHTS nor from an earlier call: enroll's mouth stage will stop (needs face_recognition_models)"

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
if [ -n "$WEIGHTS_ROOT" ]; then
  if [ -f "$WEIGHTS_ROOT/weights.json" ]; then
    PP="${PP:+$PP:}$WEIGHTS_ROOT/site"
  else
    note "$WEIGHTS_ROOT has no weights.json"
  fi
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
