"""rsrnn-jax: retinal-sampling recurrent attention networks (RS-RNN) in JAX/Flax.

``rsrnn_jax.load(workdir)`` restores a trained model for notebooks (:mod:`rsrnn_jax.api`).
"""

__version__ = "0.1.0"


def load(workdir: str, **kwargs):
  """The model trained in ``workdir`` (:func:`rsrnn_jax.api.load`): ``predict``, ``fixations``, ``attack``."""
  from rsrnn_jax import api  # imported on use: `import rsrnn_jax.data` must not pull in JAX models
  return api.load(workdir, **kwargs)
