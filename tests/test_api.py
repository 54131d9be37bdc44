"""rsrnn_jax.load(workdir): the notebook API restores what --mode=train wrote and predicts, fixates and attacks."""
import os

import numpy as np
import pytest

import rsrnn_jax
from rsrnn_jax import data, run
from rsrnn_jax.evaluation import clean
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
  c = tiny_config(**{"train.num_train_steps": 2, "train.learning_rate": 1e-2})
  c.data.source_dir, c.data.data_dir = tiny_data["source_dir"], tiny_data["data_dir"]
  workdir = str(tmp_path_factory.mktemp("api") / "work")
  run.main(c, workdir, "train")
  batch = next(data.eval_batches(c.data, global_batch_size=8))
  return c, workdir, batch


def test_load_reads_the_saved_config_and_predicts_like_the_evaluation(trained):
  c, workdir, batch = trained
  m = rsrnn_jax.load(workdir)
  assert m.config.model.to_dict() == c.model.to_dict()
  assert m.step == 2
  out = m.predict(batch["image"], steps=5)
  assert out["logits"].shape == (5, 8, m.num_classes)
  model, state, _, _ = clean.load_model(c, workdir)
  from rsrnn_jax.train import state as train_state
  ref = clean.predict(model, train_state.variables_of(state), batch["image"], num_steps=5)
  np.testing.assert_allclose(out["logits"], np.asarray(ref["logits"]), rtol=1e-5, atol=1e-5)
  fix = m.fixations(batch["image"], steps=5)
  assert fix.shape == (5, 8, 2) and np.all(np.abs(fix) <= 1.0)


def test_attack_stays_in_the_eps_ball_and_lowers_the_true_class_logit(trained):
  _, workdir, batch = trained
  m = rsrnn_jax.load(workdir)
  x, y = batch["image"], batch["label"]
  adv = m.attack(x, y, eps=0.05, attack_step=3)
  assert adv.shape == x.shape
  assert np.max(np.abs(adv - x)) <= 0.05 + 1e-6 and adv.min() >= 0.0 and adv.max() <= 1.0
  margin = lambda z: np.take_along_axis(z, y[:, None], 1)[:, 0] - np.max(
      np.where(np.eye(z.shape[1], dtype=bool)[y], -np.inf, z), 1)
  clean_z, adv_z = m.predict(x, steps=3)["logits"][2], m.predict(adv, steps=3)["logits"][2]
  assert np.mean(margin(adv_z)) < np.mean(margin(clean_z))


def test_load_says_what_to_do_without_a_trained_workdir_or_with_wrong_images(trained, tmp_path):
  with pytest.raises(FileNotFoundError, match="--mode=train"):
    rsrnn_jax.load(str(tmp_path))
  m = rsrnn_jax.load(trained[1])
  with pytest.raises(ValueError, match="images must be"):
    m.predict(np.zeros((2, 5, 5, 1), np.float32))


def _bad_inputs(x, y):
  nan = x.copy()
  nan[0, 0, 0] = np.nan
  return [
      ("predict", dict(images=nan), "images hold 1 NaN/Inf"),
      ("predict", dict(images=(x * 255).astype(np.uint8)), "images must be floats .*got dtype uint8: divide"),
      ("predict", dict(images=x * 255), r"images must be in \[0, 1\], got values in .*divide by 255"),
      ("predict", dict(images=x[:0]), r"images must be \[B, 32, 32, 1\] with B >= 1, got shape \(0, 32, 32, 1\)"),
      ("predict", dict(images="cat"), "images must be floats .*got dtype <U3"),
      ("predict", dict(images=x, steps=-1), "steps must be an integer >= 1, got -1"),
      ("predict", dict(images=x, steps=0), "steps must be an integer >= 1, got 0"),
      ("fixations", dict(images=x, steps=2.5), "steps must be an integer >= 1, got 2.5"),
      ("attack", dict(images=x, labels=np.full_like(y, 10), eps=0.03), r"labels must be in \[0, 10\), got .* 10\]"),
      ("attack", dict(images=x, labels=y - y - 1, eps=0.03), r"labels must be in \[0, 10\), got values in \[-1"),
      ("attack", dict(images=x, labels=y.astype(np.float32), eps=0.03), "labels must be 8 integer class ids"),
      ("attack", dict(images=x, labels=y[:3], eps=0.03), r"labels must be 8 integer class ids .*shape \(3,\)"),
      ("attack", dict(images=x, labels=y, eps=1.5), r"eps must be a number in \[0, 1\) .*got 1.5"),
      ("attack", dict(images=x, labels=y, eps=float("nan")), r"eps must be a number in \[0, 1\)"),
      ("attack", dict(images=x, labels=y, eps=-0.1), r"eps must be a number in \[0, 1\)"),
      ("attack", dict(images=x, labels=y, eps=0.03, attack_step=0), "attack_step must be an integer >= 1, got 0"),
      ("attack", dict(images=nan, labels=y, eps=0.03), "images hold 1 NaN/Inf"),
  ]


def test_bad_inputs_are_one_line_value_errors_naming_the_argument(trained):
  _, workdir, batch = trained
  m = rsrnn_jax.load(workdir)
  for method, kwargs, pattern in _bad_inputs(np.asarray(batch["image"]), np.asarray(batch["label"])):
    with pytest.raises(ValueError, match=pattern) as info:
      getattr(m, method)(**kwargs)
    assert "\n" not in str(info.value), (method, kwargs)


@pytest.mark.parametrize("content,pattern", [
    (b"\xff\xfe garbage \x00", r"cannot parse .*config.json .*damaged or half-written; restore it .*or pass config="),
    (b'{"model": {"name": "rsrnn", "sampler"', r"cannot parse .*config.json"),
    (b"{}", r"config.json is not a config written by --mode=train \(no model, train, eval, data section\)"),
])
def test_load_names_the_config_json_it_cannot_parse(trained, tmp_path, content, pattern):
  import shutil
  workdir = shutil.copytree(trained[1], str(tmp_path / "work"), ignore=shutil.ignore_patterns(".lock"))
  with open(os.path.join(workdir, "config.json"), "wb") as f:
    f.write(content)
  with pytest.raises(ValueError, match=pattern) as info:
    rsrnn_jax.load(workdir)
  assert "\n" not in str(info.value)
