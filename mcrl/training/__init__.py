"""The training loop, the fourth layer: building a run from its config, meta-training,
checkpoints, held-out evaluation, and adapting a trained policy to one env."""
