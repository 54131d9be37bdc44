"""Stand-ins for the reproduction's stage functions (no JAX work): the stage-skipping tests."""
import os


class FakeStages:
  """Stage functions that only write the outputs a stage leaves, and count calls."""

  def __init__(self):
    self.calls = []
    self.fail_train_at = None
    self.stop_train = False  # with a time limit (stop_at), the training stops at checkpoint 2, short of its end

  def fns(self):
    return {"train": self.train, "eval": self.eval, "attack": self.attack}

  def train(self, config, run_dir, stop_at=None):
    self.calls.append("train")
    os.makedirs(os.path.join(run_dir, "checkpoints", "2"), exist_ok=True)
    if self.fail_train_at:
      raise KeyboardInterrupt
    if self.stop_train and stop_at is not None:
      return
    os.makedirs(os.path.join(run_dir, "checkpoints", str(config.train.num_train_steps)), exist_ok=True)

  def eval(self, config, run_dir, plateau_examples=0):
    self.calls.append("eval")
    os.makedirs(os.path.join(run_dir, "eval"), exist_ok=True)
    for f in ("eval/results.json", "compute.json", "figures.npz", "plateau.json"):
      open(os.path.join(run_dir, f), "w").close()

  def attack(self, config, run_dir):
    name = f"attack_{config.attack.profile}"
    self.calls.append(name)
    os.makedirs(os.path.join(run_dir, name), exist_ok=True)
    for f in ("results.json", "per_example.npz"):
      open(os.path.join(run_dir, name, f), "w").close()
