"""The adaptive profile (issue 13): robust flags (rsrnn_jax/robustness/flags.py), the scanpath search
(rsrnn_jax/attacks/policy.py), verified adversarial sets (rsrnn_jax/robustness/verify.py) and the profile end to end
on a tiny model."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsrnn_jax import data
from rsrnn_jax.attacks import policy
from rsrnn_jax.robustness import flags, profiles, suite, verify
from rsrnn_jax.models import dorsal
from rsrnn_jax.robustness import results as report
from rsrnn_jax.train import parallel
from tests.attack_helpers import K, images, untrained
from tests.helpers import tiny_config


def test_robust_flags_skip_examples_already_broken():
  n, t, k = 6, 3, 2
  clean = np.ones((n, t), bool)
  clean[5] = False  # misclassified clean: never attacked
  # Which examples each attack breaks, at which steps (1-based); "b_full" aims at T = 3, the others at k = 2.
  breaks = {"a_step": {0: (1, 2, 3), 1: (2,), 4: (3,)}, "b_full": {1: (3,), 2: (3,)}, "c_step": {2: (2,), 3: (1, 2)}}
  seen = {}

  def attack_rows(name, spec, rows):
    seen[name] = rows.tolist()
    adv = np.ones((len(rows), t), bool)
    for i, row in enumerate(rows):
      for s in breaks[name].get(int(row), ()):
        adv[i, s - 1] = False
    return {"adv_correct": adv, "adv_images": np.full((len(rows), 2), 1.0 + len(seen)), "info": {"hit": ~adv[:, 0]}}

  keeper = flags.Keeper(np.zeros((n, 2)), clean, k, t)
  steps = {"a_step": flags.flag_steps("step", k, t), "b_full": flags.flag_steps("full", k, t),
           "c_step": flags.flag_steps("step", k, t)}
  assert steps["b_full"] == (1, 2, 3) and flags.flag_steps("avg", k, t) == (1, 2) and steps["a_step"] == (2,)
  assert flags.flag_steps("last", k, t) == (3,) and flags.flag_steps("t1", k, t) == (1,)
  correct, cumulative, table = flags.run_cascade(dict.fromkeys(steps), steps, clean, attack_rows, attack_step=k,
                                                 eval_steps=t, keeper=keeper)
  # b_full attacks every example still correct at one of steps 1..T: 1 (broken at k only) and 4 (broken at T
  # only); c_step skips 0 and 1 (broken at k) and 5 (clean)
  assert seen == {"a_step": [0, 1, 2, 3, 4], "b_full": [1, 2, 3, 4], "c_step": [2, 3, 4]}
  assert [(r["attacked"], r["broke"], r["broke_at_k"], r["broke_at_T"]) for r in table] == [
      (5, 2, 2, 2), (4, 2, 0, 2), (3, 2, 2, 0)]
  assert [r["flag_step"] for r in table] == ["2", "1–3", "2"]
  assert table[0]["hit_count"] == 1 and [r["robust_at_k"] for r in table] == [3, 3, 1]
  np.testing.assert_array_equal(correct[:, k - 1], [False, False, False, False, True, False])
  np.testing.assert_array_equal(correct[:, t - 1], [False, False, False, True, False, False])
  np.testing.assert_array_equal(cumulative["a_step"][:, k - 1], [False, False, True, True, True, False])
  # the kept image per example: the attack that broke step k (then T), else the clean image; at step k it
  # realises the worst case, at T one image cannot always (example 1: a broke step k, b step T)
  assert keeper.winners() == ["a_step", "a_step", "c_step", "c_step", "a_step", "clean"]
  np.testing.assert_array_equal(keeper.images[:, 0], [2.0, 2.0, 4.0, 4.0, 2.0, 0.0])
  np.testing.assert_array_equal(keeper.correct[:, k - 1], correct[:, k - 1])
  assert keeper.correct[1, t - 1] and not correct[1, t - 1]


def test_a_flag_counts_the_flagged_examples_no_attack_broke_in_the_end():
  """``<key>_robust_count``: of the examples an attack's boolean info flags (APGD's zero-gradient starts), those
  still robust at one of its flag steps after every later attack (check 11 reads it)."""
  n, t, k = 4, 2, 2
  clean = np.ones((n, t), bool)
  zero_grad = {"first": [1, 2, 3], "second": []}
  breaks = {"first": [0], "second": [1]}  # example 3 is broken at step 1 only, never at the flag step k

  def attack_rows(name, spec, rows):
    adv = ~np.isin(rows, breaks[name])[:, None].repeat(t, 1)
    if name == "first":
      adv[rows == 3, 0] = False
    return {"adv_correct": adv, "adv_images": None, "info": {"zero_grad": np.isin(rows, zero_grad[name])}}

  steps = {"first": flags.flag_steps("step", k, t), "second": flags.flag_steps("step", k, t)}
  _, _, table = flags.run_cascade(dict.fromkeys(steps), steps, clean, attack_rows, attack_step=k, eval_steps=t)
  # first flags 1, 2, 3; second breaks 1; 2 and 3 stay robust at step k (3's break at step 1 is not its step)
  assert [(r["zero_grad_count"], r["zero_grad_robust_count"]) for r in table] == [(3, 2), (0, 0)]
  # ... and second attacked 2 and 3 from a non-zero gradient at step k, where they stay robust
  assert [r["zero_grad_uncovered_count"] for r in table] == [0, 0]
  zero_grad["second"] = [3]  # second's own start on 3 was at a zero gradient too: 3 has no working gradient
  _, _, table = flags.run_cascade(dict.fromkeys(steps), steps, clean, attack_rows, attack_step=k, eval_steps=t)
  assert [(r["zero_grad_robust_count"], r["zero_grad_uncovered_count"]) for r in table] == [(2, 1), (1, 1)]
  steps["second"] = flags.flag_steps("t1", k, t)  # second aims at step 1 only, where 3 was broken: no cover
  zero_grad["second"] = []
  _, _, table = flags.run_cascade(dict.fromkeys(steps), steps, clean, attack_rows, attack_step=k, eval_steps=t)
  assert table[0]["zero_grad_uncovered_count"] == 1  # 2 stays robust at step 1 (covered), 3 does not


def test_robust_flags_carry_over_from_a_smaller_eps():
  """At a larger ε only the examples still robust at the smaller one are attacked: what broke them there breaks
  them here (the larger ball contains the smaller one); the table's first row says what was carried."""
  n, t, k = 5, 2, 1
  clean = np.ones((n, t), bool)
  clean[4] = False
  smaller = clean.copy()
  smaller[0] = False           # broken at both steps at the smaller ε
  smaller[1, 1] = False        # broken at T only
  seen = []

  def attack_rows(name, spec, rows):
    seen.append(rows.tolist())
    adv = np.ones((len(rows), t), bool)
    adv[rows == 2] = False     # this ε's attack breaks example 2
    return {"adv_correct": adv, "adv_images": None, "info": {}}

  steps = {"full": flags.flag_steps("full", k, t)}
  correct, cumulative, table = flags.run_cascade(dict.fromkeys(steps), steps, clean, attack_rows, attack_step=k,
                                                 eval_steps=t, start=smaller, start_label="broken at ε=0.02")
  assert seen == [[1, 2, 3]]   # 0 is broken everywhere already, 4 is wrong clean; 1 is still robust at k
  assert table[0] == {"attack": "broken at ε=0.02", "flag_step": "–", "attacked": 0, "broke": 2, "broke_at_k": 1,
                      "broke_at_T": 2, "robust_at_k": 3, "robust_at_T": 2}
  np.testing.assert_array_equal(correct, [[False, False], [True, False], [False, False], [True, True],
                                          [False, False]])
  np.testing.assert_array_equal(cumulative["full"], correct)


