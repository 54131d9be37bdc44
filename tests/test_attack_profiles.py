"""Attack profiles and their validation (rsrnn_jax/robustness/profiles.py), the attack registry
(rsrnn_jax/robustness/registry.py) and the plan the suite derives from a config (rsrnn_jax/robustness/plan.py)."""
import ast
import os

import pytest

from configs import common, demo
from rsrnn_jax.robustness import plan, profiles, registry, sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_profiles_and_config():
  p, s = common.attack_profile("paper"), common.attack_profile("strong")
  assert (p.norm, p.num_iterations, p.step_size, p.random_start, tuple(p.losses), p.fixations) == \
         ("linf", 5, 1 / 3, True, ("ce",), "argmax")
  assert s.num_iterations >= 100 and s.num_restarts > 1 and set(s.losses) == {"ce", "margin"}
  assert "full" in s.horizons and "step" in s.horizons and s.eot_samples > 1
  with pytest.raises(ValueError, match="unknown attack profile"):
    common.attack_profile("weak")
  c = demo.get_config("attack=strong")
  assert c.attack.profile == "strong" and profiles.profile_overrides(c.attack) == {}
  profiles.validate_attack_config(c)
  c = demo.get_config("")
  assert c.attack.profile == "paper" and profiles.profile_overrides(c.attack) == {}
  c.attack.num_iterations = 7
  assert profiles.profile_overrides(c.attack) == {"num_iterations": {"config": 7, "profile": 5}}
  c.attack.attack_step = 20
  with pytest.raises(ValueError, match="eval_steps"):
    profiles.validate_attack_config(c)
  specs, _, _, _ = plan.attack_specs(demo.get_config("attack=strong"), has_steps=False)
  assert set(specs) == {"pgd_step", "fgsm_step"}  # a model without glimpse steps: no other horizon


  assert common.attack_profile("strong") == profiles.attack_profile("strong")  # the configs call the library
  assert tuple(common.ATTACK_PROFILE_FIELDS) == profiles.PROFILE_FIELDS


def test_adaptive_profile_plan_and_validation():
  c = demo.get_config("attack=adaptive")
  assert c.attack.profile == "adaptive" and c.attack.flags and c.attack.reference == "apgd_ce"
  profiles.validate_attack_config(c)
  assert "robust flags" in profiles.describe_profile(c.attack)
  p = plan.make_plan(c, 5, has_steps=True, has_fixations=True)
  # cascade order; APGD-CE on every objective, APGD-DLR on the full horizon and APGD-T on step k
  # (attack_horizons); APGD-CE on each other step (``each``: k = 4 and T = 8 have their own objectives) after
  # the other white-box attacks and before Square; the transfer attack skipped without a source
  each = ["apgd_ce_t1", "apgd_ce_t2", "apgd_ce_t3", "apgd_ce_t5", "apgd_ce_t6", "apgd_ce_t7"]
  assert list(p.untargeted) == ["apgd_ce_step", "apgd_ce_avg", "apgd_ce_full", "apgd_ce_last", "apgd_dlr_full",
                                "apgd_t_step", "fab_t_step", "bpda_step", "scanpath_step", *each, "square_step"]
  assert [p.untargeted[n].horizon for n in each] == ["t1", "t2", "t3", "t5", "t6", "t7"]
  assert p.flags and p.reference == "apgd_ce" and not p.run_square  # Square runs in the cascade
  assert p.notes and p.notes[0].startswith("transfer: skipped")
  assert p.convergence.attack == "apgd_ce" and p.convergence.opts["num_iterations"] == 2 * c.attack.num_iterations
  assert set(p.policy_checks) == {"bpda_step", "scanpath_step"}
  assert p.untargeted["apgd_t_step"].opts["num_targets"] == c.attack.apgd_targets
  # the demo's budget: 50 iterations, but AutoAttack's 100 on the means over steps (horizon_iterations)
  assert {n: s.opts["num_iterations"] for n, s in p.untargeted.items() if "num_iterations" in s.opts} == {
      "apgd_ce_step": 50, "apgd_ce_avg": 100, "apgd_ce_full": 100, "apgd_ce_last": 50, "apgd_dlr_full": 100,
      "apgd_t_step": 50, "fab_t_step": 50, "bpda_step": 50, "scanpath_step": 50} | {n: 50 for n in each}
  no_fix = plan.make_plan(c, 5, has_steps=True, has_fixations=False)
  assert "bpda_step" not in no_fix.untargeted and any(n.startswith("bpda") for n in no_fix.notes)
  no_steps = plan.make_plan(c, 5, has_steps=False, has_fixations=False)  # FF-CNN: step k only
  assert list(no_steps.untargeted) == ["apgd_ce_step", "apgd_t_step", "fab_t_step", "square_step"]
  overrides = profiles.profile_overrides(demo.get_config("attack=adaptive").attack)  # listed in the demo's report
  assert overrides["num_iterations"] == {"config": 50, "profile": 100}
  assert overrides["horizon_iterations"] == {"config": ["avg:100", "full:100"], "profile": []}
  for bad, why in (("apgd_dlr", "must be 'NAME:h1\\+h2'"), ("pgd:full", "must be 'NAME"),
                   ("apgd_dlr:later", "must be 'NAME"), ("bpda:full", "bpda runs on step k only")):
    c.attack.attack_horizons = (bad,)
    with pytest.raises(ValueError, match=why):
      profiles.validate_attack_config(c)
  c.attack.attack_horizons = ("apgd_dlr:full", "apgd_t:step")
  c.attack.horizon_iterations = ("each:7", "t2:9")  # each: every tN; an explicit tN wins
  assert {n: s.opts["num_iterations"] for n, s in plan.attack_specs(c, True)[0].items() if "_t" in n[-3:]} == {
      "apgd_ce_t1": 7, "apgd_ce_t2": 9, "apgd_ce_t3": 7, "apgd_ce_t5": 7, "apgd_ce_t6": 7, "apgd_ce_t7": 7}
  c.attack.attack_horizons = ("apgd_dlr:full+t9",)
  with pytest.raises(ValueError, match="objective\\(s\\) t9 aim past step T_eval=8"):
    profiles.validate_attack_config(c)
  c.attack.attack_horizons = ("apgd_dlr:full", "apgd_t:step")
  for bad in ("full", "later:2", "full:0", "full:2x", ("full:2", "full:3"), "t0:3"):
    c.attack.horizon_iterations = bad if isinstance(bad, tuple) else (bad,)
    with pytest.raises(ValueError, match="horizon_iterations: .* must be 'HORIZON:N'"):
      profiles.validate_attack_config(c)
  c.attack = profiles.attack_profile("adaptive")
  c.attack.policy.taus = (0.5, 1.0)
  assert profiles.profile_overrides(c.attack) == {"policy.taus": {"config": [0.5, 1.0],
                                                                  "profile": [0.5, 1.0, 2.0]}}
  c.attack.attack_step, c.attack.eval_steps = 4, 8
  c.attack.fixations = "sample"
  with pytest.raises(ValueError, match="bpda attacks the argmax fixation policy"):
    profiles.validate_attack_config(c)
  c.attack.attacks = ("apgd_ce", "apgd_t")
  with pytest.raises(ValueError, match="flags=True needs config.attack.fixations='argmax'"):
    profiles.validate_attack_config(c)
  c.attack.fixations, c.attack.reference = "argmax", "square"
  c.attack.attacks = ("apgd_ce", "square")
  with pytest.raises(ValueError, match="cannot be the reference attack"):
    profiles.validate_attack_config(c)


