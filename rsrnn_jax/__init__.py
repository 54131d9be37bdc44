"""rsrnn-jax: retinal-sampling recurrent attention networks (RS-RNN) in JAX/Flax."""

__version__ = "0.1.0"