def test_scanpath_search_finds_a_planted_worst_scanpath():
  _, model, _ = untrained()
  b, n, p = 4, 3, 6
  paths = jax.jit(functools.partial(policy.random_scanpaths, model=model, num_paths=p, num_steps=n, batch=b))(
      jax.random.key(0))
  assert paths.shape == (p, n, b, 2)
  np.testing.assert_array_equal(paths[:, 0], 0.0)  # every path starts at the centre, like the evaluation
  # each fixation is a cell the policy could choose from the previous one, away from the earlier ones (IOR)
  locs = jax.vmap(lambda f: dorsal.cell_locations(model.sampler, f, model.dorsal["saliency_size"]))(
      paths[:, :-1].reshape(-1, b, 2))  # [p·(n − 1), B, cells, 2]
  nxt = paths[:, 1:].reshape(-1, b, 2)
  assert float(jnp.max(jnp.min(jnp.abs(locs - nxt[:, :, None]).sum(-1), axis=-1))) < 1e-6
  assert float(jnp.min(jnp.linalg.norm(paths[:, 1] - paths[:, 0], axis=-1))) > 0.22
  assert len({tuple(np.asarray(paths[i, :, 0]).ravel()) for i in range(p)}) > 1  # the paths differ

  planted = jnp.array([3, 0, 5, 1])  # per example, the one scanpath on which the frozen model is weak
  x, y = jnp.full((b, 2), 0.5), jnp.zeros(b, jnp.int32)
  free = lambda v: jnp.stack([jnp.zeros(b), v[:, 0] - 0.5, jnp.zeros(b)], -1)  # margin = v[:, 0] − 0.5

  def frozen_attack(path, key):
    weak = jnp.all(path == jnp.transpose(paths, (2, 0, 1, 3))[jnp.arange(b), planted].transpose(1, 0, 2),
                   axis=(0, 2))
    noise = 0.01 * jax.random.uniform(key, (b,))
    return x + jnp.where(weak, 0.3, 0.1)[:, None] + noise[:, None], jnp.where(weak, 1.0, -1.0) + noise

  found = jax.jit(functools.partial(policy.scanpath_search, frozen_attack, free))(x, y, paths, jax.random.key(1))
  np.testing.assert_array_equal(found["worst_index"], planted)
  np.testing.assert_array_equal(found["worst_path"], paths[planted, :, jnp.arange(b)].transpose(1, 0, 2))
  np.testing.assert_allclose(found["x_free"][:, 0], 0.8 + found["free_margin"] - 0.3, atol=1e-6)
  assert np.all(np.asarray(found["free_margin"]) > 0.3)  # the planted candidate also wins on the free model


