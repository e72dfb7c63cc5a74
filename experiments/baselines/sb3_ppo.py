"""stable-baselines3 PPO baselines for the adaptation tables, reported in eval.json format.

- ``scratch``: on each held-out task, PPO from a fresh initialisation, one PPO update per
  "adaptation step" on as many env steps as one mcrl step samples (episodes x horizon).
- ``multitask``: PPO pre-trained on tasks of the training split (a new task at every reset),
  then fine-tuned on each held-out task exactly as ``scratch`` (the strong baseline of Mandi et
  al. 2022, "On the effectiveness of fine-tuning versus meta-RL").

``returns[k]`` is the mean return of ``--episodes`` fresh episodes of the stochastic policy after
k updates, averaged over tasks, with a 95% CI over tasks, like ``mcrl evaluate``::

    python experiments/baselines/sb3_ppo.py scratch --family Navigation2D --tasks 20 --steps 3 \\
        --out experiments/results/baselines/navigation2d_scratch.json
    python experiments/baselines/sb3_ppo.py multitask --family Navigation2D --pretrain-steps 400000 \\
        --out experiments/results/baselines/navigation2d_multitask.json

Long pre-training survives an interruption with ``--pretrain-dir DIR``: the model is saved there
every ``--checkpoint-every`` env steps, the same command continues from it, and once it has
``--pretrain-steps`` a rerun (another split, more tasks) fine-tunes it without pre-training again.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from torch import nn

from mcrl.common.threads import configure_torch_threads
from mcrl.tasks import Task, TaskFamily, make_family
from mcrl.training.evaluation import eval_record


class TaskResamplingEnv(gym.Wrapper):
    """One env that moves to a new training task of the family at every reset."""

    def __init__(self, family: TaskFamily, seed: int | list[int]):
        self.family = family
        self.rng = np.random.default_rng(seed)
        first = Task(family.name, "train", 0, family.sample_params(self.rng, "train"))
        super().__init__(family.make_env(first))

    def reset(self, **kwargs):
        params = self.family.sample_params(self.rng, "train")
        self.family.set_task(self.env, Task(self.family.name, "train", 0, params))
        return self.env.reset(**kwargs)


def new_ppo(env: gym.Env, args: argparse.Namespace, horizon: int) -> PPO:
    n_steps = args.episodes * horizon
    return PPO(
        "MlpPolicy",
        env,
        n_steps=n_steps,
        batch_size=min(64, n_steps),
        policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": nn.Tanh},
        seed=args.seed,
        device="cpu",
        verbose=0,
    )


def pretrain(family: TaskFamily, args: argparse.Namespace, horizon: int) -> tuple[Path, int]:
    """Multi-task PPO on the training split, saved every ``--checkpoint-every`` env steps to
    ``--pretrain-dir`` (a fresh temporary folder without one) and continued from what is there;
    the saved model and its env steps."""
    directory = Path(args.pretrain_dir) if args.pretrain_dir else Path(tempfile.mkdtemp())
    directory.mkdir(parents=True, exist_ok=True)
    saved, settings_file = directory / "pretrained.zip", directory / "pretrain.json"
    settings = {
        "family": family.name,
        "horizon": horizon,
        "episodes": args.episodes,
        "seed": args.seed,
    }
    if saved.is_file():
        kept = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
        if kept != settings:
            raise ValueError(
                f"--pretrain-dir {directory} holds a model pre-trained with {kept or 'unknown settings'}, "
                f"not {settings}; pass another --pretrain-dir"
            )
        model = PPO.load(saved, device="cpu")
        # A new stream of training tasks: the one before the interruption is not restored.
        model.set_env(TaskResamplingEnv(family, [args.seed, model.num_timesteps]))
    else:
        model = new_ppo(TaskResamplingEnv(family, args.seed), args, horizon)
        settings_file.write_text(json.dumps(settings))
    start, started = model.num_timesteps, time.perf_counter()
    while model.num_timesteps < args.pretrain_steps:
        chunk = min(args.checkpoint_every, args.pretrain_steps - model.num_timesteps)
        model.learn(chunk, reset_num_timesteps=False)
        partial = directory / "pretrained.partial.zip"
        model.save(partial)
        partial.replace(saved)  # a model half written is never the one kept
        rate = (model.num_timesteps - start) / (time.perf_counter() - started)
        print(
            f"pretrain: {model.num_timesteps}/{args.pretrain_steps} env steps "
            f"({rate:.0f}/s), saved to {saved}",
            file=sys.stderr,
        )
    return saved, model.num_timesteps


def fine_tune(
    model: PPO, env: gym.Env, args: argparse.Namespace, horizon: int
) -> tuple[list[float], int]:
    """Mean return of fresh episodes after 0..steps PPO updates on ``env``, and the env steps
    taken (updates and evaluation episodes)."""
    model.set_env(env)
    returns, env_steps = [], 0
    for step in range(args.steps + 1):
        if step > 0:
            model.learn(args.episodes * horizon, reset_num_timesteps=step == 1)
            env_steps += args.episodes * horizon
        episode_returns, lengths = evaluate_policy(
            model,
            env,
            n_eval_episodes=args.episodes,
            deterministic=False,
            return_episode_rewards=True,
        )
        returns.append(float(np.mean(episode_returns)))
        env_steps += int(np.sum(lengths))
    return returns, env_steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", choices=["scratch", "multitask"])
    parser.add_argument("--family", required=True)
    parser.add_argument("--split", choices=["test", "ood"], default="test")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3, help="PPO updates K (as adaptation steps)")
    parser.add_argument("--episodes", type=int, default=20, help="episodes per update")
    parser.add_argument("--horizon", type=int, help="default: the family's")
    parser.add_argument("--pretrain-steps", type=int, default=400_000, help="multitask only")
    parser.add_argument(
        "--pretrain-dir", help="multitask: keep the pre-trained model here and continue from it"
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=50_000, help="multitask: env steps between saves"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help="eval.json-format output file")
    args = parser.parse_args(argv)
    configure_torch_threads(1)

    family = make_family(args.family, **({"horizon": args.horizon} if args.horizon else {}))
    horizon = family.horizon
    start = time.perf_counter()
    pretrained = None
    pretrain_steps = 0
    if args.baseline == "multitask":
        try:
            pretrained, pretrain_steps = pretrain(family, args, horizon)
        except ValueError as exc:
            print(f"sb3_ppo: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            kept = (
                f"the last checkpoint in {args.pretrain_dir} is kept: the same command continues"
                if args.pretrain_dir
                else "nothing kept (--pretrain-dir keeps it)"
            )
            print(f"sb3_ppo: interrupted while pre-training; {kept}", file=sys.stderr)
            return 130

    tasks = family.sample_tasks(args.tasks, split=args.split, seed=args.seed)
    returns = np.zeros((args.steps + 1, len(tasks)))
    env_steps = 0
    for i, task in enumerate(tasks):
        env = family.make_env(task)
        model = (
            new_ppo(env, args, horizon)
            if pretrained is None
            else PPO.load(pretrained, device="cpu")
        )
        returns[:, i], steps = fine_tune(model, env, args, horizon)
        env_steps += steps
        env.close()
        print(
            f"task {i + 1}/{len(tasks)}: " + " → ".join(f"{r:.1f}" for r in returns[:, i]),
            file=sys.stderr,
        )

    record = eval_record(returns, split=args.split, episodes=args.episodes, env_steps=env_steps)
    record |= {
        "family": family.name,
        "baseline": f"sb3_ppo_{args.baseline}",
        "pretrain_env_steps": pretrain_steps,
        "wall_s": round(time.perf_counter() - start, 1),
        "command": " ".join(["python", *sys.argv]),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2))
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
