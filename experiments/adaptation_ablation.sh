#!/usr/bin/env bash
# Adaptation ablation on Navigation2D (the adaptation issue): variants x seeds, each trained with
# `mcrl train` and evaluated on the held-out test goals and on ood goals after 0..5 steps.
# Resumable: a finished run is skipped, an interrupted one continues from its checkpoint.
# Small state (config, metrics, evals, latest checkpoint) is copied to
# experiments/results/adaptation/VARIANT/seedN/. Usage: bash experiments/adaptation_ablation.sh [ITERATIONS]
set -euo pipefail
ITERATIONS=${1:-200}
declare -A VARIANTS=(
  [two_steps_learned_lr]="--set inner_steps=2 --set learn_inner_lr=true"
  [two_steps_learned_lr_pd]="--set inner_steps=2 --set learn_inner_lr=true --set curvature_parametrization=pd"
)
for variant in two_steps_learned_lr two_steps_learned_lr_pd; do
  for seed in 0 1 2; do
    run=runs/adaptation/$variant/seed$seed
    keep=experiments/results/adaptation/$variant/seed$seed
    if [ -f "$keep/eval_ood.json" ]; then continue; fi
    resume=""; [ -f "$run/checkpoints/latest.pt" ] && resume="--resume"
    # shellcheck disable=SC2086
    mcrl train experiments/navigation2d.yaml --out "$run" $resume --no-progress \
      --set iterations="$ITERATIONS" --set seed="$seed" --set eval_every=50 \
      --set policy.action_scaling=none ${VARIANTS[$variant]}  # the env's units, as when it ran
    mcrl evaluate "$run" --split test --tasks 40 --steps 5 --json > "$run/eval_test.json"
    mcrl evaluate "$run" --split ood --tasks 40 --steps 5 --json > "$run/eval_ood.json"
    mkdir -p "$keep/checkpoints"
    cp "$run/config.yaml" "$run/metrics.csv" "$run/eval_test.json" "$keep/"
    cp "$run/checkpoints/latest.pt" "$keep/checkpoints/"
    cp "$run/eval_ood.json" "$keep/"  # last: its presence marks the run as done
  done
done
