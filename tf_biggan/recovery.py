"""What a run does when things go wrong: damaged checkpoints, non-finite steps, collapse,
signals.

- `restore_latest`: resume from the newest readable checkpoint, skipping damaged ones.
- `Recovery` (configured by `RecoveryConfig`): counts skipped (non-finite) updates,
  restores the last checkpoint when they persist or when the collapse watch fires, and
  lowers the learning rates on each restore.
- `save_checkpoint`: a checkpoint write that fails (full disk, permissions, a storage
  outage) is retried a bounded number of times, by every worker together, and then stops
  the run with `CheckpointSaveError` naming the last good checkpoint.
- `StopRequest`: SIGTERM / SIGINT become a flag the loop checks after each step, so the
  run saves the current step before it exits; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable

import gin
import tensorflow as tf
from absl import logging

from tf_biggan import monitor as monitor_lib
from tf_biggan import state as state_lib


@gin.configurable
@dataclasses.dataclass(frozen=True)
class RecoveryConfig:
    """How a run reacts to non-finite steps and to a collapse.

    Attributes:
      max_consecutive_nonfinite: consecutive steps with a skipped (non-finite) update
        after which the last checkpoint is restored.
      max_restores: restores (after non-finite steps or a collapse) after which the run
        gives up with a `FloatingPointError` (non-finite) or stops (collapse).
      lr_decay_on_restore: both learning rates are multiplied by this on each restore
        (1.0 = unchanged). The factor is saved with later checkpoints, so it survives a
        crash; a resumed run uses the configured rates times the saved factors.
      collapse_sigma_ratio, collapse_window: a layer whose top singular value exceeds
        `collapse_sigma_ratio` times the median of its last `collapse_window`
        summaries is reported as a collapse (see `tf_biggan.monitor`).
      collapse_gap: also report a collapse when the mean D logit gap
        `d/real - d/fake` exceeds this (None = off).
      on_collapse: "warn" (log), "stop" (stop without saving the collapsed state) or
        "restore" (restore the last checkpoint, as after non-finite steps).
      save_retries: times a failed checkpoint write is tried again before the run stops.
      save_retry_seconds: wait before the first retry, in seconds; doubled for each
        further retry (a storage outage gets time to pass).
    """

    max_consecutive_nonfinite: int = 5
    max_restores: int = 3
    lr_decay_on_restore: float = 1.0
    collapse_sigma_ratio: float = 3.0
    collapse_window: int = 20
    collapse_gap: float | None = None
    on_collapse: str = "warn"
    save_retries: int = 3
    save_retry_seconds: float = 10.0

    def __post_init__(self):
        if self.on_collapse not in monitor_lib.ON_COLLAPSE:
            raise ValueError(
                f"on_collapse must be one of {monitor_lib.ON_COLLAPSE}, got {self.on_collapse!r}"
            )
        if self.lr_decay_on_restore <= 0:
            raise ValueError(f"lr_decay_on_restore must be > 0, got {self.lr_decay_on_restore}")
        if self.max_consecutive_nonfinite < 1:
            raise ValueError(
                f"max_consecutive_nonfinite must be >= 1, got {self.max_consecutive_nonfinite}"
            )
        if self.save_retries < 0 or self.save_retry_seconds < 0:
            raise ValueError(
                "save_retries and save_retry_seconds must be >= 0, got "
                f"{self.save_retries} and {self.save_retry_seconds}"
            )


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written, even after the retries."""