def test_validation_reads_the_registry():
  c = demo.get_config("")
  c.attack.attacks = ("pgd", "nope")
  with pytest.raises(ValueError, match="config.attack.attacks must be distinct names of pgd, fgsm, square"):
    profiles.validate_attack_config(c)
  c.attack.attacks = ("fgsm",)
  with pytest.raises(ValueError, match="must include the reference attack 'pgd'"):
    profiles.validate_attack_config(c)
  c.attack.attacks = ("pgd", "square")  # Square is L∞ only
  c.attack.norm = "l2"
  with pytest.raises(ValueError, match="square supports norm linf only"):
    profiles.validate_attack_config(c)
  c = demo.get_config("")
  c.attack.losses = ("ce", "hinge")  # PGD's own validation, from its registry entry
  with pytest.raises(ValueError, match="config.attack.losses must be a non-empty tuple of ce, margin"):
    profiles.validate_attack_config(c)
  c.attack.losses = ("ce",)
  c.attack.num_restarts = 0
  with pytest.raises(ValueError, match="config.attack.num_restarts must be >= 1"):
    profiles.validate_attack_config(c)


def test_registry_titles_options_and_registration():
  # The report's titles come from the registry (the names the report has always printed).
  assert {n: registry.title(n) for n in ("pgd_step", "pgd_avg", "pgd_full", "fgsm_step", "worst")} == {
      "pgd_step": "PGD on step k", "pgd_avg": "PGD on mean of steps 1..k",
      "pgd_full": "PGD full horizon (steps 1..T)", "fgsm_step": "FGSM on step k",
      "worst": "worst case over attacks"}
  assert registry.title("unknown_step") == "unknown_step"
  assert registry.plotted("pgd_full") and registry.plotted("worst") and not registry.plotted("fgsm_step")
  # An attack's options are the keyword-only parameters of its run function.
  assert registry.get("pgd").option_names == {"losses", "num_iterations", "num_restarts", "step_size",
                                              "random_start"}
  assert registry.get("square").gradient_free and not registry.get("pgd").gradient_free
  with pytest.raises(ValueError, match="takes the options loss; got loss, num_queries"):
    sweep.make_spec("fgsm_step", "fgsm", loss="ce", num_queries=3)
  spec = sweep.spec_from_profile("pgd", common.attack_profile("paper"))
  assert spec.name == "pgd_step" and spec.opts["num_iterations"] == 5
  assert spec.replace("other", num_iterations=10) == sweep.spec_from_profile("pgd", common.attack_profile(
      "paper")).replace("x", num_iterations=10)  # equal specs share a compilation, whatever their name
  with pytest.raises(ValueError, match="already registered"):
    registry.register(registry.get("pgd"))
  with pytest.raises(ValueError, match="identifier"):
    registry.register(registry.AttackEntry(name="worst", run=registry.fgsm_attack, options=dict, title="x"))

  def no_norm(victim, images, labels, *, eps, rng, targeted):
    return images
  with pytest.raises(ValueError, match="must take the keyword arguments norm"):
    registry.register(registry.AttackEntry(name="bad", run=no_norm, options=dict, title="x"))
  assert "bad" not in registry.ATTACKS


def test_the_library_never_imports_configs():
  """The profiles live in the library; configs/ builds on the library, never the other way round."""
  for folder, _, files in os.walk(os.path.join(REPO, "rsrnn_jax")):
    for name in sorted(f for f in files if f.endswith(".py")):
      tree = ast.parse(open(os.path.join(folder, name)).read())
      for node in ast.walk(tree):
        mods = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        assert not any(m == "configs" or m.startswith("configs.") for m in mods), (folder, name, mods)
