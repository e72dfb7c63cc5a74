# Sourced by the scripts that run on a lent machine without network access: installs the
# carried wheels of what the machine lacks (.whl/: gymnasium, farama-notifications, mujoco,
# mujoco-core, glfw, pyopengl) and puts mcrl and its families (envs/ as mcrl_envs) on the path
# without installing the package. Ray is not needed: these runs use the in-process sampler.
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
mkdir -p /tmp/mcrl-src && ln -sfn "$PWD/mcrl" /tmp/mcrl-src/mcrl && ln -sfn "$PWD/envs" /tmp/mcrl-src/mcrl_envs
export PYTHONPATH=/tmp/mcrl-src:$PWD${PYTHONPATH:+:$PYTHONPATH}
