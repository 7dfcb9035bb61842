"""The optimizer of both networks: Adam in the reference's form (`LeanAdam`), built by the
gin-configurable `make_optimizer` (`generator/make_optimizer.learning_rate = ...`)."""

from __future__ import annotations

import gin
import keras


class LeanAdam(keras.optimizers.Adam):
    """Adam in PyTorch's form, without the first-moment slot when `beta_1 == 0`.

    PyTorch's Adam (the reference BigGAN's optimizer) adds ε after the bias correction of the
    second moment; Keras' adds it before:

        PyTorch:  w ← w − lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)
        Keras:    w ← w − lr·√(1 − β2ᵗ)/(1 − β1ᵗ) · m / (√v + ε)

    so Keras' ε acts as `ε / √(1 − β2ᵗ)`: 32 ε at step 1 with β2 0.999, which halves the
    first update of every weight whose gradient is near 3e-5 (ε 1e-6). `epsilon_after_correction`
    picks the form: True (the default) is PyTorch's, False Keras' (the form of tf_biggan
    0.2 and earlier, to continue such a run bit for bit).

    With β1 = 0 (BigGAN's setting) the first moment is the current gradient, so the slot
    Keras keeps for it is a never-needed copy of every weight (282 MB for G and 352 MB for
    D at 128 px); this optimizer keeps one slot (`v`) per weight then. With β1 ≠ 0 it keeps
    Keras' two, and with `amsgrad` it is Keras' Adam. The slots differ between β1 = 0 and
    β1 ≠ 0, so a checkpoint resumes only under the same β1 setting
    (`check_optimizer_slots` says so before restoring); the form does not change the slots.
    """

    def __init__(self, *args, epsilon_after_correction: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.epsilon_after_correction = bool(epsilon_after_correction)

    @property
    def _keeps_first_moment(self) -> bool:
        return self.beta_1 != 0 or self.amsgrad

    def build(self, var_list):
        if self._keeps_first_moment:
            super().build(var_list)
            return
        if self.built:
            return
        # The base optimizer's build (iterations, learning rate), skipping Adam's slots.
        super(keras.optimizers.Adam, self).build(var_list)
        self._velocities = self.add_optimizer_variables(var_list, "velocity")

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or (self._keeps_first_moment and not self.epsilon_after_correction):
            super().update_step(gradient, variable, learning_rate)
            return
        ops = keras.ops
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        local_step = ops.cast(self.iterations + 1, dtype)
        # convert_to_tensor, not cast: a cast of a Python float rounds it to float32 first,
        # which a float64 step would carry (β2 = 0.999 is 1.3e-5 off in float32).
        beta_2_power = ops.power(ops.convert_to_tensor(self.beta_2, dtype), local_step)
        index = self._get_variable_index(variable)
        v = self._velocities[index]
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        if self._keeps_first_moment:
            m = self._momentums[index]
            self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
            beta_1_power = ops.power(ops.convert_to_tensor(self.beta_1, dtype), local_step)
            step, lr = m, ops.divide(lr, 1 - beta_1_power)
        else:
            step = gradient
        if self.epsilon_after_correction:
            denominator = ops.add(ops.divide(ops.sqrt(v), ops.sqrt(1 - beta_2_power)), self.epsilon)
            self.assign_sub(variable, ops.divide(ops.multiply(step, lr), denominator))
            return
        alpha = lr * ops.sqrt(1 - beta_2_power)
        self.assign_sub(
            variable, ops.divide(ops.multiply(step, alpha), ops.add(ops.sqrt(v), self.epsilon))
        )

    def get_config(self):
        return {**super().get_config(), "epsilon_after_correction": self.epsilon_after_correction}


@gin.configurable
def make_optimizer(
    learning_rate: float = 1e-4,
    beta_1: float = 0.0,
    beta_2: float = 0.999,
    epsilon: float = 1e-6,
    epsilon_after_correction: bool = True,
) -> keras.optimizers.Optimizer:
    """Adam with BigGAN's defaults (β1 0, β2 0.999, eps 1e-6), as a `LeanAdam`.

    G and D bind it in gin scopes: `generator/make_optimizer.learning_rate = 1e-4`,
    `discriminator/make_optimizer.learning_rate = 4e-4`. `epsilon_after_correction`: ε in
    PyTorch's place (the reference's; default) or, with False, in Keras' (tf_biggan ≤ 0.2).
    """
    return LeanAdam(
        learning_rate=learning_rate,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        epsilon_after_correction=epsilon_after_correction,
    )


def optimizer_for(network: str) -> keras.optimizers.Optimizer:
    """`make_optimizer()` in the gin scope `network` ("generator" or "discriminator"), where
    the configs bind each network's learning rate."""
    with gin.config_scope(network):
        return make_optimizer()
