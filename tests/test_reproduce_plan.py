"""``--dry_run`` (rsrnn_jax/reproduction/todo.py): what would run, why and about how long, touching nothing; and the
recorded time of a stage that resumes (rsrnn_jax/reproduction/stages.py)."""
import json
import os
import socket

from rsrnn_jax.reproduction import run as R
from rsrnn_jax.reproduction import run_configs as RC
from rsrnn_jax.reproduction import runs as RUNS
from rsrnn_jax.reproduction import settings as S
from rsrnn_jax.reproduction import stages as STAGES
from tests.reproduce_helpers import FakeStages

DEMO = S.get("demo")


def _rows(text):
  return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()[4:]]


def test_dry_run_says_what_would_run_why_and_how_long_and_touches_nothing(tmp_path, capsys):
  out, budget = str(tmp_path / "demo"), DEMO.budget(R.QUICK_BUDGET)
  configs = R.plan(budget, ("rsrnn",), (0, 1), {}, RC.DEMO_CONFIG, out, DEMO)
  fake = FakeStages()
  seed0, seed1 = (RUNS.run_dir(out, "rsrnn", s) for s in (0, 1))
  STAGES.run_model("rsrnn/seed0", configs["rsrnn"][0], seed0, fake.fns(), budget.plateau_examples, device="2× cpu")
  recorded = STAGES.read_stages(seed0)
  for stage, seconds in {"train": 600, "eval": 60, "attack_paper": 120, "attack_adaptive": 3000}.items():
    recorded[stage]["seconds"] = seconds  # what a real run of each stage took
  STAGES.write_stages(seed0, recorded)
  fp = STAGES.fingerprints(configs["rsrnn"][1])["train"]
  os.makedirs(os.path.join(seed1, "checkpoints", "2"))  # seed 1's training was cut off after a checkpoint
  STAGES.write_stages(seed1, {"train": {"fingerprint": fp, "done": False, "seconds": 100.0}})
  before = {p: open(os.path.join(p, STAGES.STAGES_FILE)).read() for p in (seed0, seed1)}
  fake.calls.clear()

  dry = lambda **kw: R.dry_run(out, R.QUICK_BUDGET, ("rsrnn",), (0, 1), {}, RC.DEMO_CONFIG, kw.get("stages"),
                               kw.get("rerun", ()), DEMO)[0]
  text = dry()
  assert text.splitlines()[0] == "demo: 4 stage(s) to run, about 1.0 h; times recorded on 2× cpu (4)"
  assert _rows(text) == [["rsrnn", "1", "train", "interrupted, resumes from step 2", "8 min"],  # 600 s - 100 s
                         ["rsrnn", "1", "eval", "after train", "1 min"],
                         ["rsrnn", "1", "attack_paper", "after train", "2 min"],
                         ["rsrnn", "1", "attack_adaptive", "after train", "50 min"]]
  assert [r[:4] for r in _rows(dry(rerun=("attack_paper",), stages=("attack_paper",)))] == [
      ["rsrnn", "0", "attack_paper", "--rerun"]]  # seed 1's attack_paper waits for its training
  with open(os.path.join(seed1, ".lock"), "w") as f:  # a live process holds seed 1 (this one, for the test)
    json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": "2026-12-06T21:00:00"}, f)
  assert _rows(dry())[0][3] == "running now (PID %d, since 2026-12-06T21:00:00)" % os.getpid()
  assert fake.calls == [] and before == {p: open(os.path.join(p, STAGES.STAGES_FILE)).read() for p in before}
  assert R.dry_run(str(tmp_path / "none"), R.QUICK_BUDGET, ("rsrnn",), (0,), {}, RC.DEMO_CONFIG, None, (),
                   DEMO)[0].splitlines()[0] == "demo: 4 stage(s) to run (4 without a recorded time to go by)"

  assert R.main(["--out", str(tmp_path), "--quick", "--setting", "demo", "--models", "rsrnn", "--seeds", "0,1",
                 "--dry_run"]) == 0
  assert capsys.readouterr().out.startswith("demo: 4 stage(s) to run, about 1.1 h")  # seed 1 held: running now
  assert R.main(["--out", str(tmp_path), "--quick", "--dry_run", "--report_only"]) == 2
  assert "--dry_run and --report_only exclude each other" in capsys.readouterr().err
  assert not os.path.exists(os.path.join(str(tmp_path), "demo", "reproduce.log"))  # no log, no report


def test_an_attack_resumed_from_its_journal_keeps_the_time_it_had_run(tmp_path):
  out = str(tmp_path)
  configs = R.plan(DEMO.budget(R.QUICK_BUDGET), ("rsrnn",), (0,), {}, RC.DEMO_CONFIG, out, DEMO)["rsrnn"][0]
  run = RUNS.run_dir(out, "rsrnn", 0)
  STAGES.run_model("rsrnn/seed0", configs, run, FakeStages().fns())
  stages = STAGES.read_stages(run)
  stages["attack_adaptive"].update(done=False, seconds=1800.0)  # cut off after half an hour ...
  STAGES.write_stages(run, stages)
  os.makedirs(os.path.join(run, ".attack_adaptive.journal"))     # ... with the attacks it finished on disk
  assert STAGES.resumes_from("attack_adaptive", run) == "its journal" and STAGES.resumes_from("attack_paper", run) == ""
  STAGES.run_model("rsrnn/seed0", configs, run, FakeStages().fns())
  assert STAGES.read_stages(run)["attack_adaptive"]["seconds"] >= 1800.0
  stages = STAGES.read_stages(run)
  stages["attack_paper"].update(done=False, seconds=500.0)     # no journal: the stage starts over, its time too
  STAGES.write_stages(run, stages)
  STAGES.run_model("rsrnn/seed0", configs, run, FakeStages().fns())
  assert STAGES.read_stages(run)["attack_paper"]["seconds"] < 500.0
