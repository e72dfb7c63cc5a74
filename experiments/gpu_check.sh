#!/usr/bin/env bash
# The GPU learner's checks, in one run on a machine with a CUDA GPU (from the repository root):
#   1. tests/test_cuda.py: training on the GPU, and meta-steps that match the CPU's;
#   2. `mcrl bench learner` on CUDA for Navigation2D and HalfCheetahVel, also with 4x the tasks,
#      and HalfCheetahVel on that machine's CPU for comparison;
#   3. a 20-iteration HalfCheetahVel training with the GPU learner and CPU rollouts.
# Results go to $OUT (default experiments/results/gpu): learner.jsonl, the training run's
# metrics.csv and eval.json, and logs.
#
# Without network access (the lent GPU machines), carry wheels of what the machine lacks in .whl/
# (gymnasium, farama-notifications, mujoco, mujoco-core, glfw, pyopengl); Ray is not needed here:
# every run uses the in-process sampler.
set -uo pipefail
OUT=${OUT:-experiments/results/gpu}
source experiments/device_env.sh

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, platform; print('torch', torch.__version__, 'python', platform.python_version(), 'cpus', __import__('os').cpu_count())" | tee -a "$OUT/gpu.txt"

echo "== tests/test_cuda.py"
python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/pytest_cuda.txt" | tail -5

echo "== bench learner"
bench() { python3 -m mcrl bench learner "$@" --repeats 3 --json 2>>"$OUT/bench.err" | tee -a "$OUT/learner.jsonl"; }
bench experiments/navigation2d.yaml
bench experiments/navigation2d.yaml --set meta_batch_size=80 --sampled-tasks 20
bench experiments/halfcheetah_vel.yaml --sampled-tasks 8
bench experiments/halfcheetah_vel.yaml --set meta_batch_size=160 --sampled-tasks 8
bench experiments/halfcheetah_vel.yaml --sampled-tasks 8 --set learner.device=cpu

echo "== 20 iterations of HalfCheetahVel: GPU learner, CPU rollouts (10 tasks x 10 episodes)"
RUN=/tmp/gpu-check-train
rm -rf "$RUN"
python3 -m mcrl train experiments/halfcheetah_vel.yaml --out "$RUN" --no-progress \
  --set iterations=20 --set meta_batch_size=10 --set episodes_per_task=10 \
  --set eval_every=10 --set eval_tasks=10 --set checkpoint_every=10 --set sampler.backend=local \
  2>&1 | tee "$OUT/train.log" | tail -4
cp "$RUN/metrics.csv" "$RUN/eval.json" "$OUT/"
python3 - "$OUT/metrics.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
mean = lambda k: sum(float(r[k]) for r in rows[1:]) / (len(rows) - 1)
print(f"{len(rows)} iterations; return {rows[0]['return_post']} -> {rows[-1]['return_post']}; "
      f"mean s/iteration: sample {mean('time_sample_pre') + mean('time_sample_post'):.2f}, "
      f"adapt {mean('time_adapt'):.2f}, meta-step {mean('time_meta_step'):.3f}")
EOF
