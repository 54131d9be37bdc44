"""The seven sanity checks on constructed results (rsrnn_jax/robustness/checks.py): pass on a healthy
evaluation, fail on each constructed failure, skipped when not run."""
import copy
import json

from rsrnn_jax.robustness import checks, profiles, readings


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
  return {c["id"]: c["status"] for c in checks.sanity_checks(results, profiles.attack_profile("paper").checks)}


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
  for c in checks.sanity_checks(_fake_results(), profiles.attack_profile("paper").checks):
    assert c["detail"] and c["numbers"]


def _flagged_results():
  """The healthy results under robust flags (adaptive): the cascade's rows, check 9's run, the randomness flag."""
  r = copy.deepcopy(_fake_results())
  row = lambda attack, attacked, broke, **flags: {"attack": attack, "flag_step": 2, "attacked": attacked,
                                                  "broke": broke, "broke_at_k": broke, "broke_at_T": 0,
                                                  "robust_at_k": 0, "robust_at_T": 0, **flags}
  r["num_examples"] = 200
  r["flags"] = {"per_eps": [{"eps": 0.01, "rows": [
      row("pgd_step", 150, 120, scanpath_changed_count=40),
      row("apgd_t_step", 30, 4, scanpath_changed_count=10, zero_grad_count=0),
      row("bpda_step", 26, 2, scanpath_changed_count=12),
      row("scanpath_step", 24, 1, scanpath_changed_count=20, steered_count=3),
      row("transfer_step", 23, 1)]}]}
  r["policy_check"] = {"eps": 0.01, "reference": "pgd_step", "num_examples": 50,
                       "attacks": {"bpda_step": {"broke": 48}, "scanpath_step": {"broke": 50}}}
  r["randomness"] = {"same_key_max_diff": 0.0, "other_key_max_diff": None, "fixations": "argmax"}
  return r


def test_check8_on_a_policy_nothing_moves_is_a_finding():
  """Check 8 fails when the policy attacks move no fixation; if the plain attack moved none either, the policy
  does not respond to the image (paper_geometry DRAM seed 0) and the failure is a finding, else a warning."""
  paper = profiles.attack_profile("paper").checks
  check8 = lambda r: {c["id"]: c for c in checks.sanity_checks(r, paper)}[8]
  dead = _flagged_results()  # the plain attack moves fixations, the policy attacks none: a dead policy gradient
  for row in dead["flags"]["per_eps"][0]["rows"]:
    row["scanpath_changed_count"] = 0 if row["attack"] in ("bpda_step", "scanpath_step") else 5
  fixed = copy.deepcopy(dead)  # nothing moves any fixation
  for row in fixed["flags"]["per_eps"][0]["rows"]:
    row["scanpath_changed_count"] = 0
  c_dead, c_fixed = check8(dead), check8(fixed)
  assert c_dead["status"] == c_fixed["status"] == "fail"
  assert readings.reading(8, True, c_dead)[0] == "warning" and readings.reading(8, True, c_fixed)[0] == "finding"
  assert "the policy does not respond to the image" in c_fixed["detail"]
  assert c_fixed["numbers"]["reference_attacked"] == 150
  old = copy.deepcopy(c_fixed)  # a results.json written before reference_attacked was recorded
  del old["numbers"]["reference_attacked"]
  assert readings.reading(8, True, old)[0] == "finding"
  # Over several runs the most severe reading stands; a report lists both readings of check 8.
  runs = [checks.sanity_checks(fixed, paper), checks.sanity_checks(dead, paper)]
  assert readings.readings(runs)[8][1] == "warning" and readings.readings(runs[:1])[8][1] == "finding"


def test_check11_on_results_that_predate_the_cover_count():
  """Results written before ``zero_grad_uncovered_count``: the zero-gradient starts are covered when another
  APGD run at the same ε with no zero-gradient start has every flag step of the flagged run (paper_geometry
  Base-Retina seed 0: APGD-DLR over steps 1–8, APGD-CE over 1–8 with no zero gradient), else a warning."""
  paper = profiles.attack_profile("paper").checks
  check11 = lambda r: {c["id"]: c for c in checks.sanity_checks(r, paper)}[11]
  r = _flagged_results()
  rows = r["flags"]["per_eps"][0]["rows"]
  rows[1].update(zero_grad_count=1, zero_grad_robust_count=1)
  rows.insert(1, {**rows[1], "attack": "apgd_ce_full", "zero_grad_count": 0, "zero_grad_robust_count": 0})
  r["flags"]["flag_steps"] = {"apgd_ce_full": [1, 2, 3], "apgd_t_step": [2]}
  c = check11(r)
  assert c["status"] == "fail" and c["numbers"]["zero_grad_uncovered"] == 0
  assert readings.reading(11, True, c)[0] == "covered"
  r["flags"]["flag_steps"]["apgd_t_step"] = [2, 4]  # step 4: no other APGD run attacked there
  assert readings.reading(11, True, check11(r))[0] == "warning"
  r["flags"]["flag_steps"]["apgd_t_step"] = [2]
  rows[1]["zero_grad_count"] = 1  # the other run started at a zero gradient too (on which examples: unknown)
  assert readings.reading(11, True, check11(r))[0] == "warning"
  rows[1]["zero_grad_count"] = 0
  r["flags"]["per_eps"].append({"eps": 0.02, "rows": [{**rows[1], "eps": 0.02}]})  # another ε: no cover
  r["flags"]["per_eps"][0]["rows"].pop(1)
  assert readings.reading(11, True, check11(r))[0] == "warning"


