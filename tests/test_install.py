"""`pip install -e .` (pyproject.toml) puts rsrnn_jax on the path: in a fresh venv, from another directory,
``rsrnn_jax.load(workdir)`` restores a trained workdir. Fast: the fresh venv sees the project venv's packages
through a .pth file and pip installs only this project (--no-deps); pip builds it in an isolated environment with
setuptools from the configured index (PyPI or a local mirror: the only download, about 1 MB)."""
import os
import pathlib
import shlex
import subprocess
import sys
import sysconfig

import pytest

from rsrnn_jax import run
from tests.helpers import tiny_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_pip_install_editable_then_load_from_another_directory(tiny_data, tmp_path):
  c = tiny_config(**{"train.num_train_steps": 1})
  c.data.source_dir, c.data.data_dir = tiny_data["source_dir"], tiny_data["data_dir"]
  workdir = str(tmp_path / "work")
  run.main(c, workdir, "train")

  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  python = venv / "bin" / "python"
  site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        check=True, capture_output=True, text=True).stdout.strip()
  pathlib.Path(site, "project_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
  subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
                  "-e", str(ROOT)], check=True, cwd=tmp_path)
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"JAX_PLATFORMS": "cpu"}
  script = ("import rsrnn_jax; m = rsrnn_jax.load(%r); print(rsrnn_jax.__file__); print(m.step)" % workdir)
  out = subprocess.run([str(python), "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True)
  assert out.returncode == 0, out.stderr[-2000:]
  where, step = out.stdout.strip().splitlines()[-2:]
  assert pathlib.Path(where).resolve().is_relative_to(ROOT / "rsrnn_jax") and step == "1"


@pytest.mark.parametrize("target,module", [("demo", "launch.py"), ("reproduce", "rsrnn_jax.reproduction.run")])
def test_make_targets_pass_every_xla_flag_in_one_variable(target, module):
  """`make demo` / `make reproduce` run ``XLA_FLAGS="…" python …``: the shell must see one assignment holding
  every flag of DEMO_XLA_FLAGS (unquoted, the second flag became the command: 'not found', session 11)."""
  out = subprocess.run(["make", "-n", "--always-make", target], cwd=ROOT, check=True, capture_output=True,
                       text=True).stdout
  line = next(l for l in out.splitlines() if module in l)
  words = shlex.split(line)
  assert words[0].startswith("XLA_FLAGS=") and words[1].endswith("python"), line
  flags = words[0].split("=", 1)[1].split()
  assert "--xla_force_host_platform_device_count=2" in flags
  assert {"--xla_cpu_collective_call_terminate_timeout_seconds=900",
          "--xla_cpu_collective_timeout_seconds=900"} <= set(flags)
