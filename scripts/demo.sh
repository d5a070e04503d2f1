#!/usr/bin/env bash
# The main job (`make demo`): replay CamVid frames through the perception nodes over DDS,
# record what they publish, and score it against the ground truth.
#
#   1. bag make    the 10 bundled CamVid frames (fcn_perception/data/camvid_sample)
#                  -> a rosbag2 (mcap) with /camera/image_raw and /camera/labels
#   2. start       segmentation_node and detection_node (shipped weights), remapped
#                  to /camera/image_raw, and bag record on their outputs
#   3. bag play    the bag at 2 Hz through them
#   4. bag eval    the recorded outputs (live: dropped frames count as misses), and the
#                  same bag offline (every frame) for comparison
#   5. print       the numbers and where the HTML report is
#
# Options (or environment variables):
#   --out DIR      output folder (FCN_DEMO_OUT, default out/demo; emptied first)
#   --rate HZ      frames per second of the bag (FCN_DEMO_RATE, default 2)
#   --backend B    inference backend of nodes and eval (FCN_DEMO_BACKEND, default auto)
#   FCN_DEMO_SEG_WEIGHTS, FCN_DEMO_DET_WEIGHTS   other weights (default: shipped)
#   ROS_DOMAIN_ID  used if set; otherwise a random domain in 100..199 (DDS discovery
#                  stays on this machine: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${FCN_DEMO_OUT:-out/demo}"
RATE="${FCN_DEMO_RATE:-2}"
BACKEND="${FCN_DEMO_BACKEND:-auto}"
SEG_WEIGHTS="${FCN_DEMO_SEG_WEIGHTS:-}"
DET_WEIGHTS="${FCN_DEMO_DET_WEIGHTS:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --backend) BACKEND="$2"; shift 2 ;;
    -h | --help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done

export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$((100 + RANDOM % 100))}"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export PYTHONUNBUFFERED=1

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

for cmd in fcn-perception segmentation_node detection_node; do
  command -v "$cmd" >/dev/null || die "$cmd not found: run 'make demo' (it sets up .venv first)"
done
# The shipped weights (or the ones given) must be there: the demo downloads nothing.
python - "$SEG_WEIGHTS" "$DET_WEIGHTS" <<'EOF' || exit 1
import sys
from fcn_perception.card import DEFAULT_WEIGHTS, read_card
for task, given in zip(("segmentation", "detection"), sys.argv[1:]):
    path = given or DEFAULT_WEIGHTS[task]
    try:
        read_card(path)
        open(path, "rb").close()
    except (OSError, ValueError) as exc:
        sys.exit(f"demo: the {task} weights are missing or unreadable ({exc})")
EOF

rm -rf "$OUT"
mkdir -p "$OUT/logs"
BAG="$OUT/camvid_sample_bag"
REC="$OUT/recorded_bag"
START=$(date +%s)
seg_args=(); det_args=(); eval_args=()
[ -n "$SEG_WEIGHTS" ] && seg_args=(-p "model:=$SEG_WEIGHTS") && eval_args+=(--seg-weights "$SEG_WEIGHTS")
[ -n "$DET_WEIGHTS" ] && det_args=(-p "model:=$DET_WEIGHTS") && eval_args+=(--det-weights "$DET_WEIGHTS")

PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM
alive() { # name pid log: fail with the log's tail if the process has exited
  kill -0 "$2" 2>/dev/null && return 0
  echo "demo: $1 stopped unexpectedly; the end of $3:" >&2
  tail -n 20 "$3" >&2
  exit 1
}

step "1/5 Build a rosbag from the bundled CamVid frames"
run fcn-perception bag make --data fcn_perception/data/camvid_sample --split val.txt \
  --out "$BAG" --rate "$RATE"

step "2/5 Start the nodes and the recorder (ROS_DOMAIN_ID=$ROS_DOMAIN_ID)"
# score_threshold 0: publish every detection the model keeps (its own threshold), so
# that mAP covers the whole precision-recall curve, as in the offline evaluation.
common=(--ros-args -r image:=/camera/image_raw -p "backend:=$BACKEND")
printf '$ segmentation_node %s\n' "${common[*]} ${seg_args[*]}"
segmentation_node "${common[@]}" "${seg_args[@]}" >"$OUT/logs/segmentation_node.log" 2>&1 &
PIDS+=($!); SEG_PID=$!
printf '$ detection_node %s\n' "${common[*]} -p score_threshold:=0.0 ${det_args[*]}"
detection_node "${common[@]}" -p score_threshold:=0.0 "${det_args[@]}" \
  >"$OUT/logs/detection_node.log" 2>&1 &
