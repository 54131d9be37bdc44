"""`make reproduce` (rsrnn_jax/reproduction/): the bootstrap intervals and the three-valued verdicts on hand-made
numbers (ours and the paper's with its read-off tolerance), the budgets and configs, stage skipping per seed with
fake stages, and the --quick run end to end on the tiny data set, twice."""
import importlib.util
import json
import re
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from rsrnn_jax import workdir
from rsrnn_jax.models import registry
from rsrnn_jax.reproduction import run as R
from rsrnn_jax.reproduction import run_configs as RC
from rsrnn_jax.reproduction import runs as RUNS
from rsrnn_jax.reproduction import stages as STAGES
from rsrnn_jax.reproduction import stats as S
from rsrnn_jax.reproduction import verdicts as V
from rsrnn_jax.reproduction.paper_numbers import PAPER
from tests.reproduce_helpers import FakeStages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _correct(rng, n, acc):
  """n examples, a fraction ``acc`` of them correct, in random order."""
  out = np.zeros(n, bool)
  out[rng.permutation(n)[:int(round(acc * n))]] = True
  return out


def _model(rng, accs, n=200, eps=2):
  """[S, E, n, 2] per-example data: per seed, accuracy accs[s] at both read-outs and every ε."""
  return np.stack([np.stack([np.stack([_correct(rng, n, a)] * 2, -1) for _ in range(eps)]) for a in accs])


def test_bootstrap_decides_a_certain_difference_and_not_identical_models():
  rng = np.random.default_rng(0)
  diff = [("A", 0, 1.0), ("B", 0, -1.0)]
  certain = S.bootstrap({"A": _model(rng, [0.8, 0.8, 0.8]), "B": _model(rng, [0.2, 0.2, 0.2])}, diff)
  assert abs(certain["estimate"] - 0.6) < 1e-9 and certain["interval"][0] > 0.5
  assert V.verdict(certain["interval"]) == V.HOLDS
  a = _model(rng, [0.6, 0.5])
  same = S.bootstrap({"A": a, "B": a.copy()}, diff)                   # identical models, two seeds each
  assert same["estimate"] == 0 and same["interval"][0] < 0 < same["interval"][1]
  assert V.verdict(same["interval"]) == V.UNDECIDED
  # Deterministic (explicit Generator seed); another seed gives another, similar interval.
  assert S.bootstrap({"A": a, "B": a.copy()}, diff) == same
  other = S.bootstrap({"A": a, "B": a.copy()}, diff, seed=1)["interval"]
  assert other != same["interval"] and abs(other[1] - same["interval"][1]) < 0.02


def test_pairing_decides_a_constant_shift_on_the_same_examples():
  rng = np.random.default_rng(1)
  n = 200
  low = _correct(rng, n, 0.5)
  high = low.copy()
  high[np.flatnonzero(~low)[:10]] = True                                # +5 points: 10 more examples right
  data = {"A": np.stack([high, high], -1)[None, None], "B": np.stack([low, low], -1)[None, None]}
  diff = [("A", 1, 1.0), ("B", 1, -1.0)]
  paired, unpaired = S.bootstrap(data, diff), S.bootstrap(data, diff, paired=False)
  assert paired["estimate"] == pytest.approx(0.05) and unpaired["estimate"] == pytest.approx(0.05)
  assert paired["interval"][0] > 0.01 and V.verdict(paired["interval"]) == V.HOLDS
  assert unpaired["interval"][0] < 0 < unpaired["interval"][1] and V.verdict(unpaired["interval"]) == V.UNDECIDED


def test_seed_variation_widens_the_interval():
  rng = np.random.default_rng(2)
  base = _model(rng, [0.45], n=400)
  steady = np.concatenate([_model(rng, [0.55], n=400)] * 3)            # three seeds, the same accuracy
  varied = _model(rng, [0.85, 0.55, 0.25], n=400)                      # three seeds, mean 0.55, very different
  diff = [("A", 0, 1.0), ("B", 0, -1.0)]
  s = S.bootstrap({"A": steady, "B": base}, diff)
  v = S.bootstrap({"A": varied, "B": base}, diff)
  assert abs(s["estimate"] - v["estimate"]) < 1e-9
  assert V.verdict(s["interval"]) == V.HOLDS and V.verdict(v["interval"]) == V.UNDECIDED
  assert v["interval"][1] - v["interval"][0] > 3 * (s["interval"][1] - s["interval"][0])
  with pytest.raises(ValueError, match="same eps, examples"):
    S.bootstrap({"A": steady, "B": base[:, :, :100]}, diff)
  assert S.mean_sd([0.5, 0.7]) == {"mean": pytest.approx(0.6), "sd": pytest.approx(0.1414, abs=1e-4), "n": 2}
  assert S.mean_sd([0.5])["sd"] == 0.0


def test_three_valued_rule_and_its_combination():
  assert V.verdict([0.001, 0.05]) == V.HOLDS
  assert V.verdict([-0.05, -0.001]) == V.FAILS
  assert V.verdict([-0.01, 0.02]) == V.UNDECIDED
  assert V.verdict([0.0, 0.1]) == V.UNDECIDED and V.verdict([-0.1, 0.0]) == V.UNDECIDED  # touching 0: not decided
  assert V.combine([V.HOLDS, V.HOLDS]) == V.HOLDS
  assert V.combine([V.HOLDS, V.UNDECIDED]) == V.UNDECIDED
  assert V.combine([V.HOLDS, V.FAILS]) == V.FAILS and V.combine([V.UNDECIDED, V.FAILS]) == V.FAILS
  assert V.combine([]) == V.UNDECIDED


def _claims_data(rng, retina, crops, whole, n=300):
  """{paper key: [S=2, E=3, n, 2]} with accuracies (at k, at T) per group of the claims."""
  def group(k, t):
    return np.stack([np.stack([np.stack([_correct(rng, n, k), _correct(rng, n, t)], -1) for _ in range(3)])
                     for _ in range(2)])
  return {"RS-RNN": group(*retina), "Base-Retina": group(*retina), "DRAM": group(*crops), "GF-Net-m": group(*crops),
          "S3TA": group(*whole), "FF-CNN": group(*whole)}


def test_claims_hold_fail_or_stay_undecided_on_hand_made_per_example_results():
  rng = np.random.default_rng(3)
  ours = lambda rows: {(r["claim"]["id"], r["attack"]): r["verdict"] for r in rows}
  paper_like = _claims_data(rng, retina=(0.5, 0.6), crops=(0.3, 0.31), whole=(0.05, 0.05))
  reversed_ = _claims_data(rng, retina=(0.2, 0.2), crops=(0.4, 0.4), whole=(0.6, 0.6))
  close = _claims_data(rng, retina=(0.3, 0.3), crops=(0.3, 0.3), whole=(0.3, 0.3))  # equal: nothing to decide
  got = ours(V.judge({"paper": paper_like, "strongest": reversed_, "adaptive": close}, resamples=500))
  assert got == {("retina", "paper"): V.HOLDS, ("crops", "paper"): V.HOLDS, ("recovery", "paper"): V.HOLDS,
                 ("retina", "strongest"): V.FAILS, ("crops", "strongest"): V.FAILS,
                 ("recovery", "strongest"): V.UNDECIDED,
                 ("retina", "adaptive"): V.UNDECIDED, ("crops", "adaptive"): V.UNDECIDED,
                 ("recovery", "adaptive"): V.UNDECIDED}
  # The retina's lead only at step k: the T test is undecided, so is the claim; reversed at T: it fails.
  only_k = _claims_data(rng, retina=(0.5, 0.3), crops=(0.3, 0.3), whole=(0.0, 0.0))
  row = V.judge_claim(V.CLAIMS[0], only_k, resamples=500)
  assert (row["tests"]["k"]["verdict"], row["tests"]["T"]["verdict"], row["verdict"]) == (V.HOLDS, V.UNDECIDED,
                                                                                          V.UNDECIDED)
  worse_at_t = _claims_data(rng, retina=(0.5, 0.1), crops=(0.3, 0.3), whole=(0.0, 0.0))
  assert V.judge_claim(V.CLAIMS[0], worse_at_t, resamples=500)["verdict"] == V.FAILS
  assert row["models"]["RS-RNN"]["k"]["n"] == 2 and abs(row["models"]["RS-RNN"]["k"]["mean"] - 0.5) < 1e-9
  # A missing model: not evaluated, never a verdict.
  partial = {m: a for m, a in paper_like.items() if m != "DRAM"}
  rows = {r["claim"]["id"]: r for r in V.judge({"paper": partial}, resamples=200)}
  assert rows["retina"]["verdict"] == V.NOT_EVALUATED and rows["retina"]["missing"] == ["DRAM"]
  assert rows["recovery"]["verdict"] == V.HOLDS


