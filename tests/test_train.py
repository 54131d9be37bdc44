"""Training: losses, the data-parallel step (1 vs 4 devices), checkpoint save/restore and resume."""
import json
import logging
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsrnn_jax import attacks, data, run
from rsrnn_jax.train import checkpoints
from rsrnn_jax.train import loop as train_loop
from rsrnn_jax.evaluation import clean as evaluate
from rsrnn_jax.attacks import objectives
from rsrnn_jax.train import losses as train_losses
from rsrnn_jax.train import state as train_state
from rsrnn_jax.train import step as train_step
from rsrnn_jax.train import writers
from rsrnn_jax.models import MODELS, build_model
from tests.helpers import tiny_config


def _config(tiny_data, **overrides):
  c = tiny_config(**overrides)
  c.data.source_dir = tiny_data["source_dir"]
  c.data.data_dir = tiny_data["data_dir"]
  return c


# --------------------------------------------------------------------------------------------------- losses

def test_reinforce_loss_matches_hand_computation():
  # T=3, B=2, 2 classes. Correct: ex0 at steps [1,0,1], ex1 at [0,1,1].
  logits = jnp.array([[[2., 0.], [2., 0.]],
                      [[0., 2.], [0., 2.]],
                      [[2., 0.], [0., 2.]]])
  labels = jnp.array([0, 1])
  log_probs = jnp.array([[-1., -2.], [-0.5, -1.5], [-9., -9.]])
  baselines = jnp.array([[0.25, 0.5], [0.0, 1.0], [3., 3.]])
  mask = jnp.ones(2)
  policy, base = train_losses.reinforce_loss(logits, labels, log_probs, baselines, mask)
  # Returns G_t = mean correctness of steps > t: ex0: G0=(0+1)/2=.5, G1=1; ex1: G0=(1+1)/2=1, G1=1.
  # Advantages: ex0: .5-.25=.25, 1-0=1; ex1: 1-.5=.5, 1-1=0.
  want_policy = -(0.25 * -1 + 1 * -0.5 + 0.5 * -2 + 0 * -1.5) / 4
  want_base = (0.25 ** 2 + 1 ** 2 + 0.5 ** 2 + 0 ** 2) / 4
  np.testing.assert_allclose(policy, want_policy, rtol=1e-6)
  np.testing.assert_allclose(base, want_base, rtol=1e-6)
  # Centred: the advantages minus their batch mean per step (step 0: .25, .5 → −.125, .125; step 1: 1, 0 → .5, −.5).
  centred, base_c = train_losses.reinforce_loss(logits, labels, log_probs, baselines, mask, center_advantage=True)
  np.testing.assert_allclose(centred, -(-0.125 * -1 + 0.5 * -0.5 + 0.125 * -2 + -0.5 * -1.5) / 4, rtol=1e-6)
  np.testing.assert_allclose(base_c, want_base, rtol=1e-6)
  # A lagging baseline (0 while every example is right) pushes every taken action up; centred, nothing moves.
  all_right = jnp.array([[[2., 0.], [0., 2.]]] * 3)
  g = jax.grad(lambda lp, c: train_losses.reinforce_loss(all_right, labels, lp, jnp.zeros_like(baselines), mask,
                                                 center_advantage=c)[0])
  assert np.all(np.asarray(g(log_probs, False))[:-1] < 0)
  np.testing.assert_allclose(g(log_probs, True), 0.0, atol=1e-7)
  # Dense reward: r_s = p_s(y); ex0's p at steps 1..3 = σ(2), σ(−2), σ(2); ex1's = σ(−2), σ(2), σ(2).
  hi, lo = 1 / (1 + np.exp(-2.0)), 1 / (1 + np.exp(2.0))
  dense, base_p = train_losses.reinforce_loss(logits, labels, log_probs, baselines, mask, reward="prob")
  adv = [[(lo + hi) / 2 - 0.25, (hi + hi) / 2 - 0.5], [hi - 0.0, hi - 1.0]]  # [t, example]
  np.testing.assert_allclose(dense, -(adv[0][0] * -1 + adv[1][0] * -0.5 + adv[0][1] * -2 + adv[1][1] * -1.5) / 4,
                             rtol=1e-5)
  np.testing.assert_allclose(base_p, sum(a * a for row in adv for a in row) / 4, rtol=1e-5)
  # The rewards carry no gradient into the classifier (only the baseline term would reach it otherwise).
  g_logits = jax.grad(lambda lg: train_losses.reinforce_loss(lg, labels, log_probs, baselines, mask, reward="prob")[1])
  np.testing.assert_array_equal(g_logits(logits), 0.0)
  # The last step's action is never rewarded; a single step has no policy loss.
  p1, b1 = train_losses.reinforce_loss(logits[:1], labels, log_probs[:1], baselines[:1], mask)
  assert float(p1) == 0.0 and float(b1) == 0.0


