"""SA-GAN's self-attention block as BigGAN uses it (see the package docstring)."""

from __future__ import annotations

import keras
import tensorflow as tf

from tf_biggan.dtypes import statistics_dtype
from tf_biggan.layers.initializers import initializer_template
from tf_biggan.layers.spectral import SNConv2D


class SelfAttention(keras.layers.Layer):
    """SA-GAN self-attention: `x + gamma * o(softmax(theta phi^T) g)`.

    theta and phi map to C/8 channels, g to C/2; phi and g are max-pooled 2x2
    so attention runs over HW queries and HW/4 keys. All four 1x1 convs are
    SN without bias; gamma is a learned scalar starting at 0, so the block is
    the identity at initialisation.

    Input and output `[B, H, W, C]`, with C divisible by 8 and H, W even.

    Args:
      kernel_initializer: initialiser of the four 1x1 conv kernels.
    """

    def __init__(self, kernel_initializer="orthogonal", **kwargs):
        super().__init__(**kwargs)
        self.kernel_initializer = initializer_template(kernel_initializer)
        self.theta = self.phi = self.g = self.o = None

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % 8:
            raise ValueError(f"SelfAttention needs channels divisible by 8, got {channels}")

        def conv(filters, name):
            return SNConv2D(
                filters, 1, use_bias=False, kernel_initializer=self.kernel_initializer, name=name
            )

        self.theta = conv(channels // 8, "theta")
        self.phi = conv(channels // 8, "phi")
        self.g = conv(channels // 2, "g")
        self.o = conv(channels, "o")
        self.theta.build(input_shape)
        self.phi.build(input_shape)
        self.g.build(input_shape)
        self.o.build((*input_shape[:-1], channels // 2))
        self.gamma = self.add_weight(name="gamma", shape=(), initializer="zeros")

    def call(self, x, training=None):
        shape = tf.shape(x)
        batch, height, width = shape[0], shape[1], shape[2]
        channels = x.shape[-1]
        theta = tf.reshape(self.theta(x, training=training), [batch, -1, channels // 8])
        phi = tf.nn.max_pool2d(self.phi(x, training=training), 2, 2, "VALID")
        phi = tf.reshape(phi, [batch, -1, channels // 8])
        g = tf.nn.max_pool2d(self.g(x, training=training), 2, 2, "VALID")
        g = tf.reshape(g, [batch, -1, channels // 2])
        # Logits and softmax in float32 under any lower-precision policy: a bfloat16 logit of
        # magnitude 20 is off by up to 0.06, which moves the attention weights by 6%. The
        # product runs over C/8 channels: 0.2 GFLOP per image at 128 px, 0.5% of G's.
        dtype = statistics_dtype(self.compute_dtype)
        logits = tf.matmul(tf.cast(theta, dtype), tf.cast(phi, dtype), transpose_b=True)
        # [B, HW, HW/4]
        attention = tf.cast(tf.nn.softmax(logits, axis=-1), g.dtype)
        attended = tf.reshape(tf.matmul(attention, g), [batch, height, width, channels // 2])
        return x + tf.cast(self.gamma, x.dtype) * self.o(attended, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