def _saved_set(tmp_path, model, variables, mesh, x, labels, eps):
  kw = dict(num_steps=3, fixations="argmax", batch_size=8, mesh=mesh)
  keeper = flags.Keeper(x, verify.rescore(model, variables, x, labels, **kw), 2, 3)
  adv = np.clip(x + eps * np.sign(np.random.RandomState(0).randn(*x.shape)), 0, 1).astype(np.float32)
  keeper.offer("noise", np.arange(len(x)), adv, verify.rescore(model, variables, adv, labels, **kw))
  num_correct = verify.rescore(model, variables, keeper.images, labels, **kw).sum(0)
  path = str(tmp_path / verify.set_name(eps))
  meta = dict(norm="linf", fingerprint=verify.fingerprint(variables, 7), checkpoint_step=7, attack_step=2,
              eval_steps=3, fixations="argmax", batch_size=8, seed=0, profile="adaptive", num_devices=4)
  verify.save_set(path, keeper, eps=eps, labels=labels, targets=labels, indices=np.arange(len(x)),
                  num_correct=num_correct, meta=meta)
  with np.load(path) as f:
    return {k: f[k] for k in f.files}


def test_verify_rescores_a_saved_set_exactly_and_rejects_one_outside_the_ball(tmp_path):
  _, model, variables = untrained()
  mesh = parallel.make_mesh()
  x, labels = np.asarray(images(3, 12)), (np.arange(12) % K).astype(np.int32)
  with jax.set_mesh(mesh):
    saved = _saved_set(tmp_path, model, variables, mesh, x, labels, 0.05)
    assert set(saved["attack"]) <= {"clean", "noise"} and saved["images"].dtype == np.float32
    ok = verify.verify_set(model, variables, 7, saved, x, labels, mesh)
    assert ok["problems"] == [] and ok["num_correct"] == saved["num_correct"].tolist()
    assert ok["max_distance"] <= 0.05 + verify.TOL

    outside = dict(saved, images=saved["images"].copy())
    i = np.unravel_index(np.argmin(x[0]), x[0].shape)
    outside["images"][0][i] = x[0][i] + 0.05 + 1e-4
    bad = verify.verify_set(model, variables, 7, outside, x, labels, mesh)
    assert any("1 outside the ε-ball" in p for p in bad["problems"]), bad["problems"]

    miscounted = dict(saved, num_correct=saved["num_correct"] + np.array([0, 1, 0]))
    assert any("differs from the reported one at steps [2]" in p
               for p in verify.verify_set(model, variables, 7, miscounted, x, labels, mesh)["problems"])
    assert any("another checkpoint" in p for p in verify.verify_set(model, variables, 8, saved, x, labels,
                                                                    mesh)["problems"])


