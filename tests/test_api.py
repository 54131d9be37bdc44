"""rsrnn_jax.load(workdir): the notebook API restores what --mode=train wrote and predicts, fixates and attacks."""
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
