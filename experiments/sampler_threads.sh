#!/usr/bin/env bash
# The native MuJoCo sampler's thread curve on a larger machine (from the repository root):
# HalfCheetahVel 40 tasks x 20 episodes and AntDir 20 x 10, 1..16 threads, in one run each (the
# single-env loop and the bare-simulator limit measured once per family). JSON lines to
# $OUT/sampler_threads.jsonl (default OUT: experiments/results/gpu).
set -uo pipefail
OUT=${OUT:-experiments/results/gpu}
source experiments/device_env.sh
python3 -c "import os; print('cpus', len(os.sched_getaffinity(0)))"
python3 -m mcrl bench sampler --family HalfCheetahVel --tasks 40 --episodes 20 \
  --threads 1 2 4 8 16 --json | tee -a "$OUT/sampler_threads.jsonl"
python3 -m mcrl bench sampler --family AntDir --tasks 20 --episodes 10 \
  --threads 1 4 16 --json | tee -a "$OUT/sampler_threads.jsonl"
