#!/usr/bin/env bash
# Benchmark-scale runs on a lent 16-core GPU machine, for a fixed wall time: four `mcrl train`
# runs side by side (4 cores each, GPU learner, in-process native sampler), stopped with SIGINT
# after RUN_SECONDS (each saves its last finished iteration), their small state (config.yaml,
# metrics.csv, checkpoints/latest.pt, eval.json) packed into $OUT/runs.tar.gz. Unpack it under
# experiments/results/ and continue each run anywhere with `mcrl train CONFIG --out DIR --resume`
# plus the same --set flags.
#
#   RUN_SECONDS=480 bash experiments/device_runs.sh
#   EXTRA="--set iterations=2 --set meta_batch_size=2 --set episodes_per_task=2" RUN_SECONDS=60 \
#     bash experiments/device_runs.sh     # a quick check of the script itself
set -uo pipefail
OUT=${OUT:-/tmp/device_runs}
RUN_SECONDS=${RUN_SECONDS:-480}
EXTRA=${EXTRA:-}
ROOT=benchmarks_full/HalfCheetahDir  # the runs' directories, relative to experiments/results/
source experiments/device_env.sh
WORK=/tmp/device_runs_work
rm -rf "$WORK" && mkdir -p "$WORK/$ROOT"
if [ -n "${CUDA_TEST:-}" ]; then  # the CUDA tests, beside the runs (mostly GPU time)
  timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py >"$OUT/pytest_cuda.txt" 2>&1 &
fi
set -m  # background jobs keep the default SIGINT handling, so mcrl saves a checkpoint on it

cpus=$(nproc)
per=$((cpus / 4 > 0 ? cpus / 4 : 1))
slot=0
for curvature in identity kronecker; do
  for seed in 0 1; do
    name=${curvature}_seed${seed}
    first=$((slot * per % cpus)) last=$(((slot * per % cpus) + per - 1))
    pin=(taskset -c "$first-$last")
    command -v taskset >/dev/null || pin=(env)  # then mcrl uses every CPU in each run
    # shellcheck disable=SC2086  # EXTRA is a list of flags
    "${pin[@]}" python3 -m mcrl train experiments/halfcheetah_dir.yaml \
      --out "$WORK/$ROOT/$name" --no-progress --set curvature=$curvature --set seed=$seed \
      --set sampler.backend=local $EXTRA >"$OUT/$name.log" 2>&1 &
    slot=$((slot + 1))
  done
done

deadline=$((SECONDS + RUN_SECONDS))
while [ "$SECONDS" -lt "$deadline" ] && [ -n "$(jobs -r)" ]; do sleep 2; done
for pid in $(jobs -p); do kill -INT "$pid" 2>/dev/null; done
wait
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$OUT/gpu.txt" 2>&1
[ -f "$OUT/pytest_cuda.txt" ] && tail -n 3 "$OUT/pytest_cuda.txt"

for log in "$OUT"/*.log; do echo "== $log"; tail -n 2 "$log"; done
python3 - "$WORK/$ROOT" <<'EOF'
import csv, sys
from pathlib import Path
for run in sorted(Path(sys.argv[1]).iterdir()):
    rows = list(csv.DictReader(open(run / "metrics.csv"))) if (run / "metrics.csv").exists() else []
    if not rows:
        print(f"{run.name}: no iteration finished")
        continue
    t = [sum(float(r[k]) for k in r if k.startswith("time_")) for r in rows[1:]] or [0.0]
    print(f"{run.name}: {len(rows)} iterations, {rows[-1]['env_steps']} env steps, "
          f"return after 0/1 steps {rows[-1]['return_pre']} / {rows[-1]['return_post']}, "
          f"{sum(t) / len(t):.1f} s per iteration")
EOF
cd "$WORK" && tar czf "$OUT/runs.tar.gz" --exclude='*/affinity' --exclude='events.out.*' \
  --exclude='iteration_*.pt' "$ROOT"
ls -la "$OUT"