def test_classification_loss_all_vs_last_steps_and_mask():
  logits = jnp.array([[[5., 0.]], [[0., 5.]]])  # step 1 right, step 2 wrong for label 0
  labels = jnp.array([0])
  all_steps = train_losses.classification_loss(logits, labels, jnp.ones(1), "all")
  last = train_losses.classification_loss(logits, labels, jnp.ones(1), "last")
  assert float(last) > float(all_steps) > 0
  padded = train_losses.classification_loss(jnp.concatenate([logits, logits], 1), jnp.array([0, 1]),
                                     jnp.array([1., 0.]), "all")
  np.testing.assert_allclose(padded, all_steps, rtol=1e-6)


@pytest.mark.parametrize("model", MODELS)
def test_train_step_decreases_loss_on_a_fixed_batch(tiny_data, model):
  c = _config(tiny_data, model=model, **{"train.learning_rate": 2e-2, "train.warmup_steps": 0,
                                         "train.num_train_steps": 1000})
  model, info = train_state.model_from_config(c)
  state = train_state.init_state(model, c, info.image_shape, jax.random.key(0))
  batch = {k: jnp.asarray(v) for k, v in next(data.train_batches(c.data, global_batch_size=16, seed=0)).items()}
  step = jax.jit(lambda s, b, r: train_step.train_step(s, b, r, config=c))
  losses = []
  for i in range(30):
    state, m = step(state, batch, jax.random.key(0))  # same key: same fixations, a fixed objective
    losses.append(float(m["ce"]))
  assert losses[-1] < 0.8 * losses[0], losses


# ---------------------------------------------------------------------------------------- data parallelism

def _run(c, workdir):
  evaluate.train_and_evaluate(c, str(workdir))
  return writers.read_metrics(str(workdir))


@pytest.mark.parametrize("model", ["rsrnn", "s3ta", "ff_cnn"])
def test_one_and_four_devices_give_the_same_training(tiny_data, tmp_path, model):
  assert jax.device_count() == 4
  c = _config(tiny_data, model=model, **{"train.log_every": 1})
  if model in ("ff_cnn", "s3ta"):
    c.model.norm = "batch"  # global BatchNorm statistics under jit must not depend on the device count
  runs = []
  for n in (1, 4):
    c.num_devices = n
    runs.append(_run(c, tmp_path / f"d{n}"))
  for a, b in zip(*runs):
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(a["accuracy_per_step"], b["accuracy_per_step"], atol=1e-6)
  assert len(runs[0]) == c.train.num_train_steps


# --------------------------------------------------------------------------------------------- checkpoints

class _Interrupt(Exception):
  pass