def test_pairs_show_which_models_carry_a_group_claim():
  rng = np.random.default_rng(5)
  data = _claims_data(rng, retina=(0.4, 0.4), crops=(0.5, 0.5), whole=(0.05, 0.05))
  data["GF-Net-m"] = _claims_data(rng, retina=(0.1, 0.1), crops=(0.1, 0.1), whole=(0.1, 0.1))["RS-RNN"]  # weak
  group = {r["claim"]["id"]: r["verdict"] for r in V.judge({"paper": data}, resamples=500)}
  assert group["retina"] == V.HOLDS                     # (0.4 + 0.4) / 2 − (0.5 + 0.1) / 2 > 0 ...
  pairs = {r["claim"]["id"]: r["verdict"] for r in V.judge({"paper": data}, V.PAIRS, resamples=500)}
  assert pairs["retina:RS-RNN>DRAM"] == V.FAILS and pairs["retina:Base-Retina>DRAM"] == V.FAILS  # ... on one pair
  assert pairs["retina:RS-RNN>GF-Net-m"] == V.HOLDS and pairs["crops:DRAM>S3TA"] == V.HOLDS
  assert len(V.PAIRS) == 8 and V.pairs_of(V.CLAIMS[2]) == ()
  assert {p["of"] for p in V.PAIRS} == {"retina", "crops"}


def test_clean_correct_verdict_is_not_carried_by_a_weak_model():
  """A crop model at 30% clean whose correct examples all survive the attack is the most robust model on the
  examples everyone gets right, though its accuracy under attack is the lowest: the group verdict holds, the
  clean-correct verdict fails."""
  rng = np.random.default_rng(7)
  n = 400
  clean = {m: np.ones((2, n, 2), bool) for m in ("RS-RNN", "Base-Retina", "DRAM", "GF-Net-m")}
  data = {}
  for m in ("RS-RNN", "Base-Retina", "DRAM"):  # 80% accurate under attack, everything right clean
    data[m] = np.stack([np.stack([np.stack([_correct(rng, n, 0.8)] * 2, -1)] * 2)] * 2)
  weak = np.zeros(n, bool)
  weak[:120] = True                              # GF-Net-m: right on 30% of the images, clean and attacked
  data["GF-Net-m"] = np.broadcast_to(weak[None, None, :, None], (2, 2, n, 2)).copy()
  clean["GF-Net-m"] = np.broadcast_to(weak[None, :, None], (2, n, 2)).copy()
  claim = V.CLAIMS[0]
  assert V.judge_claim(claim, data, resamples=300)["verdict"] == V.HOLDS
  kept = V.clean_correct_examples(clean, V.needed_models(claim))
  np.testing.assert_array_equal(kept, weak)
  row = V.judge_claim(claim, data, clean, resamples=300)
  assert row["num_examples"] == 120 and row["verdict"] == V.FAILS
  assert row["models"]["GF-Net-m"]["k"]["mean"] == 1.0
  # A model without clean data is missing; no common clean-correct example: not evaluated.
  assert V.judge_claim(claim, data, {m: c for m, c in clean.items() if m != "DRAM"})["missing"] == ["DRAM"]
  none_right = {**clean, "DRAM": np.zeros((2, n, 2), bool)}
  assert V.judge_claim(claim, data, none_right)["verdict"] == V.NOT_EVALUATED
  rows = V.judge({"paper": data}, V.CLAIMS[:1], {"paper": clean}, resamples=300)
  assert rows[0]["verdict"] == V.FAILS and rows[0]["num_examples"] == 120


def test_settings_give_their_config_variant_and_their_own_epsilons():
  from rsrnn_jax.reproduction import settings as SET
  full, quick = R.BUDGETS["full"], R.QUICK_BUDGET
  assert list(SET.SETTINGS) == ["demo", "paper_geometry"]
  for st in SET.SETTINGS.values():
    b = st.budget(full)
    assert (b.epsilons, b.adaptive_epsilons) == (st.epsilons, st.adaptive_epsilons) and len(b.adaptive_epsilons) >= 2
    assert b.train_steps == full.train_steps and b.seeds == full.seeds  # only the ε grids differ
    assert st.budget(quick) is quick                                      # the smoke test keeps its own
    displays = {registry.variant(m).display for m in R.MODELS}
    assert set(st.table1_reasons) <= displays and all(st.table1_reasons.values())  # reasons name our models
  pg = RC.stage_configs("gfnet_m", SET.PAPER_GEOMETRY.budget(full), seed=1, setting=SET.PAPER_GEOMETRY)
  c, adaptive = pg["train"], pg["attack_adaptive"].attack
  assert (c.data.canvas_size, c.data.item_size, c.model.sampler.out_size) == (168, 100, 32)
  assert tuple(c.attack.epsilons) == SET.PAPER_GEOMETRY.epsilons
  assert tuple(adaptive.epsilons) == SET.PAPER_GEOMETRY.adaptive_epsilons and c.seed == 1
  demo = RC.model_config("gfnet_m", full)
  assert demo.data.canvas_size == 96 and "item_size" not in demo.data
  assert R.main(["--setting", "nonesuch", "--report_only"]) == 2


def test_paper_numbers_go_through_the_same_rule_with_their_read_off_tolerance():
  assert "paper.md §8" in PAPER["source"]
  for section in ("table1", "accuracy_vs_gmacs", "adv_accuracy", "adv_accuracy_per_step", "asr"):
    assert PAPER[section]["source"]
  p = PAPER["adv_accuracy"]
  assert all(len(v) == len(p["epsilons"]) for v in list(p["at_k"].values()) + list(p["at_T"].values()))
  rows = {r["claim"]["id"]: r for r in V.judge_paper()}
  assert all(r["verdict"] == V.HOLDS for r in rows.values())
  rec = rows["recovery"]["tests"]["T vs k"]
  assert rec["estimate"] == pytest.approx(np.mean([56.5, 44.5, 23.6]) / 100 - np.mean([49.0, 34.7, 14.5]) / 100)
  assert rec["interval"] == pytest.approx([rec["estimate"] - 0.02, rec["estimate"] + 0.02])  # ±1 pt, two values
  assert rows["retina"]["tests"]["k"]["tolerance"] == pytest.approx(0.02)  # four group means of ±1 pt, weights ½
  # Hand-made published numbers: a 1.5-point recovery is within the read-off tolerance, a 3-point loss is not.
  vals = lambda k, t: {"RS-RNN": {"k": [k] * 3, "T": [t] * 3}}
  assert V.judge_paper(vals(0.30, 0.315))[2]["verdict"] == V.UNDECIDED
  assert V.judge_paper(vals(0.30, 0.27))[2]["verdict"] == V.FAILS
  assert V.judge_paper(vals(0.30, 0.33))[2]["verdict"] == V.HOLDS
  assert V.judge_paper(vals(0.30, 0.33))[0]["verdict"] == V.NOT_EVALUATED
  # Every model the paper has numbers for is a registered model or variant, and every claim names them.
  keys = {registry.variant(v).paper_key for v in RC.MODELS}
  assert set(PAPER["table1"]["top1"]) | set(PAPER["asr"]["targeted_read_off"]) <= keys
  for c in V.CLAIMS:
    assert set(V.needed_models(c)) <= keys
  assert V.by_paper_key({"rsrnn": 1, "ff_cnn_at": 2}) == {"RS-RNN": 1, "FF-CNN-AT": 2}