def test_a_report_reads_saved_results_by_todays_rules(tmp_path):
  """The report recomputes each run's checks from its saved numbers: a results.json whose check 11 was written
  before the cover count reads as covered, its numbers unchanged."""
  from rsrnn_jax.reproduction import runs
  r = _flagged_results()
  rows = r["flags"]["per_eps"][0]["rows"]
  rows[1].update(zero_grad_count=1, zero_grad_robust_count=1)
  rows.insert(1, {**rows[1], "attack": "apgd_ce_full", "zero_grad_count": 0, "zero_grad_robust_count": 0})
  r["flags"]["flag_steps"] = {"apgd_ce_full": [1, 2, 3], "apgd_t_step": [2]}
  settings = profiles.attack_profile("adaptive").checks.to_dict()
  r["config"] = {"attack": {"checks": settings}}
  r["checks"] = [{"id": 11, "status": "fail", "numbers": {"zero_grad_robust": 1, "zero_grad_uncovered": 1}}]
  folder = tmp_path / "runs" / "rsrnn" / "seed0" / "attack_adaptive"
  folder.mkdir(parents=True)
  (folder / "results.json").write_text(json.dumps(r))
  back = runs.load_runs(str(tmp_path), {"rsrnn": [0]}, ("adaptive",))["rsrnn"][0]["attack"]["adaptive"]
  c11 = {c["id"]: c for c in back["checks"]}[11]
  assert c11["numbers"]["zero_grad_uncovered"] == 0 and readings.reading(11, True, c11)[0] == "covered"
  assert back["flags"] == r["flags"] and len(back["checks"]) == 11
  del r["config"]  # results without their check settings keep their checks
  (folder / "results.json").write_text(json.dumps(r))
  back = runs.load_runs(str(tmp_path), {"rsrnn": [0]}, ("adaptive",))["rsrnn"][0]["attack"]["adaptive"]
  assert back["checks"] == r["checks"]


def test_robust_flag_checks_pass_and_fail():
  paper = profiles.attack_profile("paper").checks
  status = lambda r: {c["id"]: c["status"] for c in checks.sanity_checks(r, paper) if c["id"] > 7}
  assert status(_fake_results()) == {}  # without flags: the seven checks only
  assert status(_flagged_results()) == {8: "pass", 9: "pass", 10: "pass", 11: "pass"}
  r = _flagged_results()
  for per in r["flags"]["per_eps"]:
    for row in per["rows"]:
      row["scanpath_changed_count"] = 0 if row["attack"] in ("bpda_step", "scanpath_step") else 5
  r["policy_check"]["attacks"]["bpda_step"]["broke"] = 40  # allowed to miss floor(0.1 × 50) = 5
  r["flags"]["per_eps"][0]["rows"][-1]["broke_at_k"] = 3   # allowed floor(0.01 × 200) = 2
  r["flags"]["per_eps"][0]["rows"][1]["zero_grad_count"] = 2
  assert status(r) == {8: "fail", 9: "fail", 10: "fail", 11: "fail"}
  r = _flagged_results()  # zero-gradient starts only on examples another attack broke: nothing overstated
  r["flags"]["per_eps"][0]["rows"][1].update(zero_grad_count=2, zero_grad_robust_count=0)
  c11 = {c["id"]: c for c in checks.sanity_checks(r, paper)}[11]
  assert c11["status"] == "pass" and "zero-gradient starts 2/30 (on examples another attack broke)" in c11["detail"]
  r["flags"]["per_eps"][0]["rows"][1]["zero_grad_robust_count"] = 1
  c11 = {c["id"]: c for c in checks.sanity_checks(r, paper)}[11]
  assert c11["status"] == "fail" and "1 of them on examples no attack broke" in c11["detail"]
  assert readings.reading(11, True, c11)[0] == "warning"  # results without the cover count: not known
  r["flags"]["per_eps"][0]["rows"][1]["zero_grad_uncovered_count"] = 0  # another APGD run had a working gradient
  c11 = {c["id"]: c for c in checks.sanity_checks(r, paper)}[11]
  assert c11["status"] == "fail" and "0 of those not attacked by another APGD run" in c11["detail"]
  assert readings.reading(11, True, c11)[0] == "covered"
  r["randomness"]["same_key_max_diff"] = 1e-3  # ... but two passes of one input differ: a warning again
  assert readings.reading(11, True, {c["id"]: c for c in checks.sanity_checks(r, paper)}[11])[0] == "warning"
  r = _flagged_results()
  r["randomness"]["same_key_max_diff"] = 1e-3
  assert status(r)[11] == "fail"
  r["flags"]["per_eps"][0]["rows"] = r["flags"]["per_eps"][0]["rows"][:2]  # no policy or transfer attack
  r["policy_check"], r["notes"] = None, ["transfer: skipped (no source model)"]
  checks_ = {c["id"]: c for c in checks.sanity_checks(r, paper)}
  assert [checks_[i]["status"] for i in (8, 9, 10)] == ["skipped"] * 3
  assert checks_[10]["detail"] == "transfer: skipped (no source model)"


