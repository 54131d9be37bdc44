"""Adversarial evaluation (rsrnn_jax/attacks/suite.py, report.py): model-level attack wrappers (step k, mean of
1..k, full horizon, EOT, argmax), ASR aggregation over batches, compile-once per ε, probability maps, the
sanity checks on constructed results, and `--mode=attack` end to end."""
import copy
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import common, demo
from rsrnn_jax import attacks as A
from rsrnn_jax import run
from rsrnn_jax.train import parallel
from rsrnn_jax.report import results as report
from rsrnn_jax.attacks import suite as R
from rsrnn_jax.train import loop as train_loop
from rsrnn_jax.models import build_model
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B, S, K = 4, 32, 10

_CACHE = {}


def _untrained(model_name="rsrnn"):
  """A tiny untrained model (eval mode) and its variables, shared by the tests of one worker."""
  if model_name not in _CACHE:
    cfg = tiny_config(model_name, **{"model.unroll": 1})  # rolled scan: faster compiles, same numbers
    model = build_model(cfg.model, num_classes=K, mean=cfg.data.mean, std=cfg.data.std)
    variables = model.init({"params": jax.random.key(0), "fixation": jax.random.key(1)},
                           jnp.zeros((2, S, S, 1)), num_steps=2, train=False)
    _CACHE[model_name] = (cfg, model, variables)
  return _CACHE[model_name]


def _images(seed=0, n=B):
  return jax.random.uniform(jax.random.key(seed), (n, S, S, 1))


# ------------------------------------------------------------------------------------------ model wrappers

@pytest.mark.parametrize("model_name", ["rsrnn", "s3ta"])  # overt (fixations) and covert (soft) attention
def test_wrappers_use_exactly_the_chosen_steps(model_name):
  _, model, v = _untrained(model_name)
  x, y = _images(), jnp.arange(B) % K
  k, t = 2, 3

  def grad_of(logits_fn):
    return jax.grad(lambda xx: jnp.sum(A.attack_loss(logits_fn(xx), y)))(x)

  def hand(steps, reduce):
    return lambda xx: reduce(model.apply(v, xx, num_steps=steps, train=False)["logits"])

  wrap = lambda h: R.model_logits_fn(model, v, horizon=h, attack_step=k, eval_steps=t)

  @jax.jit
  def all_grads(x_):
    del x_
    return {
        "step": grad_of(wrap("step")), "hand_k": grad_of(hand(k, lambda z: z[k - 1])),
        "step_logits": wrap("step")(x), "avg_logits": wrap("avg")(x),
        "all_k": model.apply(v, x, num_steps=k, train=False)["logits"],
        "full_logits": wrap("full")(x), "all_t": model.apply(v, x, num_steps=t, train=False)["logits"],
    }

  g = jax.device_get(all_grads(x))
  np.testing.assert_allclose(g["step"], g["hand_k"], rtol=1e-5, atol=1e-8)
  assert np.abs(g["step"]).max() > 0
  np.testing.assert_array_equal(g["step_logits"], g["all_k"][k - 1])
  assert not np.allclose(g["step_logits"], g["all_k"][k - 2], rtol=1e-3)  # steps really differ
  np.testing.assert_allclose(g["full_logits"], g["all_t"].mean(0), rtol=1e-5, atol=1e-6)
  assert not np.allclose(g["full_logits"], g["all_t"][-1], rtol=1e-3)
  np.testing.assert_allclose(g["avg_logits"], g["all_k"].mean(0), rtol=1e-5, atol=1e-6)