def test_resume_after_interruption_matches_an_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
  c = _config(tiny_data, **{"train.num_train_steps": 4, "train.checkpoint_every": 2})
  _run(c, tmp_path / "straight")

  real = data.train_batches

  def dies_after_three(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
      if i == 3:
        raise _Interrupt()  # after steps 1..3: checkpoint 2 exists, step 3 is lost
      yield batch

  monkeypatch.setattr(data, "train_batches", dies_after_three)
  with pytest.raises(_Interrupt):
    _run(c, tmp_path / "resumed")
  monkeypatch.setattr(data, "train_batches", real)
  mgr = checkpoints.manager(str(tmp_path / "resumed"), c)
  assert mgr.all_steps() == [2]
  _run(c, tmp_path / "resumed")  # the same command again continues from step 2

  def final_params(workdir):
    model, info = train_state.model_from_config(c)
    like = train_state.init_state(model, c, info.image_shape, jax.random.key(1))
    m = checkpoints.manager(str(workdir), c)
    return checkpoints.restore(m, m.latest_step(), like)

  a, b = final_params(tmp_path / "straight"), final_params(tmp_path / "resumed")
  assert int(a.step) == int(b.step) == 4
  for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
    np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_a_time_limit_stops_training_at_its_last_checkpoint_before_it(tiny_data, tmp_path):
  c = _config(tiny_data, **{"train.num_train_steps": 4, "train.checkpoint_every": 2, "train.eval_at_end": True})
  w = str(tmp_path / "limited")
  assert run.main(c, w, "train", stop_at=time.time()) is None      # past already: stops at its first save
  mgr = checkpoints.manager(w, c)
  assert mgr.all_steps() == [2] and not os.path.exists(os.path.join(w, "eval", "results.json"))  # not evaluated
  assert run.main(c, w, "train", stop_at=time.time() + 3600)["step"] == 4  # resumed, finished, evaluated
  assert checkpoints.manager(w, c).all_steps() == [2, 4]


def test_training_stops_after_a_save_when_the_next_one_would_come_past_the_time_limit():
  stops = train_loop.stops_after_save
  assert not stops(100.0, None, 10.0, 5, 5)                          # no limit
  assert stops(100.0, 109.0, 10.0, 5, 5) and not stops(100.0, 111.0, 10.0, 5, 5)
  assert stops(100.0, 111.0, 10.0, 5, 10) and not stops(100.0, 111.0, 10.0, 10, 10)  # at the last interval's pace
  assert not stops(100.0, 50.0, 10.0, 5, 0)                          # the last save: nothing left to stop


def test_scanpath_statistics_tell_a_policy_that_ignores_the_image():
  from rsrnn_jax.evaluation import scanpath
  rng = np.random.default_rng(0)
  t, b, s, size = 3, 6, 4, 33  # 33 px: 16 px per unit of the normalised coordinates
  mask = jnp.array([1, 1, 1, 1, 1, 0], jnp.float32)  # the last example is padding
  uniform = jnp.full((t, b, s, s), 1.0 / s ** 2)
  one_hot = jnp.zeros((t, b, s * s)).at[:, :, 5].set(1.0).reshape(t, b, s, s)

  def stats(fixations, probs):
    return scanpath.summary(jax.device_get(scanpath.batch_sums({"fixations": fixations, "probs": probs}, mask, size)),
                            float(mask.sum()), size)

  same = jnp.zeros((t, b, 2)).at[1:].set(jnp.array([0.5, -0.25]))  # the centre, then one place for every image
  saccades, policy = stats(same, one_hot)
  assert policy["fixation_spread_px"] == [0.0, 0.0, 0.0] and scanpath.one_scanpath(policy) is True
  assert policy["entropy_per_saccade"] == [0.0, 0.0]
  np.testing.assert_allclose(saccades["mean_saccade_px"], [16 * np.hypot(0.5, 0.25), 0.0], rtol=1e-6)
  moving = jnp.asarray(rng.uniform(-1, 1, (t, b, 2)), jnp.float32).at[0].set(0.0)
  saccades, policy = stats(moving, uniform)
  valid = np.asarray(moving)[:, :5]  # the spread over the valid examples only
  spread = 16 * np.sqrt(((valid - valid.mean(1, keepdims=True)) ** 2).sum(-1).mean(1))
  np.testing.assert_allclose(policy["fixation_spread_px"], spread, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(policy["entropy_per_saccade"], [np.log(s * s)] * 2, rtol=1e-5)
  assert scanpath.one_scanpath(policy) is False and scanpath.one_scanpath({}) is None


def test_a_policy_loss_that_stays_at_zero_is_reported_once(caplog):
  from rsrnn_jax.train import loop
  watch = loop.PolicyWatch(tol=1e-4, logs=3)
  with caplog.at_level(logging.WARNING, logger=loop.__name__):
    for step, loss in enumerate([0.0, 0.0, 0.02, 5e-5, 0.0, -1e-6, 0.0, 0.0], start=1):
      watch.see(step * 10, {"policy_loss": loss})
    watch.see(90, {"loss": 1.0})  # a model without a policy logs no policy loss
  (record,) = caplog.records
  assert "deterministic since step 40 " in record.getMessage() and "3 logs in a row" in record.getMessage()


def test_keeps_n_checkpoints_and_eval_reports_every_step(tiny_data, tmp_path, monkeypatch, caplog):
  from rsrnn_jax.train import loop
  c = _config(tiny_data, **{"train.num_train_steps": 6, "train.checkpoint_every": 2, "train.log_every": 1,
                            "train.keep_checkpoints": 2, "train.eval_at_end": True})
  logged = loop._scalars  # the loop watches the policy loss it logs: here one that is 0 from the start
  monkeypatch.setattr(loop, "_scalars", lambda *a: ({**logged(*a)[0], "policy_loss": 0.0}, logged(*a)[1]))
  with caplog.at_level(logging.WARNING, logger=loop.__name__):
    evaluate.train_and_evaluate(c, str(tmp_path))
  assert [r.getMessage().split(" (")[0] for r in caplog.records if r.name == loop.__name__] == [
      "the fixation policy has been deterministic since step 1"]
  assert checkpoints.manager(str(tmp_path), c).all_steps() == [4, 6]
  with open(tmp_path / "eval" / "results.json") as f:
    res = json.load(f)
  assert len(res["accuracy_per_step"]) == c.eval.num_glimpses  # T_eval > T_train
  assert res["num_examples"] == c.eval.max_examples and res["step"] == 6
  for key in ("mean_saccade_px", "fraction_moving"):
    assert len(res["saccades"][key]) == c.eval.num_glimpses - 1
  assert all(0.0 <= f <= 1.0 for f in res["saccades"]["fraction_moving"])
  policy = res["policy"]  # the entropy of each next fixation's choice, the fixations' spread at every step
  assert len(policy["entropy_per_saccade"]) == c.eval.num_glimpses - 1
  assert len(policy["fixation_spread_px"]) == c.eval.num_glimpses and policy["fixation_spread_px"][0] < 1e-3
  assert all(0.0 <= h <= np.log(c.model.dorsal.saliency_size ** 2) + 1e-5 for h in policy["entropy_per_saccade"])
  for name in ("accuracy_per_step.png", "fixations.png"):
    assert os.path.getsize(tmp_path / "eval" / name) > 1000
  lines = writers.read_metrics(str(tmp_path))
  assert {"loss", "ce", "policy_loss", "images_per_sec", "learning_rate", "accuracy_per_step"} <= set(lines[-1])
  assert os.listdir(tmp_path / "tensorboard")


def test_eval_refuses_a_checkpoint_of_another_model(tiny_data, tmp_path):
  c = _config(tiny_data, **{"train.num_train_steps": 2})
  evaluate.train_and_evaluate(c, str(tmp_path))
  other = _config(tiny_data, **{"model.core_features": 16})
  with pytest.raises(ValueError, match="core_features"):
    evaluate.load_model(other, str(tmp_path))
  with pytest.raises(ValueError, match="different model"):
    evaluate.train_and_evaluate(other, str(tmp_path))  # training into it is refused too, nothing overwritten
  assert checkpoints.manager(str(tmp_path), c).all_steps() == [2]
  # An explicit checkpoint path (a step directory) works from any workdir.
  c.eval.checkpoint_path = str(tmp_path / "checkpoints" / "2")
  _, state, _, _ = evaluate.load_model(c, str(tmp_path / "elsewhere"))
  assert int(state.step) == 2
  with pytest.raises(FileNotFoundError, match="train first"):
    evaluate.load_model(_config(tiny_data), str(tmp_path / "empty"))


def test_checkpoint_meta_without_a_later_field_is_compared_with_the_old_behaviour(tiny_data):
  """A checkpoint written before model.dorsal.combine existed was trained with the product; it matches a config
  that asks for the product, and the mismatch with today's default names the value to pass."""
  c = _config(tiny_data)
  info = data.dataset_info(c.data)
  meta = checkpoints.metadata(c, info)
  old = json.loads(json.dumps(meta))
  del old["model"]["dorsal"]["combine"]
  assert c.model.dorsal.combine == "log"
  assert checkpoints.incompatibilities(old, meta) == [
      "model.dorsal.combine: checkpoint 'product' vs config 'log'"]
  c.model.dorsal.combine = "product"
  assert checkpoints.incompatibilities(old, checkpoints.metadata(c, info)) == []
  assert checkpoints.incompatibilities(meta, meta) == []


def test_metric_log_drops_records_of_steps_trained_again(tmp_path):
  w = writers.MetricWriter(str(tmp_path))
  for s in (1, 2, 3):
    w.write(s, {"loss": s})
  w.close()
  writers.MetricWriter(str(tmp_path), resume_step=2).close()
  assert [r["step"] for r in writers.read_metrics(str(tmp_path))] == [1, 2]


# ------------------------------------------------------------------------------------------------------ zoo

@pytest.mark.parametrize("model", ["dram", "s3ta"])
def test_zoo_models_train_save_restore_and_evaluate(tiny_data, tmp_path, model):
  """The same train → checkpoint → restore → eval path for the new model kinds (rsrnn and ff_cnn: tests above;
  base_retina and gfnet_m are dram's code path with another sampler, covered by the train-step test)."""
  c = _config(tiny_data, model=model, **{"train.num_train_steps": 2, "train.eval_at_end": True,
                                         "model.unroll": 1})  # rolled scan: faster compiles
  first = evaluate.train_and_evaluate(c, str(tmp_path))  # evaluates the restored checkpoint
  again = run.main(c, str(tmp_path), "eval")
  assert first["accuracy_per_step"] == again["accuracy_per_step"] and again["step"] == 2
  assert len(again["accuracy_per_step"]) == c.eval.num_glimpses and again["model"] == model
  figure = "attention.png" if model == "s3ta" else "fixations.png"
  assert os.path.getsize(tmp_path / "eval" / figure) > 1000
  lines = writers.read_metrics(str(tmp_path))
  assert ("policy_loss" in lines[-1]) == (model != "s3ta")  # REINFORCE only for the overt-attention models


# ------------------------------------------------------------------------------------ adversarial training

def _adversarial(tiny_data, model, **overrides):
  return _config(tiny_data, model=model, **{
      "train.adversarial.enabled": True, "train.adversarial.eps": 0.05, "train.adversarial.num_iterations": 2,
      "train.warmup_steps": 0, **overrides})


def _fixed_batch(c, n=8):
  return {k: jnp.asarray(v) for k, v in next(data.train_batches(c.data, global_batch_size=n, seed=0)).items()}


@pytest.mark.parametrize("model", ["rsrnn", "ff_cnn"])
def test_adversarial_train_step_uses_pgd_examples_in_the_eps_ball(tiny_data, model):
  c = _adversarial(tiny_data, model, **{"train.adversarial.adv_fraction": 0.5})
  net, info = train_state.model_from_config(c)
  state = train_state.init_state(net, c, info.image_shape, jax.random.key(0))
  batch = _fixed_batch(c)
  images, is_adv = jax.jit(lambda s, b, r: train_step.adversarial_images(s, b, r, config=c))(
      state, batch, jax.random.key(1))
  assert batch["image"].dtype == jnp.uint8  # the pipeline's hand-over; the step maps it to [0, 1]
  delta = np.abs(np.asarray(images - data.unit_float(batch["image"]))).reshape(8, -1).max(1)
  np.testing.assert_array_equal(is_adv, [True] * 4 + [False] * 4)
  assert np.all(delta[:4] <= 0.05 + 1e-6) and np.all(delta[:4] > 0.01) and np.all(delta[4:] == 0)
  assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
  before = jax.tree_util.tree_map(np.asarray, state.batch_stats)
  state_adv, m_adv = jax.jit(lambda s, b, r: train_step.train_step(s, b, r, config=c))(
      train_state.init_state(net, c, info.image_shape, jax.random.key(0)), batch, jax.random.key(1))
  clean = _config(tiny_data, model=model, **{"train.warmup_steps": 0})
  _, m_clean = jax.jit(lambda s, b, r: train_step.train_step(s, b, r, config=clean))(state, batch, jax.random.key(1))
  assert float(m_adv["adv_linf"]) <= 0.05 + 1e-6 and float(m_adv["adv_fraction"]) == 0.5
  assert abs(float(m_adv["ce"]) - float(m_clean["ce"])) > 1e-4  # trained on other images than the clean step
  if model == "ff_cnn":  # BatchNorm: the attack reads the running statistics; the step updates them once
    assert c.model.norm == "batch"
    for x, y in zip(jax.tree_util.tree_leaves(before), jax.tree_util.tree_leaves(state_adv.batch_stats)):
      assert x.shape == y.shape and not np.allclose(x, y)


def test_adversarial_training_decreases_the_adversarial_loss(tiny_data):
  c = _adversarial(tiny_data, "ff_cnn", **{"train.learning_rate": 2e-2, "train.num_train_steps": 1000})
  net, info = train_state.model_from_config(c)
  state = train_state.init_state(net, c, info.image_shape, jax.random.key(0))
  batch = _fixed_batch(c, 16)
  step = jax.jit(lambda s, b, r: train_step.train_step(s, b, r, config=c))
  losses = []
  for _ in range(25):
    state, m = step(state, batch, jax.random.key(0))
    losses.append(float(m["ce"]))  # the loss on the PGD examples of the current parameters
  assert losses[-1] < 0.8 * losses[0], losses


def _separable(n, seed):
  """8×8×2 images: channel 0 = 0.5 ± 0.15, a robust feature that agrees with the label 70% of the time;
  channel 1 = 0.5 ± 0.02, a non-robust feature that always agrees (flipped by any ε > 0.02); ±0.01 noise."""
  r = np.random.default_rng(seed)
  y = r.integers(0, 2, n)
  robust = np.where(r.random(n) < 0.7, 2 * y - 1, 1 - 2 * y)
  x = np.stack([np.broadcast_to((0.5 + 0.15 * robust)[:, None, None], (n, 8, 8)),
                np.broadcast_to((0.5 + 0.02 * (2 * y - 1))[:, None, None], (n, 8, 8))], -1)
  return jnp.asarray(x + r.uniform(-0.01, 0.01, x.shape), jnp.float32), jnp.asarray(y, jnp.int32)


def test_adversarial_training_makes_a_tiny_model_robust():
  # Clean training relies on the perfectly predictive non-robust channel (100% clean, ~0% under PGD at
  # ε = 0.03); adversarial training at ε = 0.03 must use the robust channel (~70% clean and under PGD).
  x, y = _separable(256, 0)
  xt, yt = _separable(256, 1)
  robust_acc = {}
  for adv in (False, True):
    c = tiny_config("ff_cnn", **{
        "train.adversarial.enabled": adv, "train.adversarial.eps": 0.03, "train.adversarial.num_iterations": 3,
        "train.adversarial.step_size": 0.5, "train.learning_rate": 3e-2, "train.warmup_steps": 0,
        "train.num_train_steps": 60, "train.num_glimpses": 1, "train.grad_clip": 0.0, "model.norm": "none",
        "model.stages": ((8, 1, 0),)})
    model = build_model(c.model, num_classes=2, mean=(0.5, 0.5), std=(0.1, 0.1))
    state = train_state.init_state(model, c, (8, 8, 2), jax.random.key(0))
    step = jax.jit(lambda s, b, r, c=c: train_step.train_step(s, b, r, config=c))
    for i in range(60):
      j = (i * 64) % 256
      state, _ = step(state, {"image": x[j:j + 64], "label": y[j:j + 64]}, jax.random.key(i))
    logits_fn = objectives.model_logits_fn(model, train_state.variables_of(state), attack_step=1)
    x_adv = attacks.pgd(logits_fn, xt, yt, eps=0.03, step_size=0.01, num_steps=10, rng=jax.random.key(5))
    robust_acc[adv] = float(jnp.mean(jnp.argmax(logits_fn(x_adv), -1) == yt))
  assert robust_acc[False] < 0.2 and robust_acc[True] > 0.6, robust_acc
