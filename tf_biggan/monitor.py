"""Collapse watch: flags the blow-up of singular values that precedes BigGAN's collapse.

Brock et al. (2019, section 4.1) observe that training collapse at scale is preceded by a
sudden jump of the top singular value σ0 of some generator layers (and spikes in D's),
after smooth growth before. `CollapseMonitor` keeps, for every spectrally normalised layer,
the σ0 estimates of the last `window` summaries and reports a layer whose current σ0
exceeds `sigma_ratio` times the median of that history; optionally it also reports a
discriminator real/fake logit gap above `gap_threshold` (D has separated real from fake
completely, the other symptom the paper describes).

The monitor is plain Python on floats so it can be tested on synthetic sequences; the train
loop feeds it the `sigma/G/...`, `sigma/D/...` values it writes as summaries and the
`d/real`, `d/fake` metrics of the step.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

ON_COLLAPSE = ("warn", "stop", "restore")


@dataclasses.dataclass(frozen=True)
class CollapseAlarm:
    """One detected symptom.

    Attributes:
      step: training step of the summary that triggered it.
      kind: "sigma" (a layer's σ0 jumped) or "gap" (D's real/fake gap too large).
      name: the summary name (`sigma/G/<layer>`) or "d/real-d/fake".
      value: the current σ0 or gap.
      reference: the median σ0 of the layer's history, or the gap threshold.
    """

    step: int
    kind: str
    name: str
    value: float
    reference: float

    def __str__(self) -> str:
        if self.kind == "sigma":
            return (
                f"step {self.step}: {self.name} = {self.value:.4g} is "
                f"{self.value / self.reference:.2f}x the median {self.reference:.4g} of its "
                "recent summaries (singular value blow-up, the collapse signature)"
            )
        return (
            f"step {self.step}: D real/fake logit gap {self.value:.4g} exceeds "
            f"{self.reference:.4g} (the discriminator separates real from fake completely)"
        )


class CollapseMonitor:
    """Tracks per-layer σ0 and the D gap over summaries and reports sudden blow-ups.

    Args:
      sigma_ratio: a layer is flagged when its σ0 exceeds this many times the median of its
        last `window` values (> 1).
      window: summaries of history kept per layer.
      min_history: values a layer needs before it can be flagged (no alarms while the
        history is too short to have a meaningful median).
      gap_threshold: flag `d_real - d_fake` (mean D logits on real and fake images) above
        this; None = off.

    Raises:
      ValueError: on a ratio <= 1, a window < 1, or min_history outside [1, window].
    """

    def __init__(
        self,
        sigma_ratio: float = 3.0,
        window: int = 20,
        min_history: int = 5,
        gap_threshold: float | None = None,
    ):
        if sigma_ratio <= 1.0:
            raise ValueError(f"sigma_ratio must be > 1, got {sigma_ratio}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 1 <= min_history <= window:
            raise ValueError(f"min_history must be in [1, window={window}], got {min_history}")
        self.sigma_ratio = float(sigma_ratio)
        self.window = int(window)
        self.min_history = int(min_history)
        self.gap_threshold = gap_threshold
        self._history: dict[str, collections.deque] = {}

    def reset(self) -> None:
        """Forgets the history (after restoring a checkpoint)."""
        self._history.clear()

    def update(
        self,
        step: int,
        sigmas: dict[str, float],
        d_real: float | None = None,
        d_fake: float | None = None,
    ) -> list[CollapseAlarm]:
        """Adds one summary's values and returns the alarms they raise (empty when healthy).

        Args:
          step: the training step.
          sigmas: summary name -> current σ0 estimate of that layer (>= 0).
          d_real, d_fake: mean D logits on real and fake images at this step (optional).

        Returns:
          Alarms, the σ0 ones sorted by decreasing ratio to their median.
        """
        alarms = []
        for name, value in sigmas.items():
            value = float(value)
            history = self._history.setdefault(name, collections.deque(maxlen=self.window))
            if len(history) >= self.min_history:
                median = float(np.median(history))
                if median > 0 and value > self.sigma_ratio * median:
                    alarms.append(CollapseAlarm(step, "sigma", name, value, median))
            history.append(value)
        alarms.sort(key=lambda a: a.value / a.reference, reverse=True)
        if self.gap_threshold is not None and d_real is not None and d_fake is not None:
            gap = float(d_real) - float(d_fake)
            if gap > self.gap_threshold:
                alarms.append(CollapseAlarm(step, "gap", "d/real-d/fake", gap, self.gap_threshold))
        return alarms