def test_describe_model_reads_table1_columns_from_the_configs():
  got = {registry.variant(m).paper_key: registry.describe(RC.model_config(m).model.to_dict()) for m in RC.MODELS}
  for m, want in PAPER["table1"]["input"].items():
    assert got[m]["input"] == want, m
    assert got[m]["gru"].split(" ")[0] == PAPER["table1"]["gru"][m], m
    assert got[m]["attention"] == PAPER["table1"]["attention"][m], m
  assert got["FF-CNN-AT"] == got["FF-CNN"]


def test_full_budget_same_steps_for_every_model_seeds_and_both_attack_profiles():
  b = R.BUDGETS["full"]
  assert (b.train_steps, b.batch_size, b.checkpoint_steps, b.attack_examples) == (2600, 64, 260, 1000)
  assert b.stages == ("train", "eval", "attack_paper", "attack_adaptive")
  assert b.seeds_for("rsrnn") == (0, 1, 2) and b.seeds_for("ff_cnn_at") == (0,)
  assert b.seeds_for("ff_cnn_at", (5, 6)) == (5,) and b.seeds_for("dram", (5, 6)) == (5, 6)
  assert R.plateau_steps(2600, 260) == [2080, 2340, 2600] and R.plateau_steps(4, 2) == [2, 2, 4]
  assert R.plateau_steps(700, 250) == [500, 500, 700]
  configs = RC.stage_configs("rsrnn", b, seed=2)
  assert list(configs) == list(b.stages)
  train, adaptive = configs["train"], configs["attack_adaptive"].attack
  assert train.seed == 2 and train.train.num_train_steps == 2600 and train.train.keep_checkpoints >= 3
  assert configs["attack_paper"] is train and tuple(train.attack.epsilons) == (0.01, 0.02)
  assert (train.attack.attack_step, train.attack.eval_steps, train.train.num_glimpses) == (4, 8, 4)
  assert adaptive.profile == "adaptive" and adaptive.flags and tuple(adaptive.epsilons) == (0.02,)
  assert (adaptive.attack_step, adaptive.eval_steps, adaptive.num_examples) == (4, 8, 1000)
  assert (adaptive.num_iterations, adaptive.policy.num_iterations) == (20, 60)  # check 9 passes at 60
  steps = {m: RC.model_config(m, b).train.num_train_steps for m in RC.MODELS}
  assert set(steps.values()) == {2600}
  assert R.main(["--seeds", "0,x", "--report_only"]) == 2 and R.main(["--models", "nonesuch"]) == 2


def test_fingerprints_follow_the_fields_each_stage_depends_on():
  cfg = lambda **o: RC.stage_configs("rsrnn", R.DEFAULT_BUDGET, o)
  base = STAGES.fingerprints(cfg())
  assert set(base) == set(R.DEFAULT_BUDGET.stages)
  attack = STAGES.fingerprints(cfg(**{"attack.seed": 1}))  # both profiles' attack configs
  assert attack["train"] == base["train"] and attack["eval"] == base["eval"]
  assert attack["attack_paper"] != base["attack_paper"] and attack["attack_adaptive"] != base["attack_adaptive"]
  ev = STAGES.fingerprints(cfg(**{"eval.num_figure_images": 3}))
  assert ev["train"] == base["train"] and ev["eval"] != base["eval"] and ev["attack_paper"] == base["attack_paper"]
  assert STAGES.fingerprints(cfg(), plateau_examples=7)["eval"] != base["eval"]
  tr = STAGES.fingerprints(cfg(**{"train.learning_rate": 1e-3}))
  assert all(tr[s] != base[s] for s in base)
  assert STAGES.fingerprints(cfg(**{"train.log_every": 7})) == base  # bookkeeping only
  # how batches are decoded and handed over: the same batches of the cluttered data, so the same runs
  assert STAGES.fingerprints(cfg(**{"data.decoder": "pil", "data.image_dtype": "float32"})) == base
  assert STAGES.fingerprints(cfg(**{"data.downscale": "area", "data.worker_threads": 2})) == base  # JPEG-only, speed
  assert STAGES.fingerprints(cfg(**{"data.clutter_size": 7}))["train"] != base["train"]
  seed1 = STAGES.fingerprints(RC.stage_configs("rsrnn", R.DEFAULT_BUDGET, seed=1))
  assert all(seed1[s] != base[s] for s in base)
  ff, ff_at = (STAGES.fingerprints(RC.stage_configs(m, R.DEFAULT_BUDGET))["train"] for m in ("ff_cnn", "ff_cnn_at"))
  assert ff != ff_at


@pytest.mark.parametrize("setting", ["demo", "paper_geometry"])
def test_the_committed_rsrnn_runs_keep_their_fingerprints(setting):
  """A config field added since the committed reproduction ran must not change what its runs depend on (else
  ``make reproduce`` would discard and retrain them): register it in stages._DATA_PIPELINE or _TRAIN_BOOKKEEPING
  if it changes nothing, or rerun the reproduction if it does."""
  from rsrnn_jax.reproduction import settings
  root = os.path.join(os.path.dirname(os.path.dirname(__file__)), "reproduction", setting)
  recorded = STAGES.read_stages(RUNS.run_dir(root, "rsrnn", 0))
  if not recorded:
    pytest.skip(f"no committed {setting} RS-RNN run")
  st = settings.get(setting)
  b = st.budget(R.FULL_BUDGET)
  now = STAGES.fingerprints(R.plan(b, ("rsrnn",), (0,), out_dir=root, setting=st)["rsrnn"][0], b.plateau_examples)
  kept = ("train", "eval", "attack_paper")  # the adaptive stage follows the budget's deliberate changes
  assert {k: recorded[k]["fingerprint"] for k in kept} == {k: now[k] for k in kept}


def test_plateau_rule_counts_a_rise_of_exactly_one_point_as_reached():
  assert RUNS.plateau_reached(100 * (0.8155 - 0.8055)) is True      # 1.0000000000000009 points: 20 of 2,000
  assert RUNS.plateau_reached(100 * (0.8160 - 0.8055)) is False
  assert RUNS.plateau_reached(-3.0) is True and RUNS.plateau_reached(None) is None


def test_short_of_plateau_lists_the_runs_still_learning():
  run = lambda rise: {"plateau": {"rise_points": rise}}
  runs = {"gfnet_m": {0: run(0.4), 1: run(1.6)}, "rsrnn": {0: run(None), 1: {"plateau": None}}, "dram": {2: run(-2.0)}}
  assert RUNS.short_of_plateau(runs) == [("gfnet_m", 1, 1.6)]


