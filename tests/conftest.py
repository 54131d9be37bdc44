"""Test configuration: 4 fake CPU devices (set before jax is imported) and fast XLA compiles."""
import os

# The all-reduce timeouts raised as in the Makefile: on a busy machine one fake device can wait > 40 s for another.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 "
                      "--xla_cpu_collective_call_terminate_timeout_seconds=900 --xla_cpu_collective_timeout_seconds=900")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Most tests are dominated by compile time of tiny models; skip the expensive XLA passes (here and, through the
# environment, in the launch.py subprocesses the end-to-end tests start).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
jax.config.update("jax_disable_most_optimizations", True)
# Many tests compile the same tiny train/eval steps: share compilations through JAX's persistent cache (also
# across the pytest-xdist workers and the launch.py subprocesses, which inherit the variables below).
_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".pytest_cache", "jax")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)


import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
  """A tiny Fashion-MNIST-like source (96 train / 32 test items, learnable: class = brightness band) and a
  TFDS data dir, so training tests never need the real data set."""
  from rsrnn_jax.data import fashion_mnist
  folder = tmp_path_factory.mktemp("fmnist")
  rng = np.random.default_rng(0)
  for split, n in (("train", 96), ("test", 32)):
    labels = (np.arange(n) % 10).astype(np.uint8)
    images = (rng.integers(0, 20, (n, 28, 28)) + 20 * labels[:, None, None] + 40).astype(np.uint8)
    fashion_mnist.write_idx(folder, split, images, labels)
  return {"source_dir": str(folder), "data_dir": str(tmp_path_factory.mktemp("tfds"))}

