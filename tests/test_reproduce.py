"""`make reproduce` (rsrnn_jax/reproduction/: run, verdicts, report): verdict rules on hand-made numbers, stage
skipping and resuming with fake stages, and the --quick run end to end on the tiny data set, twice."""
import json
import logging
import os

import pytest

from rsrnn_jax.models import registry
from rsrnn_jax.reproduction import run as R
from rsrnn_jax.reproduction import verdicts as V
from rsrnn_jax.reproduction.paper_numbers import PAPER

N = 400  # attacked examples in the hand-made numbers: se of a difference of two ~50% accuracies ≈ 3.5 points


def _groups(retina, crops, whole):
  """{paper key: {"k": [...], "T": [...]}} from (k values, T values) per group of the claims."""
  series = {"RS-RNN": retina, "Base-Retina": retina, "DRAM": crops, "GF-Net-m": crops, "S3TA": whole,
            "FF-CNN": whole}
  return {m: {"k": list(k), "T": list(t)} for m, (k, t) in series.items()}


def test_clearly_above_needs_the_mean_beyond_the_margin_and_no_clear_reversal():
  assert V.clearly_above([0.6, 0.5, 0.3], [0.4, 0.3, 0.1], N)["holds"]
  within_noise = V.clearly_above([0.52, 0.51, 0.50], [0.50, 0.50, 0.50], N)
  assert not within_noise["holds"] and 0 < within_noise["mean_diff"] < within_noise["margin"]
  reversed_once = V.clearly_above([0.9, 0.9, 0.2], [0.3, 0.3, 0.5], N)   # big mean gain, clearly worse at ε3
  assert reversed_once["mean_diff"] > reversed_once["margin"] and not reversed_once["nowhere_below"]
  assert not reversed_once["holds"]
  assert not V.clearly_above([0.0, 0.0], [0.0, 0.0], N)["holds"]         # everything broken: no evidence
  assert not V.clearly_above([0.3, 0.1], [0.6, 0.5], N)["holds"]


def test_claims_hold_and_do_not_hold_on_hand_made_numbers():
  by_id = lambda rows: {(r["claim"]["id"], r["attack"]): r["holds"] for r in rows}
  paper_like = _groups(retina=([0.5, 0.35, 0.15], [0.6, 0.45, 0.25]), crops=([0.35, 0.2, 0.05], [0.36, 0.2, 0.05]),
                       whole=([0.08, 0.02, 0.0], [0.08, 0.02, 0.0]))
  # The strongest attack removes RS-RNN's recovery and the retina's lead at T_eval.
  strongest = _groups(retina=([0.3, 0.15, 0.05], [0.3, 0.15, 0.05]), crops=([0.3, 0.15, 0.05], [0.3, 0.15, 0.05]),
                      whole=([0.0, 0.0, 0.0], [0.0, 0.0, 0.0]))
  v = by_id(V.verdicts({"paper": paper_like, "strongest": strongest}, N))
  assert v == {("retina", "paper"): True, ("retina", "strongest"): False, ("crops", "paper"): True,
               ("crops", "strongest"): True, ("recovery", "paper"): True, ("recovery", "strongest"): False}
  # The retina's lead only at step k, not at T_eval: the claim needs both read-outs.
  only_k = _groups(retina=([0.5, 0.4, 0.2], [0.3, 0.2, 0.1]), crops=([0.3, 0.2, 0.1], [0.3, 0.2, 0.1]),
                   whole=([0.0] * 3, [0.0] * 3))
  row = next(r for r in V.verdicts({"paper": only_k}, N) if r["claim"]["id"] == "retina")
  assert row["tests"]["k"]["holds"] and not row["tests"]["T"]["holds"] and row["holds"] is False
  # A missing model: not evaluated (None), never a verdict.
  partial = {m: a for m, a in paper_like.items() if m != "DRAM"}
  rows = {r["claim"]["id"]: r for r in V.verdicts({"paper": partial}, N)}
  assert rows["retina"]["holds"] is None and rows["retina"]["missing"] == ["DRAM"]
  assert rows["recovery"]["holds"] is True