def test_adaptive_transfer_attack_comes_from_the_source_run_of_the_same_seed(tmp_path):
  b, out = R.FULL_BUDGET, str(tmp_path / "a")
  configs = R.plan(b, ("rsrnn", "ff_cnn", "ff_cnn_at"), (0, 1), out_dir=out)
  src = lambda m, s: configs[m][s]["attack_adaptive"].attack.transfer_workdir
  assert src("rsrnn", 1) == RUNS.run_dir(out, "ff_cnn", 1) and src("ff_cnn_at", 0) == RUNS.run_dir(out, "ff_cnn", 0)
  assert src("ff_cnn", 0) == ""                                             # not from itself
  assert configs["rsrnn"][0]["attack_paper"].attack.transfer_workdir == ""  # the paper profile has none
  assert b.run_order(("rsrnn", "dram", "ff_cnn", "ff_cnn_at")) == ["ff_cnn", "rsrnn", "dram", "ff_cnn_at"]
  # without ff_cnn in the plan: only a source trained before counts
  alone = lambda o: R.plan(b, ("rsrnn",), (0, 1), out_dir=o)["rsrnn"]
  assert [alone(out)[s]["attack_adaptive"].attack.transfer_workdir for s in (0, 1)] == ["", ""]
  STAGES.write_stages(_mkdir(RUNS.run_dir(out, "ff_cnn", 1)), {"train": {"done": True}})
  assert alone(out)[1]["attack_adaptive"].attack.transfer_workdir == RUNS.run_dir(out, "ff_cnn", 1)
  # the fingerprint names the source run, not where the output folder is
  fp = lambda o: STAGES.fingerprints(R.plan(b, ("rsrnn", "ff_cnn"), (1,), out_dir=o)["rsrnn"][1])
  assert fp(out) == fp(str(tmp_path / "elsewhere")) != STAGES.fingerprints(alone(str(tmp_path / "c"))[1])


_SIGTERM_CHILD = """
import sys, time
from rsrnn_jax.reproduction import run as R, run_configs as RC, stages as STAGES
R.stop_cleanly_on_sigterm()
def slow(config, run_dir):
  time.sleep(60)
configs = RC.stage_configs("rsrnn", R.QUICK_BUDGET, seed=0)
STAGES.run_model("rsrnn/seed0", {"train": configs["train"]}, sys.argv[1], {"train": slow})
"""


def test_sigterm_lets_the_interrupted_stage_record_its_time(tmp_path):
  run_dir = str(tmp_path / "run")
  child = subprocess.Popen([sys.executable, "-c", _SIGTERM_CHILD, run_dir], cwd=ROOT)
  stages = os.path.join(run_dir, STAGES.STAGES_FILE)
  deadline = time.time() + 120
  while not os.path.exists(stages) and time.time() < deadline and child.poll() is None:
    time.sleep(0.2)
  time.sleep(1.0)
  child.send_signal(signal.SIGTERM)
  assert child.wait(timeout=60) == 128 + signal.SIGTERM
  rec = STAGES.read_stages(run_dir)["train"]
  assert rec["done"] is False and rec["seconds"] >= 1.0


def _mkdir(path):
  os.makedirs(path, exist_ok=True)
  return path


def test_stages_skip_per_seed_and_rerun_what_changed_or_is_missing(tmp_path, caplog):
  fake = FakeStages()
  cfg = lambda seed=0, **o: RC.stage_configs("rsrnn", R.QUICK_BUDGET, o, seed=seed)
  caplog.set_level(logging.INFO, logger="rsrnn_jax.reproduction.run")
  everything = ["train", "eval", "attack_paper", "attack_adaptive"]

  def run(configs, seed=0):
    fake.calls.clear()
    stages = STAGES.run_model(f"rsrnn/seed{seed}", configs, RUNS.run_dir(str(tmp_path), "rsrnn", seed), fake.fns())
    assert all(stages[s]["done"] for s in configs)
    return list(fake.calls)

  assert run(cfg()) == everything
  assert run(cfg(1), seed=1) == everything                                  # another seed: its own run
  assert os.path.isdir(tmp_path / "runs" / "rsrnn" / "seed1" / "attack_adaptive")
  caplog.clear()
  assert run(cfg()) == [] and run(cfg(1), seed=1) == []                    # everything up to date
  assert caplog.text.count("up to date, skipped") == 8
  run_dir = RUNS.run_dir(str(tmp_path), "rsrnn", 0)
  os.remove(os.path.join(run_dir, "attack_paper", "per_example.npz"))
  assert run(cfg()) == ["attack_paper"]                                    # a missing output
  assert run(cfg(**{"attack.seed": 3})) == ["attack_paper", "attack_adaptive"]  # both profiles' field
  assert run(cfg(**{"attack.seed": 3, "eval.num_figure_images": 1})) == ["eval"]  # attacks do not need eval
  assert run(cfg(1), seed=1) == []                                         # seed 1 untouched
  # Training interrupted after its first checkpoint: the next run resumes it, then every later stage.
  fake.fail_train_at = 2
  with pytest.raises(KeyboardInterrupt):
    STAGES.run_model("rsrnn/seed0", cfg(**{"train.learning_rate": 1e-4}), run_dir, fake.fns())  # a new train config
  assert not os.path.exists(os.path.join(run_dir, "attack_paper"))        # ... discarded the old run
  assert STAGES.read_stages(run_dir)["train"]["done"] is False
  fake.fail_train_at = None
  caplog.clear()
  assert run(cfg(**{"train.learning_rate": 1e-4})) == everything
  assert "resuming from step 2" in caplog.text
  assert run(cfg(1), seed=1) == []


def test_a_second_process_on_the_same_run_is_refused(tmp_path):
  run_dir = RUNS.run_dir(str(tmp_path), "rsrnn", 0)
  hold = ("import sys, time; from rsrnn_jax import workdir; held = workdir.locked(sys.argv[1]); "
          "held.__enter__(); print('locked', flush=True); time.sleep(600)")
  holder = subprocess.Popen([sys.executable, "-c", hold, run_dir], stdout=subprocess.PIPE, text=True, cwd=ROOT)
  fake = FakeStages()
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(workdir.UserError, match=f"in use by PID {holder.pid}"):
      STAGES.run_model("rsrnn/seed0", RC.stage_configs("rsrnn", R.QUICK_BUDGET, seed=0), run_dir, fake.fns())
  finally:
    holder.kill()
    holder.wait()
  assert fake.calls == []


def test_stages_subset_runs_only_those_and_waits_for_training(tmp_path, caplog):
  fake = FakeStages()
  configs = RC.stage_configs("rsrnn", R.QUICK_BUDGET, seed=0)
  run_dir = RUNS.run_dir(str(tmp_path), "rsrnn", 0)
  caplog.set_level(logging.INFO, logger="rsrnn_jax.reproduction.run")

  def run(only):
    fake.calls.clear()
    STAGES.run_model("rsrnn/seed0", configs, run_dir, fake.fns(), only=only)
    return list(fake.calls)

  assert run(("eval", "attack_paper")) == []                               # nothing trained: they wait
  assert caplog.text.count("waits for train") == 3
  assert run(("train", "eval", "attack_paper")) == ["train", "eval", "attack_paper"]
  assert "attack_adaptive not run (not in --stages)" in caplog.text
  assert run(("attack_adaptive",)) == ["attack_adaptive"]                  # later, the rest
  assert run(None) == []
  with pytest.raises(ValueError, match="--stages expects a comma-separated subset of train,eval"):
    R.reproduce(str(tmp_path), R.QUICK_BUDGET, ("rsrnn",), stages=("train", "attack"))
  assert R.main(["--out", str(tmp_path), "--quick", "--stages", "tran"]) == 2


