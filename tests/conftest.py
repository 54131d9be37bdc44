"""Test configuration: 4 fake CPU devices (set before jax is imported) and fast XLA compiles."""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

# Most tests are dominated by compile time of tiny models; skip the expensive XLA passes.
jax.config.update("jax_disable_most_optimizations", True)
