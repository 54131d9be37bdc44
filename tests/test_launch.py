"""launch.py and configs: bad input fails early with one line; every config runs (ImageNet under mock data)."""
import os
import re
import subprocess
import sys

import jax
import pytest
import tensorflow_datasets as tfds

from configs import coco, demo, imagenet
from rsrnn_jax import configlib, run
from rsrnn_jax.models import MODELS
from tests.helpers import override

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _launch(*args, env=None, timeout=300):
  return subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout, env={**os.environ, "XLA_FLAGS": "", **(env or {})})


@pytest.mark.parametrize("override,pattern", [
    ("--config.train.num_train_steps=-3", "num_train_steps must be a positive integer"),
    ("--config.model.sampler.density_ratio=0.5", "density_ratio"),
    ("--config.model.name=resnet", "model.name='resnet' is unknown"),
    ("--config.train.adversarial.enabled=True", "adversarial.eps must be > 0"),
])
def test_impossible_values_exit_with_one_line_before_writing(tmp_path, override, pattern):
  workdir = tmp_path / "run"
  r = _launch("--config=configs/demo.py", f"--workdir={workdir}", override)
  assert r.returncode == 2, r.stderr
  err = [line for line in r.stderr.strip().splitlines() if line.startswith("error:")]
  assert len(err) == 1 and pattern in err[0], r.stderr
  assert not workdir.exists()


@pytest.mark.parametrize("args,pattern", [
    (["--config=configs/demo.py", "--config.train.no_such_key=1"],
     "--config.train.no_such_key: no such config field 'no_such_key'"),
    (["--config=configs/demo.py", "--config.train.batch_size=abc"], "--config.train.batch_size=abc: invalid literal"),
    (["--config=configs/no_such_file.py"], "cannot load --config=configs/no_such_file.py: [Errno 2] No such file"),
    (["--config=configs/demo.py:model=resnet"], "unknown model 'resnet'"),
    (["--config=configs/demo.py", "--stop_at=tonight"], "--stop_at expects HH:MM"),
    (["--config=configs/demo.py", "--mode=eval", "--stop_at=+1h"], "--stop_at applies to --mode=train only"),
])
def test_config_file_key_or_type_errors_are_one_line_before_writing(tmp_path, args, pattern):
  workdir = tmp_path / "run"
  r = _launch(*args, f"--workdir={workdir}")
  assert r.returncode == 2, r.stderr
  assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr
  assert r.stderr.startswith("error: ") and pattern in r.stderr, r.stderr
  assert not workdir.exists()


def test_debug_flag_shows_the_traceback(tmp_path):
  r = _launch("--config=configs/no_such_file.py", f"--workdir={tmp_path}", "--debug")
  assert r.returncode == 2 and "Traceback" in r.stderr and "error: cannot load" in r.stderr


def test_bad_mode_and_missing_workdir(tmp_path):
  with pytest.raises(ValueError, match="--mode"):
    run.main(demo.get_config(), str(tmp_path), "dance")
  with pytest.raises(ValueError, match="--workdir is required"):
    run.main(demo.get_config(), "", "train")


@pytest.mark.parametrize("field,value,pattern", [
    ("model.dorsal.ior_floor", 1.0, "ior_floor must be in [0, 1)"),
    ("model.dorsal.combine", "sum", "combine must be 'log' or 'product'"),
    ("train.rl_reward", "logprob", "rl_reward must be 'correct' or 'prob'"),
])
def test_validate_names_the_bad_field(field, value, pattern):
  """The same checks launch.py runs (above, through a subprocess), called directly."""
  c = demo.get_config()
  configlib.set_dotted(c, {field: value})
  with pytest.raises(ValueError, match=re.escape(pattern)):
    configlib.validate(c)


@pytest.mark.parametrize("module,arg", [(m, a) for m in (demo, imagenet)
                                        for a in ["", "attack=strong"] + [f"model={n}" for n in MODELS]]
                         + [(demo, "model=ff_cnn_at"), (coco, ""), (coco, "model=ff_cnn")])
def test_every_config_variant_validates(module, arg):
  c = module.get_config(arg)
  configlib.validate(c)
  name = dict(kv.split("=") for kv in arg.split(",") if kv).get("model", "rsrnn")
  assert c.model.name == {"ff_cnn_at": "ff_cnn"}.get(name, name)


@pytest.mark.slow
def test_imagenet_config_trains_one_step_and_evaluates_under_mock_data(tmp_path):
  # The paper's architecture and input size; only the run length and batch are shrunk.
  c = override(imagenet.get_config(), {
      "data.data_dir": str(tmp_path / "tfds"), "data.num_workers": 0, "model.dtype": "float32",
      "compilation_cache_dir": "",  # keep the test suite's cache (conftest.py), not ~/.cache
      "train.batch_size": 4, "train.num_train_steps": 1, "train.warmup_steps": 0, "train.num_glimpses": 2,
      "eval.num_glimpses": 3, "eval.batch_size": 4, "eval.max_examples": 4, "eval.num_figure_images": 2})
  with tfds.testing.mock_data(num_examples=8):
    results = run.main(c, str(tmp_path / "work"), "train")
    again = run.main(c, str(tmp_path / "work"), "eval")
  assert len(results["accuracy_per_step"]) == 3 and results["num_examples"] == 4
  assert again["accuracy_per_step"] == results["accuracy_per_step"]
  assert os.path.exists(tmp_path / "work" / "checkpoints" / "1")