PIDS+=($!); DET_PID=$!
# /diagnostics: the report names the backend each node ran on
printf '$ fcn-perception bag record /segmentation/labels /detections /camera/image_raw /diagnostics --out %s ...\n' "$REC"
fcn-perception bag record /segmentation/labels /detections /camera/image_raw /diagnostics \
  --wait-for /segmentation/labels /detections --out "$REC" --idle-timeout 10 \
  --wait-timeout 300 --ready-file "$OUT/logs/recorder.ready" >"$OUT/logs/record.log" 2>&1 &
PIDS+=($!); REC_PID=$!
printf 'waiting for the nodes to load their models and the recorder to connect'
for _ in $(seq 600); do
  [ -f "$OUT/logs/recorder.ready" ] && break
  alive segmentation_node "$SEG_PID" "$OUT/logs/segmentation_node.log"
  alive detection_node "$DET_PID" "$OUT/logs/detection_node.log"
  alive "bag record" "$REC_PID" "$OUT/logs/record.log"
  printf '.'; sleep 0.5
done
[ -f "$OUT/logs/recorder.ready" ] || die "the recorder did not connect in 300 s (see $OUT/logs)"
echo " ready after $(($(date +%s) - START)) s"

step "3/5 Play the bag through the nodes"
run fcn-perception bag play "$BAG" --topics /camera/image_raw --wait-for-subscribers 3 --delay 1
echo "waiting for the last answers (the recorder stops 10 s after the last message)"
wait "$REC_PID" || die "the recorder failed: $(tail -n 5 "$OUT/logs/record.log")"
tail -n 1 "$OUT/logs/record.log"
cleanup
PIDS=()

step "4/5 Evaluate the live run (and the same bag offline, every frame)"
run fcn-perception bag eval "$BAG" --predictions "$REC" --json "$OUT/live_metrics.json" \
  --report "$OUT/report" "${eval_args[@]}" --quiet
run fcn-perception bag eval "$BAG" --json "$OUT/offline_metrics.json" \
  --report "$OUT/offline_report" --backend "$BACKEND" "${eval_args[@]}" --quiet

step "5/5 Done in $(($(date +%s) - START)) s"
python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
live = json.loads((out / "live_metrics.json").read_text())
off = json.loads((out / "offline_metrics.json").read_text())
fr = live["frames"]
print(f"frames played: {fr['scored']}; answered / dropped: segmentation "
      f"{fr['segmentation_answered']} / {fr['segmentation_dropped']}, detection "
      f"{fr['detection_answered']} / {fr['detection_dropped']}")
print(f"{'':24s}{'live (drops = misses)':>24s}{'offline (every frame)':>24s}")
for key, name in (("mean_iou", "mean IoU"), ("pixel_accuracy", "pixel accuracy"),
                  ("mean_accuracy", "mean accuracy"), ("fw_iou", "frequency-weighted IoU")):
    print(f"  {name:22s}{live['segmentation'][key]:24.4f}{off['segmentation'][key]:24.4f}")
for key, name in (("map50", "detection mAP@0.5"), ("map", "detection mAP@[.5:.95]")):
    print(f"  {name:22s}{live['detection'][key]:24.4f}{off['detection'][key]:24.4f}")
for task in ("segmentation", "detection"):
    a, b = live["latency_ms"].get(task), off["latency_ms"].get(task)
    if a and b:
        print(f"  {task + ' p50 ms':22s}{a['p50']:24.1f}{b['p50']:24.1f}")
print("  (live latency: end to end over DDS; offline: the predictor call)")
print(f"\nReport: {Path(live['report']).resolve()}")
print(f"Offline report: {Path(off['report']).resolve()}")
print(f"Metrics: {(out / 'live_metrics.json').resolve()}, "
      f"{(out / 'offline_metrics.json').resolve()}")
EOF