def test_eot_averages_draws_and_argmax_is_deterministic():
  _, model, v = _untrained()
  x = _images(1)
  k, n = 2, 3
  rng = jax.random.key(7)
  eot_fn = R.model_logits_fn(model, v, horizon="step", attack_step=k, fixations="sample", eot_samples=n, rng=rng)
  argmax_fn = R.model_logits_fn(model, v, horizon="step", attack_step=k, fixations="argmax", rng=rng)

  @jax.jit
  def everything(x):
    draws = [model.apply(v, x, num_steps=k, train=False, sample_fixations=True, rngs={"fixation": kk})
             for kk in R.eot_keys(rng, x, n)]
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
  assert not np.array_equal(jax.random.key_data(R.eot_keys(rng, x, n)), jax.random.key_data(R.eot_keys(rng, x2, n)))
  assert int(R.image_hash(x)) == int(R.image_hash(x[::-1]))  # order-independent
  # Argmax fixations: deterministic (independent of any key), and the wrapper gives the logits of step k.
  np.testing.assert_array_equal(r["o1"], r["o2"])
  np.testing.assert_array_equal(r["argmax"], r["o1_logits"][k - 1])


def test_targets_depend_only_on_seed_index_and_label():
  labels = np.arange(40) % K
  idx = np.arange(100, 140)
  t_all = R.example_targets(3, idx, labels, K)
  t_parts = np.concatenate([R.example_targets(3, idx[i:i + 7], labels[i:i + 7], K) for i in range(0, 40, 7)])
  np.testing.assert_array_equal(t_all, t_parts)
  one = R.example_targets(3, idx[5:6], labels[5:6], K)
  assert one[0] == t_all[5]
  assert np.all(t_all != labels) and t_all.min() >= 0 and t_all.max() < K
  assert not np.array_equal(t_all, R.example_targets(4, idx, labels, K))


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
    out = {k: stats[k] for k in R._COUNT_KEYS}
    out["adv_correct"] = (jnp.argmax(a, -1) == batch["label"]) & m
    out["success"] = (jnp.argmax(clean_logits, -1) == batch["label"]) & m & (jnp.argmax(a, -1) != batch["label"])
    out["adv_images"] = batch["image"]
    return out

  sweep = R.Sweep(None, batches, clean, [None, None])
  (res,) = sweep.run(fake_attack, [0.1], jax.random.key(0))
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
  again = R.per_example_stats(clean_correct, res["adv_correct"])
  assert again["num_success"] == res["num_success"] and again["asr"] == res["asr"]


def test_attack_fn_compiles_once_for_several_eps_and_stays_in_the_ball():
  _, model, v = _untrained()
  mesh = parallel.make_mesh()
  setup = R.Setup(attack_step=2, eval_steps=3)
  spec = R.AttackSpec("pgd_step", num_iterations=2)
  fn = R.make_attack_fn(model, spec, setup)
  x = np.asarray(_images(2, 8))
  batch = {"image": x, "label": np.arange(8, dtype=np.int32) % K, "mask": np.array([1.] * 7 + [0.], np.float32),
           "target": np.ones(8, np.int32)}
  with jax.set_mesh(mesh):
    sharded = parallel.shard_batch(batch, mesh)
    clean = R.clean_logits_fn(model, setup)(v, sharded["image"], jax.random.key(1))
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


# ------------------------------------------------------------------------------------------ probability maps

