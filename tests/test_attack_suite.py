"""The attack suite end to end (rsrnn_jax/robustness/suite.py, rsrnn_jax/robustness/results.py): `--mode=attack` on a
trained tiny model, a toy attack added through the registry alone, and the one-line error without a checkpoint."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rsrnn_jax import attacks as A
from rsrnn_jax import data, run
from rsrnn_jax.robustness import plan, profiles, registry, suite
from rsrnn_jax.robustness import results as report
from rsrnn_jax.evaluation import clean
from rsrnn_jax.train import parallel
from tests.attack_helpers import untrained
from tests.helpers import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
  clean.train_and_evaluate(c, workdir)
  results = run.main(c, workdir, "attack")
  out = os.path.join(workdir, "attack_paper")
  for name in ("results.json", "report.md", "accuracy_per_step.png", "accuracy_bars.png", "asr_per_step.png",
               "prob_maps.png", "prob_maps.npz", "adversarial_eps0.03.npz", "adversarial_eps0.1.npz"):
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
  # --mode=verify re-scores the saved worst-case images exactly, and refuses an image outside the ε-ball.
  verified = run.main(c, workdir, "verify")
  assert [v["num_correct"] for v in verified] == [v["num_correct"] for v in saved["verified"]]
  assert saved["verified"][0]["differ_from_worst_at_k"] == 0
  with np.load(os.path.join(out, "adversarial_eps0.03.npz")) as f:
    tampered = {k: f[k] for k in f.files}
  assert str(tampered["fingerprint"]) == saved["fingerprint"] and len(tampered["images"]) == 12
  tampered["images"][3] = np.clip(tampered["images"][3] + 0.031, 0, 1)
  c.verify.path = str(tmp_path / "tampered.npz")
  np.savez(c.verify.path, **tampered)
  with pytest.raises(ValueError, match="outside the ε-ball"):
    run.main(c, workdir, "verify")


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


# ------------------------------------------------------------------------------- a toy attack, registry only

TRACES = []


def random_sign_attack(victim, images, labels, *, eps, rng, norm, targeted, num_draws):
  """Toy L∞ attack: the strongest of ``num_draws`` random corners x ± ε of the ball (gradient-free)."""
  TRACES.append(num_draws)
  logits_fn = victim.logits_fn()
  eps_b = jnp.asarray(eps, images.dtype)
  candidates = [jnp.clip(images + eps_b * jax.random.rademacher(k, images.shape, images.dtype), 0.0, 1.0)
                for k in jax.random.split(rng, num_draws)]
  return registry.worst_of(logits_fn, candidates, labels, targeted)


def self_transfer_attack(victim, images, labels, *, eps, rng, norm, targeted):
  """Toy transfer attack: FGSM on a source model that ``prepare`` loaded (here the attacked model itself)."""
  del rng
  return A.fgsm(victim.resources, images, labels, eps=eps, norm=norm, targeted=targeted)


def _prepare_self_as_source(config, workdir):
  """The source model of the toy transfer attack as a pytree: its step-k logits function and variables."""
  assert workdir is None  # run_suite without a workdir (a real transfer attack reads its source from one)
  _, model, variables = untrained()
  k = int(config.attack.attack_step)
  step_k = lambda v, x: model.apply(v, x, num_steps=k, train=False, sample_fixations=False)["logits"][k - 1]
  return jax.tree_util.Partial(step_k, variables)


@pytest.fixture
def random_sign():
  entry = registry.register(registry.AttackEntry(
      name="random_sign", run=random_sign_attack, options=lambda a: dict(num_draws=3),
      title="Random sign (toy)", gradient_free=True, horizons="step", norms=("linf",),
      cost=lambda o: float(o["num_draws"])))
  yield entry
  registry.unregister(entry.name)


@pytest.fixture
def self_transfer():
  entry = registry.register(registry.AttackEntry(
      name="self_transfer", run=self_transfer_attack, options=lambda a: {}, title="Transfer from itself (toy)",
      horizons="step", prepare=_prepare_self_as_source, cost=lambda o: 3.0))
  yield entry
  registry.unregister(entry.name)


def _toy_config(tiny_data, attacks):
  c = _attack_config(tiny_data)
  a = c.attack
  a.attacks, a.horizons = attacks, ("step",)
  a.epsilons, a.targeted, a.num_examples, a.num_iterations = (0.05, 0.2), False, 8, 1
  a.checks.large_eps, a.checks.square_queries, a.checks.grad_examples = 0.0, 0, 0
  a.prob_map.num_images = 0
  return c


@pytest.mark.slow
def test_a_toy_attack_added_through_the_registry_runs_in_the_suite_and_the_report(random_sign, tiny_data,
                                                                                  tmp_path):
  c = _toy_config(tiny_data, ("pgd", "random_sign"))
  profiles.validate_attack_config(c)  # the validation knows the new name
  _, model, variables = untrained()
  mesh = parallel.make_mesh()
  TRACES.clear()
  with jax.set_mesh(mesh):
    results = suite.run_suite(model, variables, c, data.dataset_info(c.data), mesh, progress=False)
  assert TRACES == [3]  # compiled once for both ε, with the option its entry reads from the profile
  out = str(tmp_path / "attack_paper")
  report.write_all(results, out)
  with open(os.path.join(out, "results.json")) as f:
    saved = json.load(f)
  attacks = saved["untargeted"]["attacks"]
  assert list(attacks) == ["pgd_step", "random_sign_step", "worst"]
  toy = attacks["random_sign_step"]
  assert [e["eps"] for e in toy] == [0.05, 0.2] and all(e["num_examples"] == [8] * 4 for e in toy)
  for i in range(2):  # the worst case takes the toy attack into account
    assert all(w <= t for w, t in zip(attacks["worst"][i]["adv_acc"], toy[i]["adv_acc"]))
  assert saved["profile_overrides"]["attacks"] == {"config": ["pgd", "random_sign"], "profile": ["pgd", "fgsm"]}
  assert [c_["status"] for c_ in saved["checks"] if c_["id"] in (4, 5, 7)] == ["skipped"] * 3
  assert "also Random sign (toy) (random_sign)" in saved["profile_description"]
  md = open(os.path.join(out, "report.md")).read()
  assert "random_sign_step @2" in md and "**random_sign_step** (Random sign (toy) on step k)" in md
  registry.unregister("random_sign")  # without its entry the config is refused
  with pytest.raises(ValueError, match="config.attack.attacks must be distinct names"):
    profiles.validate_attack_config(c)


def test_an_attack_gets_what_its_entry_prepares(self_transfer, tiny_data):
  """A transfer attack is one function + one entry whose ``prepare`` loads the source model: here the source is
  the attacked model itself, so its FGSM images must equal the suite's own FGSM's, bit for bit."""
  c = _toy_config(tiny_data, ("pgd", "fgsm", "self_transfer"))
  profiles.validate_attack_config(c)
  _, model, variables = untrained()
  mesh = parallel.make_mesh()
  with jax.set_mesh(mesh):
    r = suite.SuiteRun(model, variables, c, data.dataset_info(c.data), mesh, progress=False)
    specs = plan.attack_specs(c, has_steps=True)[0]
    eps, key = jnp.asarray(0.05, jnp.float32), jax.random.key(0)
    outs = [jax.device_get(r.fn_for(specs[n])(variables, r.batches[0], r.clean_logits[0], eps, key,
                                              r.eval_keys[0])["adv_images"]) for n in ("fgsm_step",
                                                                                      "self_transfer_step")]
    clean = jax.device_get(r.batches[0]["image"])
  np.testing.assert_array_equal(outs[0], outs[1])
  assert np.abs(outs[1] - clean).max() > 0.04  # the attack really moved the images