def _adaptive_config(tiny_data):
  c = tiny_config(**{"model.unroll": 1})
  c.data.source_dir, c.data.data_dir = tiny_data["source_dir"], tiny_data["data_dir"]
  c.attack = profiles.attack_profile("adaptive")
  a = c.attack
  a.attack_step, a.eval_steps, a.horizons = 2, 3, ("step",)
  a.attack_horizons = ("apgd_dlr:step", "apgd_t:step")  # every attack of the profile, on step k only
  a.epsilons, a.targeted = (1e-3, 0.5), False  # at 1e-3 every attack runs; at 0.5 APGD-CE breaks every example
  a.num_examples, a.batch_size, a.num_iterations = 32, 8, 2
  a.fab.targets = 2
  a.policy.taus, a.policy.candidates = (1.0,), 2
  a.prob_map.num_images = 0
  c.attack.checks.update(large_eps=0.0, square_queries=4, grad_examples=0, convergence_examples=8,
                         iteration_factor=1, extra_restarts=0, policy_examples=4, policy_eps=0.5)
  return c


def _breakable(c):
  """The untrained tiny model, which answers one class for every image, with its classifier bias centred on the
  test images so that its answers depend on the image (about 10% correct, and breakable)."""
  _, model, variables = untrained()
  x = np.concatenate([b["image"] for b in data.eval_batches(c.data, global_batch_size=16, max_examples=16)])
  variables = jax.tree_util.tree_map(lambda v: v, variables)
  mean_logits = model.apply(variables, x, num_steps=3, train=False)["logits"].mean((0, 1))
  variables["params"]["step"]["classifier"]["bias"] -= mean_logits
  return model, variables


def test_an_interrupted_cascade_resumes_from_its_journal(tiny_data, tmp_path, monkeypatch):
  """The journal replays the attacks done before an interruption; the resumed run's results are the
  uninterrupted run's, and a changed config or checkpoint discards the journal."""
  from rsrnn_jax.robustness import cascade, journal
  c = _adaptive_config(tiny_data)
  profiles.keep_attacks(c.attack, ("apgd_ce", "apgd_t"))
  c.attack.checks.policy_examples = 0
  model, variables = _breakable(c)
  mesh = parallel.make_mesh()
  real, calls = cascade.attack_rows, []

  def counting(*args, **kw):
    calls.append(kw.get("label"))
    if len(calls) == stop_at:
      raise KeyboardInterrupt
    return real(*args, **kw)

  monkeypatch.setattr(cascade, "attack_rows", counting)
  run = lambda j: suite.run_sections(model, variables, c, data.dataset_info(c.data), mesh, progress=False,
                                     journal=j)
  with jax.set_mesh(mesh):
    stop_at = 0
    whole = run(None)
    cascade_calls = lambda: [label for label in calls if label in ("apgd_ce_step", "apgd_t_step")]
    total, calls[:] = len(cascade_calls()), []
    assert total == 4  # two attacks at two ε (then check 3's attack, which is not journaled)
    folder = str(tmp_path / ".attack_adaptive.journal")
    stop_at = 3        # interrupted in the third: the larger ε's first attack
    with pytest.raises(KeyboardInterrupt):
      run(journal.Journal(folder, "k"))
    assert sorted(os.listdir(folder)) == ["eps0_apgd_ce_step.npz", "eps0_apgd_t_step.npz", "meta.json"]
    stop_at, calls[:] = 0, []
    again = journal.Journal(folder, "k")
    resumed = run(again)
  assert again.replayed == 2 and len(cascade_calls()) == total - 2
  (whole, w), (resumed, r) = whole, resumed
  assert set(w.per_example) == set(r.per_example)
  for name, v in w.per_example.items():  # every attack's worst case per example, ε and step
    np.testing.assert_array_equal(v, r.per_example[name])
  for a, b in zip(w.keepers, r.keepers):  # the verified sets' images and the attacks that made them
    np.testing.assert_array_equal(a.images, b.images)
    assert a.winners() == b.winners()
  timeless = lambda r: [{**per, "rows": [{k: v for k, v in row.items() if k != "seconds"} for row in per["rows"]]}
                        for per in r["flags"]["per_eps"]]
  assert timeless(whole) == timeless(resumed) and whole["checks"] == resumed["checks"]
  spent = [row["seconds"] for per in resumed["flags"]["per_eps"] for row in per["rows"] if "seconds" in row]
  assert len(spent) == 4 and spent.count(None) == 2  # the two replayed attacks took no time here
  assert len(os.listdir(folder)) == 5  # four results and the key
  journal.Journal(folder, "another config")  # any change of config or checkpoint: start afresh
  assert os.listdir(folder) == ["meta.json"]


