"""The attacked model as a logits_fn (step k, mean of 1..k, full horizon, EOT, argmax), per-example targets,
ASR aggregation over batches and one compilation per batch shape for every ε (rsrnn_jax/robustness/sweep.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsrnn_jax import attacks as A
from rsrnn_jax.attacks import objectives
from rsrnn_jax.robustness import subset, sweep
from rsrnn_jax.train import parallel
from tests.attack_helpers import B, K, images, untrained


# ------------------------------------------------------------------------------------------ model wrappers

@pytest.mark.parametrize("model_name", ["rsrnn", "s3ta"])  # overt (fixations) and covert (soft) attention
def test_wrappers_use_exactly_the_chosen_steps(model_name):
  _, model, v = untrained(model_name)
  x, y = images(), jnp.arange(B) % K
  k, t = 2, 3

  def grad_of(logits_fn):
    return jax.grad(lambda xx: jnp.sum(A.attack_loss(logits_fn(xx), y)))(x)

  def hand(steps, reduce):
    return lambda xx: reduce(model.apply(v, xx, num_steps=steps, train=False)["logits"])

  wrap = lambda h: objectives.model_logits_fn(model, v, horizon=h, attack_step=k, eval_steps=t)

  @jax.jit
  def all_grads(x_):
    del x_
    return {
        "step": grad_of(wrap("step")), "hand_k": grad_of(hand(k, lambda z: z[k - 1])),
        "step_logits": wrap("step")(x), "avg_logits": wrap("avg")(x),
        "all_k": model.apply(v, x, num_steps=k, train=False)["logits"],
        "full_logits": wrap("full")(x), "all_t": model.apply(v, x, num_steps=t, train=False)["logits"],
        "last_logits": wrap("last")(x), "t1_logits": wrap("t1")(x),
    }

  g = jax.device_get(all_grads(x))
  np.testing.assert_allclose(g["step"], g["hand_k"], rtol=1e-5, atol=1e-8)
  assert np.abs(g["step"]).max() > 0
  np.testing.assert_array_equal(g["step_logits"], g["all_k"][k - 1])
  assert not np.allclose(g["step_logits"], g["all_k"][k - 2], rtol=1e-3)  # steps really differ
  np.testing.assert_allclose(g["full_logits"], g["all_t"].mean(0), rtol=1e-5, atol=1e-6)
  assert not np.allclose(g["full_logits"], g["all_t"][-1], rtol=1e-3)
  np.testing.assert_allclose(g["avg_logits"], g["all_k"].mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(g["last_logits"], g["all_t"][t - 1])
  np.testing.assert_array_equal(g["t1_logits"], g["all_t"][0])  # tN: step N of an N-step unroll
  assert objectives.horizon_steps("t1", k, t) == 1 and objectives.horizon_steps("t3", k, t) == 3


def test_each_expands_to_the_steps_no_single_step_objective_aims_at():
  ex = objectives.expand_horizons
  assert ex(("step", "avg", "full", "last", "each"), 4, 8) == (
      "step", "avg", "full", "last", "t1", "t2", "t3", "t5", "t6", "t7")
  assert ex(("step", "each", "full"), 2, 3) == ("step", "t1", "t3", "full")  # no `last`: t3 stays
  assert ex(("step", "t1", "each"), 2, 3) == ("step", "t1", "t3")
  assert ex(("step", "avg"), 2, 3) == ("step", "avg")
  assert [objectives.step_horizon(h) for h in ("t12", "t0", "t", "step", "tx")] == [12, None, None, None, None]
  with pytest.raises(ValueError, match="unknown horizon 't0'"):
    objectives.reduce_horizon(jnp.zeros((3, 1, 2)), "t0", 2)


def test_eot_averages_draws_and_argmax_is_deterministic():
  _, model, v = untrained()
  x = images(1)
  k, n = 2, 3
  rng = jax.random.key(7)
  eot_fn = objectives.model_logits_fn(model, v, horizon="step", attack_step=k, fixations="sample", eot_samples=n, rng=rng)
  argmax_fn = objectives.model_logits_fn(model, v, horizon="step", attack_step=k, fixations="argmax", rng=rng)

  @jax.jit
  def everything(x):
    draws = [model.apply(v, x, num_steps=k, train=False, sample_fixations=True, rngs={"fixation": kk})
             for kk in objectives.eot_keys(rng, x, n)]
    o1 = model.apply(v, x, num_steps=k, train=False, sample_fixations=False)
    o2 = model.apply(v, x, num_steps=k, train=False, sample_fixations=False, rngs={"fixation": jax.random.key(3)})
    return {"eot": eot_fn(x), "draw_logits": jnp.stack([d["logits"][k - 1] for d in draws]),
            "draw_fix": jnp.stack([d["fixations"] for d in draws]), "argmax": argmax_fn(x),
            "o1": o1["fixations"], "o2": o2["fixations"], "o1_logits": o1["logits"]}

  r = jax.device_get(everything(x))
  np.testing.assert_allclose(r["eot"], r["draw_logits"].mean(0), rtol=1e-5, atol=1e-6)
  # The draws really differ (so the average is over different fixation paths) ...
  assert not np.allclose(r["draw_fix"][0, 1], r["draw_fix"][1, 1])
  # ... and are fresh for every queried point (PGD iterate), independent of the batch's sharding.
  x2 = x.at[0, 0, 0, 0].add(1e-3)
  assert not np.array_equal(jax.random.key_data(objectives.eot_keys(rng, x, n)), jax.random.key_data(objectives.eot_keys(rng, x2, n)))
  assert int(objectives.image_hash(x)) == int(objectives.image_hash(x[::-1]))  # order-independent
  # Argmax fixations: deterministic (independent of any key), and the wrapper gives the logits of step k.
  np.testing.assert_array_equal(r["o1"], r["o2"])
  np.testing.assert_array_equal(r["argmax"], r["o1_logits"][k - 1])


def test_targets_depend_only_on_seed_index_and_label():
  labels = np.arange(40) % K
  idx = np.arange(100, 140)
  t_all = subset.example_targets(3, idx, labels, K)
  t_parts = np.concatenate([subset.example_targets(3, idx[i:i + 7], labels[i:i + 7], K) for i in range(0, 40, 7)])
  np.testing.assert_array_equal(t_all, t_parts)
  one = subset.example_targets(3, idx[5:6], labels[5:6], K)
  assert one[0] == t_all[5]
  assert np.all(t_all != labels) and t_all.min() >= 0 and t_all.max() < K
  assert not np.array_equal(t_all, subset.example_targets(4, idx, labels, K))


# ------------------------------------------------------------------------------------- aggregation, compile

def test_asr_is_aggregated_from_counts_over_batches_without_padding():
  # Two batches of 3, T=2, K=3; the last example of batch 2 is padding (mask 0).
  def logits_for(preds):
    return jax.nn.one_hot(jnp.asarray(preds), 3) * 5.0  # [T,B,3]

  labels = [np.array([0, 1, 2]), np.array([0, 1, 0])]
  masks = [np.array([1., 1., 1.]), np.array([1., 1., 0.])]
  clean_preds = [np.array([[0, 1, 0], [0, 1, 2]]), np.array([[0, 0, 0], [0, 1, 0]])]
  adv_preds = [np.array([[1, 1, 0], [0, 2, 1]]), np.array([[0, 0, 1], [1, 1, 2]])]
  batches = [{"image": jnp.zeros((3, 1)), "label": jnp.asarray(l), "mask": jnp.asarray(m)}
             for l, m in zip(labels, masks)]
  clean = [logits_for(p) for p in clean_preds]
  adv = [logits_for(p) for p in adv_preds]

  def fake_attack(variables, batch, clean_logits, eps, rng, eval_rng):
    j = int(batch["label"][2])  # batch identity (label of the 3rd example: 2 or 0)
    a = adv[0] if j == 2 else adv[1]
    stats = A.attack_success(clean_logits, a, batch["label"], mask=batch["mask"])
    m = batch["mask"] > 0
    out = {k: stats[k] for k in sweep.COUNT_KEYS}
    out["adv_correct"] = (jnp.argmax(a, -1) == batch["label"]) & m
    out["success"] = (jnp.argmax(clean_logits, -1) == batch["label"]) & m & (jnp.argmax(a, -1) != batch["label"])
    out["adv_images"] = batch["image"]
    return out

  sweeper = sweep.Sweep(None, batches, clean, [None, None])
  (res,) = sweeper.run(fake_attack, [0.1], jax.random.key(0))
  # By hand over the 5 real examples (labels 0,1,2 | 0,1):
  # step 1: clean correct: b1 ex0, ex1 (pred 0,1 vs 0,1; ex2 pred 0≠2); b2 ex0 (0=0), ex1 (0≠1) → 3
  #         adv wrong among them: b1 ex0 (1≠0) yes, ex1 (1=1) no; b2 ex0 (0=0) no → 1 → ASR 1/3
  # step 2: clean correct: b1 ex0, ex1, ex2; b2 ex0, ex1 → 5
  #         adv wrong: b1 ex1 (2≠1), ex2 (1≠2); b2 ex0 (1≠0) → 3 → ASR 3/5;  b1 ex0 adv 0 = correct
  assert res["num_examples"] == [5, 5]
  assert res["num_clean_correct"] == [3, 5]
  assert res["num_success"] == [1, 3]
  np.testing.assert_allclose(res["asr"], [1 / 3, 3 / 5])
  # adv accuracy: step 1: b1 [1≠0,1=1,0≠2] → 1; b2 [0=0,0≠1] → 1 → 2/5; step 2: b1 [0,2,1] → 1; b2 [1,1] → 1
  np.testing.assert_allclose(res["adv_acc"], [2 / 5, 2 / 5])
  assert res["adv_correct"].shape == (5, 2) and res["success"].sum(0).tolist() == [1, 3]
  # The same numbers from the per-example arrays (used for the worst-case row).
  clean_correct = np.concatenate([(p == l[None])[:, m > 0].T for p, l, m in zip(clean_preds, labels, masks)])
  again = sweep.per_example_stats(clean_correct, res["adv_correct"])
  assert again["num_success"] == res["num_success"] and again["asr"] == res["asr"]


def test_attack_fn_compiles_once_for_several_eps_and_stays_in_the_ball():
  _, model, v = untrained()
  mesh = parallel.make_mesh()
  setup = sweep.Setup(attack_step=2, eval_steps=3)
  spec = sweep.make_spec("pgd_step", "pgd", losses=("ce",), num_iterations=2, num_restarts=1, step_size=1 / 3,
                         random_start=True)
  fn = sweep.make_attack_fn(model, spec, setup)
  x = np.asarray(images(2, 8))
  batch = {"image": x, "label": np.arange(8, dtype=np.int32) % K, "mask": np.array([1.] * 7 + [0.], np.float32),
           "target": np.ones(8, np.int32)}
  with jax.set_mesh(mesh):
    sharded = parallel.shard_batch(batch, mesh)
    clean = sweep.clean_logits_fn(model, setup)(v, sharded["image"], jax.random.key(1))
    outs = []
    for eps in (0.01, 0.03, 0.1):
      out = fn(v, sharded, clean, jnp.asarray(eps, jnp.float32), jax.random.key(0), jax.random.key(1))
      outs.append((eps, jax.device_get(out)))
  assert fn._cache_size() == 1
  assert len(sharded["image"].sharding.device_set) == jax.device_count()
  for eps, out in outs:
    d = np.abs(out["adv_images"] - x).max()
    assert d <= eps + 1e-6 and out["adv_images"].min() >= 0 and out["adv_images"].max() <= 1
    assert out["num_examples"].tolist() == [7, 7, 7]
    assert not out["adv_correct"][:, 7].any()  # padding never counts
  assert np.abs(outs[-1][1]["adv_images"] - x).max() > 0.05  # ε is really used


def test_compiled_once_times_each_signature_once_and_reuses_it():
  seen = []
  f = sweep.CompiledOnce(jax.jit(lambda x, eps, *, scale: scale * x + eps), on_compile=seen.append)
  a = f(jnp.ones(3), jnp.float32(0.5), scale=2.0)
  b = f(jnp.zeros(3), jnp.float32(1.0), scale=2.0)  # same signature: the kept executable, no new compile
  np.testing.assert_allclose(a, [2.5] * 3)
  np.testing.assert_allclose(b, [1.0] * 3)
  assert len(seen) == 1 and seen[0] > 0 and len(f.executables) == 1
  f(jnp.ones(4), jnp.float32(0.5), scale=2.0)  # a new shape compiles again
  assert len(seen) == 2 and len(f.executables) == 2