def test_rerun_runs_an_up_to_date_stage_again_and_never_training(tmp_path, capsys):
  fake = FakeStages()
  configs = RC.stage_configs("rsrnn", R.QUICK_BUDGET, seed=0)
  run_dir = RUNS.run_dir(str(tmp_path), "rsrnn", 0)

  def run(**kw):
    fake.calls.clear()
    STAGES.run_model("rsrnn/seed0", configs, run_dir, fake.fns(), **kw)
    return list(fake.calls)

  assert run() == ["train", "eval", "attack_paper", "attack_adaptive"]
  assert run() == []
  assert run(rerun=("attack_adaptive",)) == ["attack_adaptive"]           # up to date, run again
  assert STAGES.read_stages(run_dir)["attack_adaptive"]["done"]
  assert run(rerun=("eval",), only=("eval",)) == ["eval"]                  # what depends on eval does not rerun
  for bad in (["--rerun", "train"], ["--rerun", "eval", "--stages", "attack_paper"]):
    assert R.main(["--out", str(tmp_path), "--quick", *bad]) == 2
    assert "--rerun expects a comma-separated subset of" in capsys.readouterr().err
  assert run() == []                                                       # the refused runs changed nothing


def _tiny_data_args(tiny_data):
  return ["--set", f"data.source_dir={tiny_data['source_dir']}", "--set", f"data.data_dir={tiny_data['data_dir']}",
          "--set", "data.canvas_size=32", "--set", "data.num_clutter=2", "--set", "data.clutter_size=5",
          "--set", "model.sampler.out_size=16"]


# The glimpse path (retina + ConvGRU, fixations, two seeds) and the whole-image path with adversarial training
# (one seed: the quick budget's adversarial_seeds); every model's own paths are tested in test_train.py and the
# attack tests.
QUICK_MODELS = ("rsrnn", "ff_cnn_at")