def test_paper_numbers_are_one_labelled_structure_and_meet_their_own_claims():
  assert "paper.md §8" in PAPER["source"]
  for section in ("table1", "accuracy_vs_gmacs", "adv_accuracy", "adv_accuracy_per_step", "asr"):
    assert PAPER[section]["source"]
  p = PAPER["adv_accuracy"]
  assert all(len(v) == len(p["epsilons"]) for v in list(p["at_k"].values()) + list(p["at_T"].values()))
  assert p["at_T"]["RS-RNN"] == [56.5, 44.5, 23.6]
  rows = V.verdicts({"paper": V.paper_accuracies()}, V.PAPER_EXAMPLES)
  assert all(r["holds"] for r in rows)
  # Every model the paper has numbers for is a registered model or variant, and every claim names them.
  keys = {registry.variant(v).paper_key for v in R.MODELS}
  assert set(PAPER["table1"]["top1"]) | set(PAPER["asr"]["targeted_read_off"]) <= keys
  for c in V.CLAIMS:
    assert set(c.get("higher", ()) + c.get("lower", ()) + ((c["model"],) if "model" in c else ())) <= keys
  assert V.by_paper_key({"rsrnn": 1, "ff_cnn_at": 2}) == {"RS-RNN": 1, "FF-CNN-AT": 2}


def test_describe_model_reads_table1_columns_from_the_configs():
  got = {registry.variant(m).paper_key: registry.describe(R.model_config(m).model.to_dict()) for m in R.MODELS}
  for m, want in PAPER["table1"]["input"].items():
    assert got[m]["input"] == want, m
    assert got[m]["gru"].split(" ")[0] == PAPER["table1"]["gru"][m], m
    assert got[m]["attention"] == PAPER["table1"]["attention"][m], m
  assert got["FF-CNN-AT"] == got["FF-CNN"]


def test_fingerprints_follow_the_fields_each_stage_depends_on():
  base = R.fingerprints(R.model_config("rsrnn"))
  attack = R.fingerprints(R.model_config("rsrnn", overrides={"attack.seed": 1}))
  assert attack["train"] == base["train"] and attack["eval"] == base["eval"] and attack["attack"] != base["attack"]
  ev = R.fingerprints(R.model_config("rsrnn", overrides={"eval.num_figure_images": 3}))
  assert ev["train"] == base["train"] and ev["eval"] != base["eval"] and ev["attack"] == base["attack"]
  tr = R.fingerprints(R.model_config("rsrnn", overrides={"train.learning_rate": 1e-3}))
  assert all(tr[s] != base[s] for s in R.STAGES)
  assert R.fingerprints(R.model_config("rsrnn", overrides={"train.log_every": 7})) == base  # bookkeeping only
  assert R.fingerprints(R.model_config("ff_cnn_at"))["train"] != R.fingerprints(R.model_config("ff_cnn"))["train"]


class _FakeStages:
  """Stage functions that only write the outputs a stage leaves, and count calls."""

  def __init__(self):
    self.calls = []
    self.fail_train_at = None

  def train(self, config, run_dir):
    self.calls.append("train")
    os.makedirs(os.path.join(run_dir, "checkpoints", "2"), exist_ok=True)
    if self.fail_train_at:
      raise KeyboardInterrupt
    os.makedirs(os.path.join(run_dir, "checkpoints", str(config.train.num_train_steps)), exist_ok=True)

  def eval(self, config, run_dir):
    self.calls.append("eval")
    os.makedirs(os.path.join(run_dir, "eval"), exist_ok=True)
    for f in ("eval/results.json", "compute.json", "figures.npz"):
      open(os.path.join(run_dir, f), "w").close()

  def attack(self, config, run_dir):
    self.calls.append("attack")
    os.makedirs(os.path.join(run_dir, "attack_paper"), exist_ok=True)
    open(os.path.join(run_dir, "attack_paper", "results.json"), "w").close()


def test_stages_skip_when_done_and_rerun_what_changed_or_is_missing(tmp_path, monkeypatch, caplog):
  fake = _FakeStages()
  monkeypatch.setattr(R, "STAGE_FNS", {"train": fake.train, "eval": fake.eval, "attack": fake.attack})
  run_dir = str(tmp_path / "rsrnn")
  cfg = lambda **o: R.model_config("rsrnn", R.QUICK_BUDGET, o)
  caplog.set_level(logging.INFO, logger="rsrnn_jax.reproduction.run")

  def run(config):
    fake.calls.clear()
    stages = R.run_model("rsrnn", config, run_dir)
    assert all(stages[s]["done"] for s in R.STAGES)
    return list(fake.calls)

  assert run(cfg()) == ["train", "eval", "attack"]
  caplog.clear()
  assert run(cfg()) == []                                                  # everything up to date
  assert caplog.text.count("up to date, skipped") == 3
  os.remove(os.path.join(run_dir, "attack_paper", "results.json"))
  assert run(cfg()) == ["attack"]                                          # a missing output
  assert run(cfg(**{"attack.seed": 3})) == ["attack"]                      # an attack field
  assert run(cfg(**{"attack.seed": 3, "eval.num_figure_images": 1})) == ["eval", "attack"]  # later stages too
  # Training interrupted after its first checkpoint: the next run resumes it, then the later stages.
  fake.fail_train_at = 2
  with pytest.raises(KeyboardInterrupt):
    R.run_model("rsrnn", cfg(**{"train.learning_rate": 1e-4}), run_dir)  # a changed train config ...
  assert not os.path.exists(os.path.join(run_dir, "attack_paper"))       # ... discarded the old run
  assert R.read_stages(run_dir)["train"]["done"] is False
  fake.fail_train_at = None
  caplog.clear()
  assert run(cfg(**{"train.learning_rate": 1e-4})) == ["train", "eval", "attack"]
  assert "resuming at step 2" in caplog.text