def test_every_failure_says_what_it_means_for_the_numbers():
  paper = profiles.attack_profile("paper").checks
  r = _flagged_results()
  r["untargeted"]["attacks"]["pgd_step"][1]["adv_acc"][1] = 0.5  # 1 fails
  r["convergence"][0]["strong_acc"] = 0.2                       # 3 fails
  r["square"]["square_only"] = 5                                # 5 fails
  for e in r["untargeted"]["attacks"]["pgd_full"]:              # 7 fails
    e["adv_acc"][3] = e["adv_acc"][1] - 0.1
  r["policy_check"]["attacks"]["bpda_step"]["broke"] = 40       # 9 fails
  out = checks.sanity_checks(r, paper)
  read = readings.readings([out])
  failed = {i: kind for i, (_, kind, _) in read.items()}
  assert {1, 3, 5, 7, 9} <= set(failed)
  assert all(kind in readings.READING_KINDS and meaning for _, kind, meaning in read.values())
  assert set(read) == {c["id"] for c in out if c["status"] == "fail"}  # the failed checks, and only them
  # A lost recovery is a finding about the model; an unconverged attack or a weak policy attack is covered by
  # the stronger one in the worst case; an accuracy that rises with ε is a warning.
  assert (failed[7], failed[3], failed[9], failed[1]) == ("finding", "covered", "covered", "warning")
  # Square's extra breaks count in the worst case only where it runs in the robust-flags cascade.
  assert failed[5] == "covered" and readings.reading(5, flags=False)[0] == "warning"
  # Over several runs: each failed check once, read as in its own profile.
  plain = checks.sanity_checks(_fake_results(), paper)
  read = readings.readings([plain, out])
  assert list(read) == sorted(failed) and read[5][1] == "covered"
  assert readings.readings([plain]) == {}


def test_a_stronger_profile_of_the_same_run_answers_the_weaker_profiles_check_5():
  """Square beating the paper profile's PGD-5 is covered where the same run's flagged profile passes check 5 (its
  cascade leaves Square nothing); without such a profile, or where it fails too, it stays a warning."""
  paper, adaptive = profiles.attack_profile("paper").checks, profiles.attack_profile("adaptive").checks
  weak = _fake_results()
  weak["square"]["square_only"] = 5
  attacks = {"paper": {"checks": checks.sanity_checks(weak, paper)},
             "adaptive": {"checks": checks.sanity_checks(_flagged_results(), adaptive)}}
  assert {c["id"]: c["status"] for c in attacks["paper"]["checks"]}[5] == "fail"
  assert readings.readings([readings.run_checks(attacks, "paper")])[5][1] == "covered"
  assert readings.readings([attacks["paper"]["checks"]])[5][1] == "warning"
  assert readings.readings([readings.run_checks({**attacks, "adaptive": None}, "paper")])[5][1] == "warning"
  for c in attacks["adaptive"]["checks"]:
    c["status"] = "fail" if c["id"] == 5 else c["status"]
  assert readings.readings([readings.run_checks(attacks, "paper")])[5][1] == "warning"
  assert readings.run_checks(attacks, "adaptive") == attacks["adaptive"]["checks"]  # no stronger profile
