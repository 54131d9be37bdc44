"""Cluttered Fashion-MNIST on a laptop CPU: the embedded demo.

Command (what `make demo` runs):
  python launch.py --config=configs/demo.py --workdir=workdirs/demo
  python launch.py --config=configs/demo.py:model=ff_cnn --workdir=workdirs/demo_ffcnn   # plain CNN baseline

Variants: `configs/demo.py:model=NAME` with NAME in rsrnn (default) | ff_cnn.
Data: 28×28 Fashion-MNIST items on a 96×96 canvas with clutter fragments (rsrnn_jax/data/cluttered.py),
built from the Debian package dataset-fashion-mnist. Pixels in [0, 1].
Expected result (2 CPU cores, 2 fake XLA devices; see README for the measured numbers): RS-RNN reaches
>= 75% last-step test accuracy on the full 10k test set in about 10 minutes of training.
"""
from configs import common


def get_config(arg: str = ""):
  args = dict(kv.split("=", 1) for kv in arg.split(",") if kv)
  model = args.get("model", "rsrnn")
  c = common.get_base_config()
  c.data.canvas_size = 96
  c.data.mean, c.data.std = (0.05,), (0.19,)  # measured on the training split

  c.model = common.model_preset(model, out_size=32, density_ratio=10.0)
  c.model.encoder1 = ((32, 1, 1), (64, 1, 1), (128, 1, 1))   # 32×32 glimpse → 4×4×128
  c.model.core_features = 128
  c.model.encoder2 = ((128, 1, 0),)
  c.model.ior_size = 24
  c.model.dorsal.saliency_size = 8
  c.model.dorsal.hidden = 32
  c.model.stages = ((32, 1, 1), (64, 1, 1), (128, 1, 1), (128, 1, 1))  # ff_cnn on the 96×96 canvas

  c.train.batch_size = 64
  c.train.num_train_steps = 3000
  c.train.num_glimpses = 4
  c.train.optimizer = "adamw"
  c.train.learning_rate = 2e-3
  c.train.warmup_steps = 100
  c.train.weight_decay = 1e-4
  c.train.log_every = 50
  c.train.checkpoint_every = 500

  c.eval.num_glimpses = 8
  c.eval.batch_size = 500
  return c