def _tiny_data_args(tiny_data):
  return ["--set", f"data.source_dir={tiny_data['source_dir']}", "--set", f"data.data_dir={tiny_data['data_dir']}",
          "--set", "data.canvas_size=32", "--set", "data.num_clutter=2", "--set", "data.clutter_size=5",
          "--set", "model.sampler.out_size=16"]


# One model per code path (retina + ConvGRU, crop + GRU, covert attention, whole-image CNN): all seven would cost
# ~12 compilations each, most of the test suite's budget; every model's own paths are tested in test_train.py.
QUICK_MODELS = ("rsrnn", "gfnet_m", "s3ta", "ff_cnn")


@pytest.mark.slow
def test_quick_reproduction_end_to_end_then_resumes_without_work(tiny_data, tmp_path, caplog):
  out = str(tmp_path / "repro")
  argv = ["--quick", "--out", out, "--models", ",".join(QUICK_MODELS), *_tiny_data_args(tiny_data)]
  caplog.set_level(logging.INFO, logger="rsrnn_jax.reproduction.run")
  assert R.main(argv) == 0
  for name in ("report.md", "verdicts.json", "accuracy_vs_gmacs.png", "adv_accuracy_bars.png",
               "adv_accuracy_per_step.png", "fixations.png", "rsrnn_glimpses.gif", "reproduce.log"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  from PIL import Image
  with Image.open(os.path.join(out, "rsrnn_glimpses.gif")) as gif:
    assert gif.n_frames == R.QUICK_BUDGET.eval_steps
  md = open(os.path.join(out, "report.md")).read()
  sections = md.split("\n## ")
  for title in ("Table 1", "Accuracy under attack", "Attack success rate", "Sanity checks", "Budget"):
    body = next(s for s in sections if s.startswith(title))
    for m in QUICK_MODELS:  # a row per model
      assert sum(line.startswith(f"| {registry.variant(m).display} ") for line in body.splitlines()) == 1, (title, m)
  claims = next(s for s in sections if s.startswith("The paper's claims"))
  assert sum(line.startswith("| ") for line in claims.splitlines()) == 1 + 3 * 2  # header, 3 claims × 2 attacks
  assert "Quick budget" in md and "paper.md §8" in md
  verdicts = json.load(open(os.path.join(out, "verdicts.json")))
  ran = {registry.variant(m).paper_key for m in QUICK_MODELS}
  for v in verdicts["ours"]:  # claims whose models all ran get a verdict; the others name what is missing
    claim = v["claim"]
    needed = [claim["model"]] if "model" in claim else claim["higher"] + claim["lower"]
    if set(needed) <= ran:
      assert v["holds"] in (True, False), v
    else:
      assert v["holds"] is None and set(v["missing"]) == set(needed) - ran, v

  # Second run: every stage of every model is skipped (no training, nothing rewritten but the report).
  ckpt = os.path.join(out, "runs", "rsrnn", "checkpoints")
  watched = [os.path.join(out, "runs", m, f) for m in QUICK_MODELS
             for f in ("metrics.jsonl", "eval/results.json", "attack_paper/results.json", "figures.npz")]
  mtimes = {p: os.path.getmtime(p) for p in watched + [ckpt]}
  caplog.clear()
  assert R.main(argv) == 0
  assert caplog.text.count("up to date, skipped") == 3 * len(QUICK_MODELS)
  assert {p: os.path.getmtime(p) for p in mtimes} == mtimes
  assert os.path.getsize(os.path.join(out, "report.md")) > 0
