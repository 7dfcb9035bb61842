"""The dtype that the layers and kernels keep their sensitive arithmetic in (`statistics_dtype`).

Under a lower-precision policy (bfloat16, float16) the power iteration, the batch
statistics, the attention logits and the fused convs' combined taps stay in float32; under
float32 they are float32. Under
Keras' float64 policy everything is float64, so that a whole training step can run without
float32 rounding: `tools/port_step_parity.py --dtype=float64` compares it with the
reference's iteration run in float64.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["statistics_dtype"]


def statistics_dtype(dtype) -> tf.DType:
    """float64 for a float64 `dtype` (a dtype or its name), float32 for any other."""
    return tf.float64 if tf.as_dtype(dtype) == tf.float64 else tf.float32