def _readme_tables():
  spec = importlib.util.spec_from_file_location("readme_tables", os.path.join(ROOT, "tools", "readme_tables.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.mark.slow
def test_quick_reproduction_end_to_end_then_resumes_without_work(tiny_data, tmp_path, caplog):
  top = str(tmp_path / "repro")
  out = os.path.join(top, "demo")  # the setting's runs, report and verdicts
  # One seed here (the test budget); the per-seed stages and the bootstrap over seeds are tested above.
  argv = ["--quick", "--seeds", "0", "--out", top, "--setting", "demo", "--models", ",".join(QUICK_MODELS),
          *_tiny_data_args(tiny_data)]
  caplog.set_level(logging.INFO, logger="rsrnn_jax.reproduction.run")
  assert R.main(argv) == 0
  side = open(os.path.join(top, "report.md")).read()  # the settings side by side (here one)
  assert "## The settings" in side and "[demo](demo/report.md)" in side and "## The paper's claims in both" in side
  for name in ("report.md", "verdicts.json", "accuracy_vs_gmacs.png", "adv_accuracy_bars.png",
               "adv_accuracy_per_step.png", "fixations.png", "rsrnn_glimpses.gif", "reproduce.log"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  from PIL import Image
  with Image.open(os.path.join(out, "rsrnn_glimpses.gif")) as gif:
    assert gif.n_frames == R.QUICK_BUDGET.eval_steps
  runs = [("rsrnn", 0), ("ff_cnn_at", 0)]
  for m in QUICK_MODELS:
    assert os.listdir(os.path.join(out, "runs", m)) == ["seed0"]
  for m, s in runs:
    d = RUNS.run_dir(out, m, s)
    with np.load(os.path.join(d, "attack_paper", "per_example.npz")) as z:
      n = R.QUICK_BUDGET.attack_examples
      assert z["pgd_step"].shape == z["worst"].shape == (1, n, R.QUICK_BUDGET.eval_steps) and z["pgd_step"].dtype == bool
      assert list(z["index"]) == list(range(n)) and not (z["worst"] & ~z["pgd_step"]).any()
    with np.load(os.path.join(d, "attack_adaptive", "per_example.npz")) as z:
      assert z["worst"].shape == (1, n, R.QUICK_BUDGET.eval_steps)
    assert not os.path.exists(os.path.join(d, ".attack_adaptive.journal"))  # a finished attack leaves no journal
    plateau = json.load(open(os.path.join(d, "plateau.json")))
    assert plateau["steps"] == [2, 2, 4] and None not in plateau["accuracy"] and plateau["reached"] in (True, False)
  md = open(os.path.join(out, "report.md")).read()
  sections = md.split("\n## ")
  for title in ("Table 1", "Accuracy under attack", "Attack success rate", "Sanity checks", "Budget"):
    body = next(s for s in sections if s.startswith(title))
    for m in QUICK_MODELS:  # a row per model
      assert sum(line.startswith(f"| {registry.variant(m).display} ") for line in body.splitlines()) >= 1, (title, m)
  plateau_rows = [line for line in md.split("### Plateau")[1].split("\n### ")[0].splitlines() if line.startswith("| ")]
  assert len(plateau_rows) == 1 + len(runs)  # header, a row per run
  policy_rows = [line for line in md.split("### Policy")[1].split("\n## ")[0].splitlines() if line.startswith("| ")]
  assert len(policy_rows) == 1 + 1 and policy_rows[1].startswith("| RS-RNN | 0 |")  # FF-CNN-AT has no fixations
  claims = next(s for s in sections if s.startswith("The paper's claims"))
  assert sum(line.startswith("| ") for line in claims.splitlines()) == 1 + 3 * 3  # header, 3 claims × 3 attacks
  assert "Quick budget" in md and "paper.md §8" in md and "Nothing is missing" in md
  code = STAGES.read_stages(RUNS.run_dir(out, "rsrnn", 0))["train"]["code"]  # the commit each stage ran on
  assert code == STAGES.code_version() and f"finished on commit `{code}`" in md
  device = STAGES.read_stages(RUNS.run_dir(out, "rsrnn", 0))["attack_adaptive"]["device"]  # and where
  assert device == R.device_description() and f"on {device}" in md.split("Devices: ")[1].splitlines()[0]
  verdicts = json.load(open(os.path.join(out, "verdicts.json")))
  assert verdicts["num_attacked_examples"] == R.QUICK_BUDGET.attack_examples and verdicts["seeds"] == [0]
  assert verdicts["setting"]["name"] == "demo" and verdicts["setting"]["image_side"] == 32
  assert verdicts["setting"]["glimpse_side"] == 16 and len(verdicts["claims_clean_correct"]) == 3 * 3
  assert set(verdicts["under_attack"]) == {"paper", "strongest", "adaptive"} and "rsrnn" in verdicts["sanity"]
  assert verdicts["profiles"] == ["paper", "adaptive"] and verdicts["budget"]["name"] == "quick"
  (rsrnn_policy,) = verdicts["models"]["rsrnn"]["policy"]
  assert rsrnn_policy["seed"] == 0 and rsrnn_policy["one_scanpath"] in (True, False)
  assert len(rsrnn_policy["fixation_spread_px"]) == R.QUICK_BUDGET.eval_steps and not verdicts["models"]["ff_cnn_at"]["policy"]
  for v in verdicts["claims"]:  # RS-RNN's recovery gets a verdict and an interval; the others name what is missing
    if v["id"] == "recovery":
      t = v["tests"]["T vs k"]
      assert v["verdict"] in ("holds", "fails", "undecided") and t["interval"][0] <= t["estimate"] <= t["interval"][1]
      assert v["seeds"] == {"RS-RNN": [0]}
    else:
      assert v["verdict"] == "not evaluated" and "DRAM" in v["missing"]
  assert len(_readme_tables().render_verdicts({"demo": verdicts})) == 2 + 2 + 3  # note, blank, header, sep., claims
  assert len(verdicts["pairs"]) == len(V.PAIRS) * 3 and all(v["verdict"] == "not evaluated" for v in verdicts["pairs"])
  assert "## One model against one" in md

  # Second run: every stage of every run is skipped (no training, nothing rewritten but the report).
  watched = [os.path.join(RUNS.run_dir(out, m, s), f) for m, s in runs
             for f in ("metrics.jsonl", "eval/results.json", "plateau.json", "attack_paper/per_example.npz",
                       "attack_adaptive/results.json", "figures.npz", "checkpoints")]
  mtimes = {p: os.path.getmtime(p) for p in watched}
  caplog.clear()
  assert R.main(argv) == 0
  assert caplog.text.count("up to date, skipped") == len(R.QUICK_BUDGET.stages) * len(runs)
  assert {p: os.path.getmtime(p) for p in mtimes} == mtimes
  # --no_report (processes sharing one OUT): the stages are checked, the report is left as it is.
  report_files = [os.path.join(out, f) for f in ("report.md", "verdicts.json")] + [os.path.join(top, "report.md")]
  before = {p: os.path.getmtime(p) for p in report_files}
  assert R.main(argv + ["--no_report"]) == 0
  assert {p: os.path.getmtime(p) for p in report_files} == before
  assert R.main(argv + ["--no_report", "--report_only"]) == 2
  # --report_to: the reports of the runs so far drawn elsewhere; OUT's reports and log stay as they are.
  elsewhere, log_size = str(tmp_path / "look"), os.path.getsize(os.path.join(out, "reproduce.log"))
  assert R.main(argv + ["--report_to", elsewhere]) == 2  # only with --report_only
  assert R.main(argv + ["--report_only", "--report_to", top]) == 2  # not into OUT itself
  assert R.main(argv + ["--report_only", "--report_to", elsewhere]) == 0
  for name in ("report.md", "verdicts.json", "adv_accuracy_bars.png", "reproduce.log"):
    assert os.path.getsize(os.path.join(elsewhere, "demo", name)) > 0, name
  assert "[demo](demo/report.md)" in open(os.path.join(elsewhere, "report.md")).read()
  assert json.load(open(os.path.join(elsewhere, "demo", "verdicts.json")))["claims"] == verdicts["claims"]
  assert {p: os.path.getmtime(p) for p in report_files} == before and not os.path.exists(os.path.join(elsewhere, "runs"))
  assert os.path.getsize(os.path.join(out, "reproduce.log")) == log_size
  # --jobs 2: each run's stages in its own process (two phases), nothing to do; then this process's report.
  assert R.main(argv + ["--jobs", "2"]) == 0
  for m, s in runs:
    for phase in (0, 1):
      text = open(os.path.join(out, "jobs", f"{m}_seed{s}_{phase}.log")).read()
      assert "up to date, skipped" in text and "Traceback" not in text, text[-2000:]
  assert {p: os.path.getmtime(p) for p in mtimes} == mtimes
  assert all(os.path.getmtime(p) > before[p] for p in report_files)


def test_readme_verdicts_one_column_group_per_setting_and_the_pairs_that_disagree():
  test = lambda est: {"k": {"estimate": est, "interval": [est - 0.01, est + 0.01]}}  # noqa: E731
  entry = lambda i, text, verdict, est, **kw: {"id": i, "text": text, "attack": "paper", "verdict": verdict,  # noqa: E731
                                              "tests": test(est), "missing": [], **kw}
  demo = {"budget": {"name": "full"}, "seeds": [0, 1, 2], "num_attacked_examples": 1000, "paper_tolerance": 0.01,
          "claims": [entry("retina", "retina more robust than crops", "holds", 0.04)],
          "claims_clean_correct": [entry("retina", "retina more robust than crops", "fails", -0.03)],
          "pairs": [entry("retina:RS-RNN>DRAM", "RS-RNN more robust than DRAM", "fails", -0.06, of="retina"),
                    entry("retina:RS-RNN>GF-Net-m", "RS-RNN more robust than GF-Net-m", "holds", 0.14, of="retina")],
          "paper": [entry("retina", "retina more robust than crops", "holds", 0.11)],
          "paper_pairs": [entry("retina:RS-RNN>DRAM", "RS-RNN more robust than DRAM", "holds", 0.10)]}
  geometry = {"image_side": 168, "glimpse_side": 32, "object_area_fraction": 0.354}
  pg = {**demo, "setting": geometry, "code_versions": ["0123456789ab"], "claims_clean_correct": [],
        "claims": [entry("retina", "retina more robust than crops", "undecided", 0.01)],
        "pairs": [entry("retina:RS-RNN>DRAM", "RS-RNN more robust than DRAM", "undecided", 0.0, of="retina")]}
  tables = _readme_tables()
  assert tables.SETTINGS == tuple(__import__("rsrnn_jax.reproduction.settings").reproduction.settings.SETTINGS)
  lines = tables.render_verdicts({"demo": demo, "paper_geometry": pg})
  assert "**paper_geometry**: 168² images, 32² glimpses, object 35% of the image" in lines[0]
  assert "code 0123456789ab" in lines[0]
  head = lines[2].split(" | ")
  assert head[1:7] == ["demo: paper's attack", "demo: adaptive", "demo: adaptive, on images all get right",
                       "paper_geometry: paper's attack", "paper_geometry: adaptive",
                       "paper_geometry: adaptive, on images all get right"]
  rows = [line for line in lines[4:] if line.startswith("| ")]
  assert [r.split(" | ")[0] for r in rows] == ["| retina more robust than crops", "| ↳ RS-RNN more robust than DRAM"]
  cells = rows[0].split(" | ")
  assert cells[1] == "**holds** +4.0" and cells[2] == "–" and cells[3] == "–"   # only the paper attack here
  assert cells[4] == "**undecided** +1.0" and cells[7].startswith("**holds** +11.0")
  demo["claims_clean_correct"][0]["attack"] = "adaptive"
  cells = [line for line in tables.render_verdicts({"demo": demo})[4:] if line.startswith("| ")][0].split(" | ")
  assert cells[3] == "**fails** -3.0"
  assert "**fails** -6.0" in rows[1] and "**undecided** +0.0" in rows[1] and "**holds** +10.0" in rows[1]
  assert "policy died" not in lines[0]
  # A run whose policy died: named, with the claims whose verdict changes without it.
  pg.update(one_scanpath_runs=[["dram", 0]], models={"dram": {"display": "DRAM"}},
            claims_live_policy=[entry("retina", "retina more robust than crops", "holds", 0.02)])
  note = tables.render_verdicts({"demo": demo, "paper_geometry": pg})[0]
  assert note.endswith("The policy died (one scanpath for every image) in paper_geometry DRAM seed 0; without "
                       "those runs retina more robust than crops, paper's attack: **holds**."), note
  pg["claims_live_policy"][0]["verdict"] = "undecided"
  assert tables.render_verdicts({"paper_geometry": pg})[0].endswith("without those runs no claim changes its verdict.")
  assert "interim" not in note
  # Stages still to run: how many, and the seeds a verdict rests on where a model has fewer than the setting's.
  pg.update(still_missing=[["dram", 2, "attack_paper"]])
  pg["claims"][0]["seeds"] = {"RS-RNN": [0, 1, 2], "DRAM": [0, 1]}
  assert ("seeds 0/1/2, n = 1000 attacked images, code 0123456789ab, **interim**: 1 stage(s) still to run, "
          "paper's attack verdicts on seeds DRAM 0/1. Δ") in tables.render_verdicts({"paper_geometry": pg})[0]


def test_code_version_names_this_checkout():
  v = STAGES.code_version()
  assert v == "unknown" or re.fullmatch(r"[0-9a-f]{12}(-dirty)?", v), v


def test_code_version_is_dirty_for_code_changes_only(tmp_path, monkeypatch):
  import subprocess
  monkeypatch.delenv(STAGES.CODE_VERSION_ENV, raising=False)
  git = lambda *a: subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True)  # noqa: E731
  git("init", "-q")
  for path in ("pkg/code.py", "reproduction/demo/reproduce.log", "docs/notes.md"):
    os.makedirs(os.path.dirname(tmp_path / path), exist_ok=True)
    (tmp_path / path).write_text("v1\n")
  git("add", ".")
  git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
  head = STAGES.code_version(str(tmp_path / "pkg"))
  assert re.fullmatch(r"[0-9a-f]{12}", head), head
  (tmp_path / "reproduction/demo/reproduce.log").write_text("v1\nmore\n")  # a running reproduction's log
  (tmp_path / "docs/notes.md").write_text("v2\n")
  assert STAGES.code_version(str(tmp_path / "pkg")) == head
  (tmp_path / "pkg/code.py").write_text("v2\n")
  assert STAGES.code_version(str(tmp_path / "pkg")) == head + "-dirty"


def test_code_version_from_the_environment_wins(tmp_path, monkeypatch):
  monkeypatch.delenv(STAGES.CODE_VERSION_ENV, raising=False)
  assert STAGES.code_version(str(tmp_path)) == "unknown"  # a copy of the tree without .git
  monkeypatch.setenv(STAGES.CODE_VERSION_ENV, "0123456789ab")
  assert STAGES.code_version(str(tmp_path)) == "0123456789ab"
  assert STAGES.code_version() == "0123456789ab"  # also in a checkout: a sent copy's .git may be stale


def test_stage_devices_counts_finished_stages_per_device():
  run = lambda *recs: {"stages": {f"s{i}": r for i, r in enumerate(recs)}}
  runs = {"a": {0: run({"done": True, "device": "2× cpu"}, {"done": True}, {"done": False, "device": "x"})},
          "b": {0: run({"done": True, "device": "1× NVIDIA H200"}, {"done": True, "device": "1× NVIDIA H200"})}}
  assert RUNS.stage_devices(runs) == {"1× NVIDIA H200": 2, "2× cpu": 1, "not recorded": 1}


def _setting_verdicts(name, side, accs, verdict):
  """A minimal verdicts.json of one setting: geometry, clean accuracy per model, one claim, its pairs."""
  claim = lambda cid, v, **kw: {"id": cid, "text": cid, "attack": "paper", "attack_title": "PGD", "verdict": v,  # noqa: E731
                                "missing": [], "tests": {"k": {"estimate": 0.05, "interval": [0.01, 0.09]}}, **kw}
  return {"setting": {"name": name, "image_side": side, "glimpse_side": 32, "crop_fractions": [0.25, 0.5],
                      "object_side": 28, "object_area_fraction": 28 * 28 / side ** 2, "whole_image_input": [side],
                      "why_epsilons": "a test", "table1_reasons": {"GF-Net-m": f"why in {name}"}},
          "budget": {"epsilons": [0.01], "adaptive_epsilons": [0.02, 0.03]}, "seeds": [0, 1],
          "num_attacked_examples": 1000,
          "models": {m: {"display": registry.variant(m).display, "clean_at_train": {"mean": a, "sd": 0.0, "n": 2}}
                     for m, a in accs.items()},
          "claims": [claim("retina", verdict)], "claims_clean_correct": [claim("retina", "fails", num_examples=412)],
          "pairs": [claim("retina:A>B", "fails", of="retina")], "paper": [claim("retina", "holds")],
          "under_attack": {"paper": {"rsrnn": {"eps": [0.01], "k": [0.3], "T": [0.35]}}},
          "sanity": {"rsrnn": {"adaptive": {"runs": 2, "failed": {"9. policy attacks": 1},
                                              "readings": {"9. policy attacks": ["covered", "counted broken"]}}}}}


def test_side_by_side_report_puts_the_settings_together(tmp_path):
  from rsrnn_jax.reproduction import side_by_side as SBS
  from rsrnn_jax import workdir
  names = ("demo", "paper_geometry")
  assert SBS.write(str(tmp_path), names) == ""  # nothing to put side by side: nothing written
  for n in names:
    (tmp_path / n).mkdir()
  workdir.write_json(str(tmp_path / "demo" / "verdicts.json"),
                     _setting_verdicts("demo", 96, {"rsrnn": 0.78, "gfnet_m": 0.53}, "holds"))
  workdir.write_json(str(tmp_path / "paper_geometry" / "verdicts.json"),
                     _setting_verdicts("paper_geometry", 168, {"rsrnn": 0.80, "gfnet_m": 0.79}, "undecided"))
  md = open(SBS.write(str(tmp_path), names)).read()
  assert "[demo](demo/report.md)" in md and "[paper_geometry](paper_geometry/report.md)" in md
  assert "Interim" not in md
  settings = md.split("## The settings")[1].split("\n## ")[0]
  assert "| image : glimpse | 3.00 : 1 | 5.25 : 1 | 5.25 : 1 |" in settings
  # Table 1: GF-Net-m's gap to RS-RNN (paper: 81.71 − 81.94) is outside 5 points in one setting only.
  t1 = md.split("## Table 1")[1].split("\n## ")[0]
  row = next(line for line in t1.splitlines() if line.startswith("| GF-Net-m |"))
  assert "-25.0 | **no**" in row and "-1.0 | yes" in row
  assert "Outside the tolerance: GF-Net-m in demo (-25.0 against the paper's -0.23: why in demo)." in t1
  claims = md.split("## The paper's claims in both settings")[1].split("\n## ")[0]
  row = next(line for line in claims.splitlines() if line.startswith("| retina |"))
  assert row.count("**holds**") == 2 and "**undecided**" in row and "(n = 412)" in row  # ours ×1, paper ×1
  assert "## Pairs that disagree" in md and "9. policy attacks (1/2; covered)" in md
  assert "- 9. policy attacks (covered): counted broken." in md  # every failure says what it means
  pg = _setting_verdicts("paper_geometry", 168, {"rsrnn": 0.80, "gfnet_m": 0.79}, "undecided")
  workdir.write_json(str(tmp_path / "paper_geometry" / "verdicts.json"),
                     {**pg, "still_missing": [["rsrnn", 2, "attack_adaptive"], ["ff_cnn_at", 0, "train"]]})
  assert "**Interim**: stages still to run: demo 0, paper_geometry 2 (each setting's report" in open(
      SBS.write(str(tmp_path), names)).read()


def test_runs_whose_policy_gives_every_image_one_scanpath_are_named():
  import types
  from rsrnn_jax.reproduction import health, side_by_side as SBS
  policy = lambda spread: {"entropy_per_saccade": [0.0, 0.4], "fixation_spread_px": [0.0, *spread]}  # noqa: E731
  runs = {"dram": {0: {"eval": {"policy": policy([0.2, 0.3])}}, 1: {"eval": {"policy": policy([0.2, 14.0])}}},
          "ff_cnn": {0: {"eval": {"policy": {}}}}, "rsrnn": {0: {"eval": None}}}
  assert health.one_scanpath_runs(runs) == [("dram", 0)]
  rep = types.SimpleNamespace(runs=runs)
  table = [line for line in "\n".join(health.policy(rep)).splitlines() if line.startswith("| DRAM")]
  assert table == ["| DRAM | 0 | 0.00 / 0.40 | 0.2 / 0.3 | **yes** |", "| DRAM | 1 | 0.00 / 0.40 | 0.2 / 14.0 | no |"]
  assert health.claims_note(rep)[0].startswith("**One scanpath for every image**: DRAM seed 0.")
  assert health.claims_note(types.SimpleNamespace(runs={"dram": {1: runs["dram"][1]}})) == []
  found = {"paper_geometry": _setting_verdicts("paper_geometry", 168, {"rsrnn": 0.8, "dram": 0.75}, "holds")}
  found["paper_geometry"]["models"]["dram"]["policy"] = [{"seed": 0, "one_scanpath": True}, {"seed": 1}]
  note = SBS.table1(found)[-2]
  assert note.endswith("(the policy died in training; each setting's report, \"Policy\"): DRAM seed 0 in "
                       "paper_geometry.")


def test_each_setting_report_reads_every_failed_check():
  import types
  from rsrnn_jax.reproduction import sections
  from rsrnn_jax.robustness import readings
  check = lambda i, status: {"id": i, "name": f"check {i}", "status": status, "detail": "", "numbers": {}}
  runs = {"rsrnn": {s: {"attack": {"adaptive": {"checks": [check(i, "fail" if i == 7 and s == 0 else "pass")
                                                           for i in range(1, 12)]}}} for s in (0, 1)}}
  rep = types.SimpleNamespace(runs=runs, budget=types.SimpleNamespace(profiles=("paper", "adaptive")))
  md = "\n".join(sections.sanity_checks(rep))
  assert "FAIL 1/2 (finding)" in md and md.count("FAIL 1/") == 1 and "FAIL 2/" not in md
  assert f"- check 7, check 7 (finding): {readings.reading(7)[1]}." in md
  # The paper profile's check 5 (Square beat its PGD-5) is answered where the same run's adaptive profile passes
  # it; a run without an adaptive profile that passes it keeps the warning.
  for s, run in runs["rsrnn"].items():
    run["attack"]["paper"] = {"checks": [check(i, "fail" if i == 5 and s == 0 else "pass") for i in range(1, 8)]}
  lines = lambda: "\n".join(sections.sanity_checks(rep)).splitlines()
  row_of = lambda: {" ".join(line.split(" | ")[:2]): line for line in lines() if "| " in line}
  runs["dram"] = {0: {"attack": {"paper": {"checks": [check(i, "fail" if i == 5 else "pass") for i in range(1, 8)]},
                                 "adaptive": None}}}
  rows = row_of()
  assert "FAIL 1/2 (covered)" in rows["| RS-RNN paper"] and "FAIL 1/1 (warning)" in rows["| DRAM paper"]
  runs["rsrnn"][0]["attack"]["adaptive"]["checks"][4]["status"] = "fail"  # the adaptive profile fails it too
  rows = row_of()
  assert "FAIL 1/2 (warning)" in rows["| RS-RNN paper"]


def test_claims_are_judged_again_without_the_runs_whose_policy_died(tmp_path):
  import types
  from rsrnn_jax.reproduction import health, report as REP, side_by_side as SBS
  n, t, rng = 400, 2, np.random.default_rng(0)

  def run(name, seed, acc, dead=False):  # one run's paper-attack results: accuracy ``acc`` at both read-outs
    adv = np.repeat((rng.random((1, n)) < acc)[:, :, None], t, axis=2)  # [E, n, T]
    path = str(tmp_path / f"{name}{seed}.npz")
    np.savez(path, epsilons=np.array([0.02]), pgd_step=adv, clean_correct=np.ones((n, t), bool))
    return {"per_example": {"paper": path}, "attack": {"paper": {"attack_step": 1, "eval_steps": t}},
            "eval": {"policy": {"fixation_spread_px": [0.0, 0.1 if dead else 20.0]}}}

  # DRAM seed 0's policy died and it is far more robust than its live seed 1: with it, the crops may be as robust
  # as the retinas (undecided); without it, the retinas are clearly ahead (holds).
  runs = {"rsrnn": {s: run("rsrnn", s, 0.5) for s in (0, 1)}, "base_retina": {s: run("br", s, 0.5) for s in (0, 1)},
          "dram": {0: run("dram", 0, 0.95, dead=True), 1: run("dram", 1, 0.2)},
          "gfnet_m": {s: run("gf", s, 0.6) for s in (0, 1)}}
  every, _ = REP._judge_ours(runs, ["paper"])
  pairs, _ = REP._judge_ours(runs, ["paper"], V.PAIRS)
  live, live_pairs = REP._judge_live_policy(runs, ["paper"]), REP._judge_live_policy(runs, ["paper"], V.PAIRS)
  assert [v["claim"]["id"] for v in live] == ["retina", "crops"]  # the claims with DRAM in them
  retina = live[0]
  assert every[0]["verdict"] == "undecided" and retina["verdict"] == "holds"
  assert retina["seeds"] == {"RS-RNN": [0, 1], "Base-Retina": [0, 1], "DRAM": [1], "GF-Net-m": [0, 1]}
  assert live[1]["verdict"] == "not evaluated" and live[1]["missing"] == ["S3TA", "FF-CNN"]
  verdicts = {v["claim"]["text"]: v["verdict"] for v in live_pairs}  # the pairs with DRAM (S3TA, FF-CNN: no data)
  assert {t: v for t, v in verdicts.items() if v != "not evaluated"} == {
      "RS-RNN more robust than DRAM": "holds", "Base-Retina more robust than DRAM": "holds"}
  rs_dram = next(v for v in pairs if v["claim"]["text"] == "RS-RNN more robust than DRAM")
  assert rs_dram["verdict"] == "undecided"
  rep = types.SimpleNamespace(runs=runs, ours=every, pairs=pairs, live_policy=live, live_pairs=live_pairs, k=1, t=t)
  md = "\n".join(health.live_policy(rep))
  row = next(line for line in md.splitlines() if line.startswith("| retina more robust than crops"))
  assert "DRAM 1;" in row and row.endswith("| **holds** | **undecided** |"), row
  assert "Left out: DRAM seed 0 (one scanpath" in md
  row = next(line for line in md.splitlines() if line.startswith("| RS-RNN more robust than DRAM"))
  assert row.endswith("| **holds** | **undecided** |"), row
  alive = {m: {s: r for s, r in seeds.items() if m != "dram" or s == 1} for m, seeds in runs.items()}
  assert REP._judge_live_policy(alive, ["paper"]) == []
  assert health.live_policy(types.SimpleNamespace(live_policy=[])) == []
  # Side by side: the setting's verdicts.json carries both, and the report puts them in one row.
  found = {"paper_geometry": _setting_verdicts("paper_geometry", 168, {"rsrnn": 0.8, "dram": 0.75}, "fails")}
  found["paper_geometry"].update(claims_live_policy=[REP._claim_json(retina)], one_scanpath_runs=[["dram", 0]],
                                 claims=[REP._claim_json(v) for v in every],
                                 pairs=[*(REP._claim_json(v) for v in pairs),
                                        {"id": "crops:DRAM>S3TA", "attack": "paper", "verdict": "holds"}],
                                 pairs_live_policy=[REP._claim_json(v) for v in live_pairs])
  md = "\n".join(SBS.live_policy(found))
  assert "| paper_geometry | retina more robust than crops |" in md and "Left out (one scanpath for every image): " \
         "paper_geometry: DRAM seed 0." in md
  row = next(line for line in md.splitlines() if line.startswith("| paper_geometry"))
  assert row.index("**holds**") < row.index("**undecided**")  # without them, then on every run
  assert "| RS-RNN more robust than DRAM |" in md and "Base-Retina more robust than GF-Net-m" not in md  # changed only
  assert "DRAM more robust than S3TA" not in md  # judged on every run, not without them: no change to show
  assert SBS.live_policy({"demo": _setting_verdicts("demo", 96, {"rsrnn": 0.8}, "holds")}) == []
