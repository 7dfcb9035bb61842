"""The settings of a training run, one gin-configurable dataclass per concern.

| concern | dataclass | module |
|---|---|---|
| the step: losses, regularisers, d_steps, accumulation, EMA, σ0 clamp, augmentation | `StepConfig` | `step` |
| non-finite steps, restores, collapse | `RecoveryConfig` | `recovery` |
| budgets and intervals: steps, minutes, checkpoints, summaries, samples, export | `LoopConfig` | here |
| strategy, precision, determinism | `RuntimeConfig` | `distribute` |
| periodic FID / IS / KID | `EvalConfig` | `summaries` |

Each setting is declared once, as a field of its dataclass, and can be bound there
(`StepConfig.d_steps = 2`). The experiment files bind the same settings by their short
names under `train` (`train.d_steps = 2`, `train.eval_every = 1000`): the `train`
configurable takes any name and `TrainConfig.from_settings` hands each to the dataclass
that declares it (`eval_*` to `EvalConfig`), so a typo is an error that names the
setting, and binding one setting under both names is an error too.

The image resolution and the class count are the networks' settings
(`Generator.resolution`, `Generator.num_classes`); `train.resolution` and
`train.num_classes` are accepted for older experiment files and must agree with them.
"""

from __future__ import annotations

import dataclasses
import difflib

import gin

from tf_biggan.distribute import RuntimeConfig
from tf_biggan.recovery import RecoveryConfig
from tf_biggan.step import StepConfig
from tf_biggan.summaries import EvalConfig

NETWORK_SETTINGS = ("resolution", "num_classes")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """The run's budgets and the intervals of its outputs (in G updates).

    Attributes:
      total_steps: G updates to run in all (a resumed run continues to it).
      max_minutes: wall-clock budget of the run, counted from this process's first step
        on the chief's clock; on reaching it every worker saves the same step and stops
        (a restart continues). None = no budget.
      checkpoint_every: steps between checkpoints (also saved at the end and on SIGTERM).
      keep_checkpoints: checkpoints kept.
      summary_every: steps between TensorBoard scalar summaries (and collapse checks).
      sample_every: steps between sample grids of the EMA generator.
      samples_per_class, max_sample_classes: the layout of the sample grids and of
        `real_examples.png`.
      export_at_end: write a SavedModel to `model_dir/export` at the end.
    """

    total_steps: int = 1000
    max_minutes: float | None = None
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    summary_every: int = 50
    sample_every: int = 500
    samples_per_class: int = 8
    max_sample_classes: int = 10
    export_at_end: bool = True

    def __post_init__(self):
        for name in ("checkpoint_every", "keep_checkpoints", "summary_every", "sample_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_minutes is not None and self.max_minutes < 0:
            raise ValueError(f"max_minutes must be >= 0 (or None), got {self.max_minutes}")


# concern -> (dataclass, the prefix of its settings' names under `train`)
CONCERNS = {
    "step": (StepConfig, ""),
    "recovery": (RecoveryConfig, ""),
    "loop": (LoopConfig, ""),
    "runtime": (RuntimeConfig, ""),
    "evaluation": (EvalConfig, "eval_"),
}


def _setting_owners() -> dict[str, tuple[str, str]]:
    """`train` setting name -> (concern, field name)."""
    owners = {}
    for concern, (cls, prefix) in CONCERNS.items():
        for field in dataclasses.fields(cls):
            owners[prefix + field.name] = (concern, field.name)
    return owners


def _bound_in_gin(cls, field: str) -> bool:
    return field in gin.get_bindings(cls)


def check_setting_names(settings) -> dict[str, tuple[str, str]]:
    """Raises on a name no dataclass declares, or one bound under two names.

    Returns:
      `train` setting name -> (concern, field name), for every known setting.

    Raises:
      ValueError: naming the unknown setting (with the nearest known ones) or the setting
        bound twice.
    """
    owners = _setting_owners()
    for name in settings:
        if name in NETWORK_SETTINGS:
            continue
        if name not in owners:
            close = difflib.get_close_matches(name, [*owners, *NETWORK_SETTINGS], n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ValueError(f"train has no setting {name!r}{hint}")
        concern, field = owners[name]
        config_cls = CONCERNS[concern][0]
        if _bound_in_gin(config_cls, field):
            raise ValueError(
                f"train.{name} and {config_cls.__name__}.{field} are both bound; "
                "bind the setting once"
            )
    return owners


@gin.configurable("train")
def train_settings(**settings) -> dict:
    """The settings bound as `train.<name>` in gin (any name; checked by `TrainConfig`)."""
    return settings


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a run, by concern (see the module docstring)."""

    step: StepConfig
    recovery: RecoveryConfig
    loop: LoopConfig
    runtime: RuntimeConfig
    evaluation: EvalConfig

    def settings(self) -> dict:
        """Every setting by its `train` name (`eval_every`, `d_steps`, ...)."""
        return {
            prefix + name: value
            for concern, (_, prefix) in CONCERNS.items()
            for name, value in dataclasses.asdict(getattr(self, concern)).items()
        }

    @classmethod
    def from_settings(cls, settings: dict) -> tuple[TrainConfig, dict]:
        """Builds each dataclass from its gin bindings, with `settings` on top.

        Args:
          settings: short names as under `train` (e.g. `{"d_steps": 2, "eval_every": 0}`).

        Returns:
          `(config, network_settings)`: the `TrainConfig`, and `resolution` /
          `num_classes` where given (to be checked against the networks).

        Raises:
          ValueError: an unknown name (with the nearest known ones), a setting bound both
            under `train` and under its dataclass, or an invalid value.
        """
        owners = check_setting_names(settings)
        by_concern = {concern: {} for concern in CONCERNS}
        network = {}
        for name, value in settings.items():
            if name in NETWORK_SETTINGS:
                network[name] = value
            else:
                concern, field = owners[name]
                by_concern[concern][field] = value
        configs = {
            concern: config_cls(**by_concern[concern])
            for concern, (config_cls, _) in CONCERNS.items()
        }
        return cls(**configs), network
