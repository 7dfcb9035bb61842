"""tf_biggan: BigGAN (Brock, Donahue, Simonyan, ICLR 2019) in TensorFlow 2 / Keras 3."""

__version__ = "0.2.0"