def test_the_journal_is_keyed_by_config_and_checkpoint(tmp_path):
  from rsrnn_jax.robustness import journal
  c = tiny_config()
  c.attack = profiles.attack_profile("adaptive")
  res = {"adv_correct": np.array([[True, False, True], [False, False, True]]), "adv_images": None,
         "info": {"hit": np.array([True, False])}}
  journal.for_run(c, str(tmp_path), "checkpoint A").save(0, "apgd_ce_step", [3, 5], res)
  back = journal.for_run(c, str(tmp_path), "checkpoint A").load(0, "apgd_ce_step", [3, 5])
  np.testing.assert_array_equal(back["adv_correct"], res["adv_correct"])
  assert back["adv_images"] is None and back["info"]["hit"].tolist() == [True, False]
  assert journal.for_run(c, str(tmp_path), "checkpoint A").load(0, "apgd_ce_step", [3, 6]) is None  # other rows
  assert journal.for_run(c, str(tmp_path), "checkpoint B").load(0, "apgd_ce_step", [3, 5]) is None
  journal.for_run(c, str(tmp_path), "checkpoint A").save(0, "apgd_ce_step", [3, 5], res)
  c.attack.seed = 1
  assert journal.for_run(c, str(tmp_path), "checkpoint A").load(0, "apgd_ce_step", [3, 5]) is None
  assert os.listdir(tmp_path) == [".attack_adaptive.journal"]


@pytest.mark.slow
def test_adaptive_profile_end_to_end(tiny_data, tmp_path):
  c = _adaptive_config(tiny_data)
  profiles.validate_attack_config(c)
  model, variables = _breakable(c)
  mesh = parallel.make_mesh()
  with jax.set_mesh(mesh):
    results, r = suite.run_sections(model, variables, c, data.dataset_info(c.data), mesh, progress=False)
    verified = [verify.verify_set(model, variables, 0, {
        "images": keeper.images, "labels": r.host["label"], "eps": v["eps"], "norm": "linf",
        "fingerprint": verify.fingerprint(variables, 0), "checkpoint_step": 0, "eval_steps": 3,
        "fixations": "argmax", "batch_size": 8, "seed": 0, "num_correct": np.asarray(v["num_correct"])},
        np.asarray(r.host["image"]), r.host["label"], mesh) for keeper, v in zip(r.keepers, results["verified"])]
  assert all(v["problems"] == [] for v in verified)
  unt = results["untargeted"]["attacks"]
  assert list(unt) == ["apgd_ce_step", "apgd_dlr_step", "apgd_t_step", "fab_t_step", "bpda_step", "scanpath_step",
                       "square_step", "worst"]
  for i in range(2):  # the entries are the worst case after each attack: never rising along the cascade
    accs = [unt[n][i]["adv_acc"][1] for n in unt]
    assert accs == sorted(accs, reverse=True)
    assert results["verified"][i]["differ_from_worst_at_k"] == 0
    assert results["verified"][i]["accuracy_per_step"][1] == unt["worst"][i]["adv_acc"][1]
  first = results["flags"]["per_eps"][0]["rows"]  # ε = 1e-3: every attack ran on what the earlier ones left
  assert all(row["attacked"] > 0 for row in first), first
  assert all(row["seconds"] > 0 for row in first), first  # each attack's wall time (the report's last column)
  assert [row["attacked"] for row in first] == sorted(row["attacked"] for row in first)[::-1]
  rows = {row["attack"]: row for row in results["flags"]["per_eps"][1]["rows"]}  # ε = 0.5: the flags skip
  assert rows["apgd_ce_step"]["broke"] > 0 and rows["apgd_ce_step"]["robust_at_k"] == 0
  assert all(rows[n]["attacked"] == 0 for n in ("apgd_t_step", "fab_t_step", "bpda_step", "scanpath_step",
                                                "square_step"))
  assert results["policy_check"]["num_examples"] > 0  # check 9 ran the policy attacks on what APGD-CE broke
  assert results["headline"] == "worst" and results["notes"][0].startswith("transfer: skipped")
  assert [ch["id"] for ch in results["checks"]] == list(range(1, 12))
  assert {ch["id"]: ch["status"] for ch in results["checks"]}[10] == "skipped"
  out = str(tmp_path / "attack_adaptive")
  report.write_all(results, out)
  md = open(os.path.join(out, "report.md")).read()
  assert md.index("## Headline") < md.index("## Robust flags") < md.index("## Untargeted attacks")
  assert f"| apgd_ce_step | 2 | {first[0]['attacked']} |" in md and "| per-example flags | seconds |" in md
  assert "## Verified adversarial sets" in md and "**not run**: transfer" in md
