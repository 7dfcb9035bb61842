"""tf_biggan: BigGAN (Brock, Donahue, Simonyan, ICLR 2019) in TensorFlow 2 / Keras 3."""

__version__ = "0.3.0.dev0"
"""The one version number: setup.cfg reads it from here."""