def test_probability_maps_shape_range_and_cell_dependence():
  _, model, v = _untrained()
  g, n = 4, 2
  x = _images(3, n)
  cls = jnp.array([1, 7])
  maps = jax.device_get(R.probability_maps(model, v, x, cls, grid=g, chunk=6))  # chunk ∤ n·G²: padded
  for key in ("1", "1&2"):
    assert maps[key].shape == (n, g, g)
    assert np.all(maps[key] >= 0) and np.all(maps[key] <= 1)
    assert np.all(maps[key].reshape(n, -1).std(-1) > 0)  # forced fixations change the answer
  # Cell (i, j) is the fixation (x_j, y_i); compare one cell with a direct forced forward pass.
  c = np.linspace(-1, 1, g)
  i, j = 1, 3
  fix = jnp.broadcast_to(jnp.array([c[j], c[i]]), (1, n, 2))

  @jax.jit
  def direct(x):
    one = model.apply(v, x, num_steps=1, train=False, fixations=fix, fixation_mask=jnp.array([True]))
    two = model.apply(v, x, num_steps=2, train=False, fixations=jnp.concatenate([jnp.zeros_like(fix), fix]),
                      fixation_mask=jnp.array([False, True]))
    return (jax.nn.softmax(one["logits"][0], -1)[jnp.arange(n), cls],
            jax.nn.softmax(two["logits"][1], -1)[jnp.arange(n), cls])

  p, p2 = direct(x)
  np.testing.assert_allclose(maps["1"][:, i, j], p, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(maps["1&2"][:, i, j], p2, rtol=1e-4, atol=1e-6)


def test_input_gradient_norms_per_step():
  _, model, v = _untrained()
  x, y = _images(4), jnp.arange(B) % K
  t = 2
  loss_t = lambda xx: jnp.sum(A.attack_loss(model.apply(v, xx, num_steps=3, train=False)["logits"][t], y))
  norms, want = jax.jit(lambda xx: (R.input_gradient_norms(model, v, xx, y, num_steps=3), jax.grad(loss_t)(xx)))(x)
  assert norms["ce"].shape == norms["margin"].shape == (3, B)
  np.testing.assert_allclose(norms["ce"][t], np.sqrt((np.asarray(want) ** 2).sum((1, 2, 3))), rtol=1e-4)
  s = R.gradient_summary({"ce": np.array([[1., 0., np.nan], [2., 2., 2.]])})["ce"]
  assert s["num_nonfinite"] == [1, 0] and s["zero_frac"][0] == pytest.approx(1 / 3) and s["median_norm"][1] == 2


# ------------------------------------------------------------------------------------------ sanity checks

def _entry(eps, acc, asr=None):
  return {"eps": eps, "adv_acc": list(acc), "asr": list(asr if asr is not None else [0.5] * len(acc))}


def _fake_results():
  """k = 2, T = 4, 10 classes; a model whose accuracy falls with ε and recovers with steps."""
  return {
      "attack_step": 2, "eval_steps": 4, "num_classes": 10, "losses": ["ce"],
      "clean": {"accuracy_per_step": [0.8, 0.85, 0.88, 0.9]},
      "untargeted": {"epsilons": [0.01, 0.02], "attacks": {
          "pgd_step": [_entry(0.01, [0.4, 0.3, 0.45, 0.5]), _entry(0.02, [0.2, 0.1, 0.25, 0.3])],
          "pgd_full": [_entry(0.01, [0.35, 0.3, 0.35, 0.42]), _entry(0.02, [0.15, 0.1, 0.18, 0.2])],
          "fgsm_step": [_entry(0.01, [0.6, 0.55, 0.6, 0.6]), _entry(0.02, [0.4, 0.35, 0.4, 0.45])],
      }},
      "large_eps": {"pgd_step": _entry(0.3, [0.0, 0.02, 0.05, 0.06])},
      "convergence": [{"eps": 0.01, "num_examples": 100, "iterations": 10, "restarts": 3, "base_acc": 0.3,
                       "strong_acc": 0.295}],
      "square": {"eps": 0.01, "queries": 100, "num_examples": 200, "square_broken": 50, "pgd_broken": 140,
                 "square_only": 1},
      "gradients": {"num_examples": 8, "per_loss": {
          "ce": {"median_norm": [1.0, 0.8, 0.6, 0.5], "zero_frac": [0, 0, 0, 0], "num_nonfinite": [0] * 4},
          "margin": {"median_norm": [2.0, 1.5, 1.2, 1.0], "zero_frac": [0, 0, 0, 0], "num_nonfinite": [0] * 4}}},
  }


def _statuses(results):
  return {c["id"]: c["status"] for c in R.sanity_checks(results, common.attack_profile("paper").checks)}


def test_sanity_checks_pass_on_a_healthy_evaluation():
  assert _statuses(_fake_results()) == {i: "pass" for i in range(1, 8)}


def test_sanity_checks_fail_on_constructed_failures():
  def mutate(f):
    r = copy.deepcopy(_fake_results())
    f(r)
    return _statuses(r)

  def rising(r):  # accuracy rises with ε at step k
    r["untargeted"]["attacks"]["pgd_step"][1]["adv_acc"][1] = 0.5
  assert mutate(rising)[1] == "fail"

  def above_chance(r):
    r["large_eps"]["pgd_step"]["adv_acc"][1] = 0.4
  assert mutate(above_chance)[2] == "fail"

  def unconverged(r):
    r["convergence"][0]["strong_acc"] = 0.2
  assert mutate(unconverged)[3] == "fail"

  def fgsm_stronger(r):
    r["untargeted"]["attacks"]["fgsm_step"][0]["adv_acc"][1] = 0.1
  assert mutate(fgsm_stronger)[4] == "fail"

  def square_finds_more(r):
    r["square"]["square_only"] = 5  # allowed: floor(0.01 × 200) = 2
  assert mutate(square_finds_more)[5] == "fail"

  def zero_grads(r):
    r["gradients"]["per_loss"]["ce"]["zero_frac"][3] = 0.9
  assert mutate(zero_grads)[6] == "fail"

  def nan_grads(r):
    r["gradients"]["per_loss"]["margin"]["num_nonfinite"][0] = 1
  assert mutate(nan_grads)[6] == "fail"

  def exploding(r):
    r["gradients"]["per_loss"]["margin"]["median_norm"][3] = 1e6
  assert mutate(exploding)[6] == "fail"

  def recovery_lost(r):  # the full-horizon attacker removes the recovery
    for e in r["untargeted"]["attacks"]["pgd_full"]:
      e["adv_acc"][3] = e["adv_acc"][1] - 0.1
  assert mutate(recovery_lost)[7] == "fail"

  def no_recovery(r):
    for e in r["untargeted"]["attacks"]["pgd_step"]:
      e["adv_acc"][3] = e["adv_acc"][1]
  assert mutate(no_recovery)[7] == "skipped"

  def nothing_run(r):
    for key in ("large_eps", "convergence", "square", "gradients"):
      r.pop(key)
    del r["untargeted"]["attacks"]["pgd_full"]
  assert mutate(nothing_run) == {1: "pass", 2: "skipped", 3: "skipped", 4: "pass", 5: "skipped",
                                 6: "skipped", 7: "skipped"}
  # Every check reports its numbers.
  for c in R.sanity_checks(_fake_results(), common.attack_profile("paper").checks):
    assert c["detail"] and c["numbers"]


def test_profiles_and_config():
  p, s = common.attack_profile("paper"), common.attack_profile("strong")
  assert (p.norm, p.num_iterations, p.step_size, p.random_start, tuple(p.losses), p.fixations) == \
         ("linf", 5, 1 / 3, True, ("ce",), "argmax")
  assert s.num_iterations >= 100 and s.num_restarts > 1 and set(s.losses) == {"ce", "margin"}
  assert "full" in s.horizons and "step" in s.horizons and s.eot_samples > 1
  with pytest.raises(ValueError, match="unknown attack profile"):
    common.attack_profile("weak")
  c = demo.get_config("attack=strong")
  assert c.attack.profile == "strong" and R.profile_overrides(c.attack) == {}
  R.validate_attack_config(c)
  c = demo.get_config("")
  assert c.attack.profile == "paper" and R.profile_overrides(c.attack) == {}
  c.attack.num_iterations = 7
  assert R.profile_overrides(c.attack) == {"num_iterations": {"config": 7, "profile": 5}}
  c.attack.attack_step = 20
  with pytest.raises(ValueError, match="eval_steps"):
    R.validate_attack_config(c)
  specs, _, _, _ = R._attack_specs(demo.get_config("attack=strong"), has_steps=False)
  assert set(specs) == {"pgd_step", "fgsm_step"}  # a model without glimpse steps: no other horizon


# ------------------------------------------------------------------------------------------ end to end

def _attack_config(tiny_data):
  c = tiny_config()
  c.data.source_dir = tiny_data["source_dir"]
  c.data.data_dir = tiny_data["data_dir"]
  c.model.unroll = 1  # runtime-only: rolled scan compiles faster (attacks take input gradients only)
  a = c.attack
  a.attack_step, a.eval_steps = 2, 4
  a.epsilons, a.targeted_epsilons = (0.03, 0.1), (0.1,)
  a.num_examples, a.batch_size, a.num_iterations = 12, 8, 2
  a.prob_map.grid, a.prob_map.num_images, a.prob_map.chunk = 4, 2, 8
  a.checks.large_eps = 0.5
  a.checks.square_queries, a.checks.square_examples = 4, 8
  a.checks.grad_examples, a.checks.convergence_examples = 8, 8
  a.checks.iteration_factor, a.checks.extra_restarts = 1, 0  # check 3 then reuses the pgd_step compilation
  return c


@pytest.mark.slow
def test_attack_mode_end_to_end(tiny_data, tmp_path):
  c = _attack_config(tiny_data)
  workdir = str(tmp_path / "wd")
  train_loop.train_and_evaluate(c, workdir)
  results = run.main(c, workdir, "attack")
  out = os.path.join(workdir, "attack_paper")
  for name in ("results.json", "report.md", "accuracy_per_step.png", "accuracy_bars.png", "asr_per_step.png",
               "prob_maps.png", "prob_maps.npz"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  with open(os.path.join(out, "results.json")) as f:
    saved = json.load(f)
  assert saved["profile"] == "paper" and saved["config"]["attack"]["profile"] == "paper"
  assert saved["num_examples"] == 12 and saved["eval_steps"] == 4 and saved["checkpoint_step"] == 4
  for name in ("pgd_step", "pgd_full", "fgsm_step", "worst"):
    entries = saved["untargeted"]["attacks"][name]
    assert [e["eps"] for e in entries] == [0.03, 0.1]
    for e in entries:
      assert len(e["adv_acc"]) == len(e["asr"]) == 4 and e["num_examples"] == [12] * 4
  assert [e["eps"] for e in saved["targeted"]["attacks"]["pgd_step"]] == [0.1]
  # Worst case is at most every single attack, per step.
  for i in range(2):
    for s in range(4):
      assert saved["untargeted"]["attacks"]["worst"][i]["adv_acc"][s] <= min(
          saved["untargeted"]["attacks"][n][i]["adv_acc"][s] for n in ("pgd_step", "pgd_full", "fgsm_step"))
  assert len(saved["clean"]["accuracy_per_step"]) == 4
  assert [c_["id"] for c_ in saved["checks"]] == list(range(1, 8))
  assert all(c_["status"] in ("pass", "fail", "skipped") for c_ in saved["checks"])
  assert np.asarray(saved["prob_maps"]["adv"]["1&2"]).shape == (2, 4, 4)
  assert results["timing"]["total_s"] > 0
  md = open(os.path.join(out, "report.md")).read()
  assert "profile `paper`" in md and "Sanity checks" in md
  for eps in ("0.03", "0.1"):
    assert f"| {eps} |" in md
  # The report can be re-drawn from results.json alone.
  assert report.main([out]) == 0


def test_launch_attack_without_checkpoint_fails_with_one_line(tiny_data, tmp_path):
  cfg = tmp_path / "cfg.py"
  cfg.write_text(
      "import sys\n"
      f"sys.path.insert(0, {REPO!r})\n"
      "from tests.helpers import tiny_config\n"
      "def get_config():\n"
      "  c = tiny_config()\n"
      f"  c.data.source_dir = {tiny_data['source_dir']!r}\n"
      f"  c.data.data_dir = {tiny_data['data_dir']!r}\n"
      "  return c\n")
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, "launch.py", f"--config={cfg}", f"--workdir={tmp_path / 'empty'}",
                         "--mode=attack"], cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
  assert proc.returncode != 0
  errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and "no checkpoints" in errors[0], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