def save_checkpoint(
    save: Callable[[], object],
    step: int,
    config: RecoveryConfig,
    agree: Callable[..., tuple[bool, ...]],
    last_good: Callable[[], str | None],
) -> None:
    """Runs `save()`, retrying it on failure, with every worker taking the same turns.

    TensorFlow writes a checkpoint's data and index under new names and updates the
    `checkpoint` file (the list of checkpoints) last, by an atomic rename, and deletes
    the oldest checkpoint only after that. A write that fails part way therefore leaves
    the earlier checkpoints listed, intact and loadable; at worst it leaves unlisted
    files of the failed step, which the next successful save of that step overwrites.

    Args:
      save: writes the checkpoint (e.g. `manager.save(checkpoint_number=step)`); raises
        `tf.errors.OpError` or `OSError` on failure.
      step: the step being saved (for the messages).
      config: `save_retries` and `save_retry_seconds`.
      agree: `JobDecision.any_of`: whether any worker's write failed, the same answer on
        every worker, so all retry together (a save is a collective operation).
      last_good: returns the newest checkpoint of the run's `model_dir`, or None.

    Raises:
      CheckpointSaveError: the write still failed after `save_retries` retries; the
        message names the last good checkpoint.
    """
    for attempt in range(config.save_retries + 1):
        error = None
        try:
            save()
        except (tf.errors.OpError, OSError) as exc:
            error = exc
        (failed,) = agree(error is not None)
        if not failed:
            return
        reason = _first_line(error) if error is not None else "the write failed on another worker"
        if attempt == config.save_retries:
            break
        wait = config.save_retry_seconds * 2**attempt
        logging.warning(
            "saving the checkpoint of step %d failed (%s); retry %d of %d in %.3g s",
            step,
            reason,
            attempt + 1,
            config.save_retries,
            wait,
        )
        time.sleep(wait)
    raise CheckpointSaveError(
        f"could not save the checkpoint of step {step} after {config.save_retries} retries "
        f"({reason}); the last good checkpoint is {last_good() or 'none (nothing saved yet)'}, "
        "which a restart resumes from"
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def restore_latest(
    restore: Callable[[str], None],
    manager: tf.train.CheckpointManager,
    validate: Callable[[str], None] | None = None,
):
    """Restores the newest readable checkpoint of `manager`, falling back to older ones.

    `restore(path)` restores one checkpoint and raises when it cannot (e.g.
    `TrainState.restore`, or `lambda p: checkpoint.restore(p).assert_existing_objects_matched()`).

    TensorFlow writes a checkpoint's files first and the `checkpoint` index file last
    (atomically, by rename), so a crash during a save leaves the index pointing at the
    previous checkpoint. A newest checkpoint that is listed but damaged afterwards (a
    truncated or deleted file, e.g. on a full disk) is skipped with a warning. An index
    file without timestamps (written by hand or by other tools) lists no checkpoints to
    `manager.checkpoints`; its newest checkpoint is still found.

    `validate(path)`, when given, runs before each restore; the
    `state_lib.IncompatibleCheckpointError` it raises is not damage, so it
    stops the search and propagates.

    Returns:
      The restored checkpoint path, or None when `manager` lists none.

    Raises:
      RuntimeError: checkpoints are listed but none of them can be read.
      state_lib.IncompatibleCheckpointError: from `validate`.
    """
    paths = list(manager.checkpoints)
    if not paths and manager.latest_checkpoint:
        paths = [manager.latest_checkpoint]
    for path in reversed(paths):
        try:
            if validate is not None:
                validate(path)
            restore(path)
        except state_lib.IncompatibleCheckpointError:
            raise
        # A truncated file raises IndexError from the reader, others raise OpErrors.
        except (tf.errors.OpError, ValueError, AssertionError, IndexError, OSError) as error:
            logging.warning(
                "checkpoint %s cannot be read (%s: %s); trying the previous one",
                path,
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
            )
            continue
        if path != paths[-1]:
            logging.warning("resuming from %s instead of the damaged %s", path, paths[-1])
        return path
    if paths:
        raise RuntimeError(
            f"none of the checkpoints {paths} in {manager.directory} can be read; move them "
            "away to start afresh"
        )
    return None


class Recovery:
    """Counts non-finite steps and restores the last good checkpoint when they persist.

    A restore brings back G, D, EMA G, the optimizers, the step and the skipped-update
    counter but not the input iterator: the data stream goes on past the batches that
    came with the bad steps instead of replaying them. z is drawn from the step number and
    so repeats; the learning rates can be lowered (`lr_decay_on_restore`) to leave the
    failed path. The collapse watch (`tf_biggan.monitor`) is read on summary steps.
    """

    def __init__(self, state, manager, config: RecoveryConfig):
        self.state = state
        self.manager = manager
        self.config = config
        self.watch = monitor_lib.CollapseMonitor(
            sigma_ratio=config.collapse_sigma_ratio,
            window=config.collapse_window,
            gap_threshold=config.collapse_gap,
        )
        self.consecutive_bad = 0
        self.restores = 0

    @property
    def can_restore(self) -> bool:
        return self.restores < self.config.max_restores and bool(self.manager.latest_checkpoint)

    def after_step(self, step: int, skipped: bool) -> bool:
        """Records whether the step's update was skipped; returns True when it restored.

        Raises:
          FloatingPointError: too many bad steps and no restore left (or no checkpoint).
        """
        if not skipped:
            self.consecutive_bad = 0
            return False
        self.consecutive_bad += 1
        logging.warning(
            "step %d: non-finite loss or gradient, update skipped (%d in a row, %d in all)",
            step,
            self.consecutive_bad,
            int(self.state.skipped_updates),
        )
        if self.consecutive_bad < self.config.max_consecutive_nonfinite:
            return False
        if not self.can_restore:
            reason = (
                f"after {self.restores} restores (max_restores={self.config.max_restores})"
                if self.manager.latest_checkpoint
                else "and there is no checkpoint to restore"
            )
            raise FloatingPointError(
                f"{self.consecutive_bad} consecutive non-finite steps at step {step} {reason}; "
                f"giving up (checkpoints and summaries in {self.manager.directory})"
            )
        self.restore(step, "non-finite steps")
        return True

    def check_collapse(self, step: int, sigmas: dict, d_real: float, d_fake: float) -> str:
        """Feeds the collapse watch one summary; returns "go on", "restored" or "stop".

        Every worker reads the same (mirrored, all-reduced) numbers, so all decide alike.
        """
        alarms = self.watch.update(step, sigmas, d_real, d_fake)
        if not alarms:
            return "go on"
        for alarm in alarms[:5]:
            logging.warning("collapse watch: %s", alarm)
        action = self.config.on_collapse
        if action == "stop" or (action == "restore" and not self.can_restore):
            logging.error(
                "stopping at step %d on a collapse (on_collapse=%r, %d restores done); the "
                "last checkpoint %s precedes it",
                step,
                action,
                self.restores,
                self.manager.latest_checkpoint,
            )
            return "stop"
        if action == "restore":
            self.restore(step, "collapse")
            return "restored"
        return "go on"

    def restore(self, step: int, why: str) -> None:
        """Restores the latest checkpoint (without the input position) and lowers the rates.

        Raises:
          FloatingPointError: when no restore is left.
        """
        if not self.can_restore:
            raise FloatingPointError(
                f"step {step}: {why}, but no restore is left ({self.restores} of "
                f"max_restores={self.config.max_restores} used) or there is no checkpoint"
            )
        self.restores += 1
        path = self.manager.latest_checkpoint
        # The decay applies to the factors of the run so far, not to those of the restored
        # checkpoint, so a second restore of the same checkpoint lowers the rates again.
        factors = self.state.learning_rate_factors.numpy()
        self.state.restore(path)
        self.state.learning_rate_factors.assign(factors)
        self.state.scale_learning_rates(self.config.lr_decay_on_restore)
        logging.warning(
            "step %d: %s; restored %s (step %d), restore %d of %d, learning rates G %.3g D %.3g",
            step,
            why,
            path,
            int(self.state.step.numpy()),
            self.restores,
            self.config.max_restores,
            float(self.state.g_optimizer.learning_rate),
            float(self.state.d_optimizer.learning_rate),
        )
        self.consecutive_bad = 0
        self.watch.reset()


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop checks after each step."""

    def __init__(self):
        self.signal = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        del frame
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signal = signum
        logging.warning(
            "received %s: saving a checkpoint and stopping", signal.Signals(signum).name
        )

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
