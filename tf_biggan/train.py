"""BigGAN training: a `tf.distribute` custom loop configured with gin.

    python -m tf_biggan.train --gin_config=gin_configs/imagenet128.gin --model_dir=runs/in128

`train()` is the paper's Algorithm 1 around `tf_biggan.step`: read a batch, run the step
(D updates, G update, EMA), then the loop's bookkeeping: the non-finite guard,
summaries and the collapse watch, sample grids, periodic evaluation, checkpoints, the
time budget and signals. Its settings are the dataclasses of
`tf_biggan.settings`.

Input: the per-worker `tf.data` pipeline is read through a plain iterator, which is part
of the checkpoint (distributed iterators are not checkpointable), and each replica takes
its slice of every batch inside the step.
"""

from __future__ import annotations

import os
import sys
import time

import gin
import keras
import tensorflow as tf
from absl import app, flags, logging

from tf_biggan import data, distribute, model_files, networks, optimizers, paths, summaries
from tf_biggan import recovery as recovery_lib
from tf_biggan import state as state_lib
from tf_biggan import step as step_lib
from tf_biggan.finetune import initialize_from
from tf_biggan.settings import TrainConfig, train_settings


class Run:
    """A run's objects: strategy, input, state, checkpoints and summary writer.

    Building one creates the networks under the strategy's scope, resumes from the
    newest readable checkpoint of `model_dir` (or initialises from `init_from`) and
    writes `model_config.json` and `config.gin`.
    """

    def __init__(self, model_dir: str, config: TrainConfig, network_settings: dict, init_from=None):
        self.model_dir = model_dir
        self.config = config
        seed = config.step.seed
        self.strategy = config.runtime.apply(seed)
        self.chief = distribute.is_chief(self.strategy)
        self.decision = distribute.JobDecision(self.strategy)
        self.out_dir = distribute.worker_dir(model_dir, self.strategy)
        tf.io.gfile.makedirs(self.out_dir)
        # The data first: a missing data set is reported before the networks are built.
        self.input_data = self._input(*networks.configured_task(), seed)
        self.state = _build_state(self.strategy, network_settings)
        self.iterator = iter(self.input_data.dataset)
        self.checkpoint = self.state.checkpoint(iterator=self.iterator)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            self.out_dir,
            max_to_keep=config.loop.keep_checkpoints,
            step_counter=self.state.step,
        )
        self._resume(init_from)
        self.writer = tf.summary.create_file_writer(os.path.join(self.out_dir, "summaries"))

    def _input(self, resolution: int, num_classes: int, seed: int) -> data.InputData:
        strategy, step_config = self.strategy, self.config.step
        workers, _ = distribute.worker_position(strategy)
        if step_config.images_per_step % workers:
            raise ValueError(f"d_steps x batch_size must be divisible by the {workers} workers")
        logging.info(
            "strategy %s: %d replica(s) in sync on %d worker(s); batch %d = %d micro-batch(es) "
            "x %d replica(s) x %d image(s)",
            self.config.runtime.strategy,
            strategy.num_replicas_in_sync,
            workers,
            step_config.batch_size,
            step_config.accumulation_steps,
            strategy.num_replicas_in_sync,
            step_lib.replica_batch_size(step_config, strategy),
        )
        input_data = data.make_dataset(
            batch_size=step_config.images_per_step // workers,
            resolution=resolution,
            num_classes=num_classes,
            input_context=distribute.input_context(strategy),
            model_dir=self.out_dir,
            seed=seed,
        )
        if self.chief:  # real examples in the sample grids' layout, to compare side by side
            loop = self.config.loop
            grid = (loop.samples_per_class, loop.max_sample_classes)
            data.summarize_dataset(input_data, self.out_dir, resolution, *grid)
        return input_data

    def _resume(self, init_from) -> None:
        state, manager = self.state, self.manager
        # Every worker resumes from the chief's checkpoints (see `distribute.worker_dir`).
        resume_manager = (
            manager
            if self.chief
            else tf.train.CheckpointManager(
                self.checkpoint, self.model_dir, max_to_keep=self.config.loop.keep_checkpoints
            )
        )
        # The input position is each worker's own (its shard, its shuffle buffer).
        own_input = {"iterator": self.iterator} if self.chief else {}
        resumed_from = recovery_lib.restore_latest(
            lambda path: state.restore(path, **own_input),
            resume_manager,
            validate=lambda path: state_lib.check_optimizer_slots(state, path),
        )
        if resumed_from and not self.chief:
            distribute.restore_input_position(self.iterator, self.out_dir, resumed_from)
        if distribute.worker_position(self.strategy)[0] > 1:
            distribute.check_workers_agree(self.strategy, state.step)
        if resumed_from:
            logging.info("resumed from %s at step %d", resumed_from, self.step)
        elif init_from:
            initialize_from(state, init_from)
        if self.step >= self.config.loop.total_steps:
            logging.info(
                "the run in %s is complete: step %d of train.total_steps = %d; raise "
                "total_steps to train further",
                self.model_dir,
                self.step,
                self.config.loop.total_steps,
            )
        for name, previous, rate in state.apply_learning_rate_factors():
            logging.info("%s learning rate %.4g → %.4g from the config", name, previous, rate)
        if self.chief:
            classes = self.input_data.class_names
            model_files.write_model_config(self.model_dir, state.generator, classes)
            _write_text(os.path.join(self.model_dir, "config.gin"), gin.config_str())

    @property
    def step(self) -> int:
        return int(self.state.step.numpy())

    def save(self, step: int) -> None:
        """Saves checkpoint `step` on every worker; failed writes are retried by all together.

        Raises:
          recovery_lib.CheckpointSaveError: naming the last good checkpoint of `model_dir`.
        """
        recovery_lib.save_checkpoint(
            lambda: self.manager.save(checkpoint_number=step),
            step,
            self.config.recovery,
            agree=self.decision.any_of,
            last_good=self.last_good,
        )

    def last_good(self) -> str | None:
        """The newest checkpoint of the run (the chief's, in `model_dir`), or None."""
        return tf.train.latest_checkpoint(self.model_dir)

    def save_final(self, stopped_by_collapse: bool) -> int:
        """Saves the final step unless saved already (or collapsed); returns the step."""
        final_step = self.step
        latest = self.manager.latest_checkpoint
        if not stopped_by_collapse and (latest is None or not latest.endswith(f"-{final_step}")):
            self.save(final_step)
        return final_step

    def export_if_done(self, trained: bool) -> None:
        """Writes the SavedModel to `model_dir/export` once `total_steps` are reached, unless
        this process trained no step and an export is there already."""
        self.writer.flush()
        loop = self.config.loop
        if not (self.chief and loop.export_at_end and self.step >= loop.total_steps):
            return
        from tf_biggan import export

        export_dir = os.path.join(self.model_dir, "export")
        if trained or export.next_version(export_dir) == 1:
            export.export_from_state(self.state, export_dir, self.input_data.class_names)


def _build_state(strategy, network_settings: dict) -> state_lib.TrainState:
    """G, D, EMA G and both optimizers, built under `strategy.scope()`."""
    with strategy.scope():
        state = state_lib.TrainState(
            generator=networks.Generator(name="generator"),
            discriminator=networks.Discriminator(name="discriminator"),
            ema_generator=networks.Generator(name="ema_generator"),
            g_optimizer=optimizers.optimizer_for("generator"),
            d_optimizer=optimizers.optimizer_for("discriminator"),
        )
        networks.check_same_task(state.generator, state.discriminator, **network_settings)
        state.build()
    return state


def _write_text(path: str, text: str) -> None:
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(text)


def train(model_dir: str, init_from: str | None = None, **settings) -> dict:
    """Trains a BigGAN; resumes from the latest checkpoint in `model_dir`.

    Args:
      model_dir: where checkpoints, summaries, samples and the export go.
      init_from: checkpoint (or training dir) to initialise a new run from.
      **settings: any setting of `tf_biggan.settings` by its `train` name (e.g.
        `total_steps=10`), on top of the gin bindings.

    Returns:
      A dict with the final `step`, the `start_step` this process resumed at, the last
      metrics, `steady_seconds` (from the end of this process's first step to the end of
      the last, so without start-up, final save and export), the number of `restores` and
      `stopped_by_collapse`.
    """
    config, network_settings = TrainConfig.from_settings({**train_settings(), **settings})
    loop = config.loop
    run = Run(paths.expand(model_dir), config, network_settings, paths.expand(init_from))
    train_step = step_lib.make_train_step(run.state, run.strategy, config.step)
    recovery = recovery_lib.Recovery(run.state, run.manager, config.recovery)
    outputs = _Outputs(run)
    start_step, started = run.step, time.time()
    metrics, stopped_by_collapse = {}, False
    with (
        distribute.stop_when_a_worker_is_lost(run.decision, run.last_good),
        recovery_lib.StopRequest() as stop,
        run.writer.as_default(),
    ):
        while run.step < loop.total_steps:
            images, labels = next(run.iterator)
            # Only the guard's flag is read back every step (the call returns once the step
            # has run), the other metrics on summary steps, where they are written and shown.
            metrics = train_step(images, labels)
            step = run.step
            if step == start_step + 1:
                outputs.first_step_done(step)
            if recovery.after_step(step, float(metrics["nonfinite"]) > 0):
                continue
            action = "go on"
            if step % loop.summary_every == 0 or step == loop.total_steps:
                metrics = {k: float(v) for k, v in metrics.items()}
                sigmas = outputs.summarize(step, metrics)
                action = recovery.check_collapse(step, sigmas, metrics["d/real"], metrics["d/fake"])
                if action == "restored":
                    continue
            out_of_time = (
                loop.max_minutes is not None and time.time() - started > 60 * loop.max_minutes
            )
            why = run.decision.stop_reason(action == "stop", stop.signal is not None, out_of_time)
            if why == "collapse":
                stopped_by_collapse = True
                break
            outputs.after_step(step)
            if why:
                # Saved even in a run of non-finite steps: the weights are those of the last
                # finite update, because bad updates are not applied.
                run.save(step)
                logging.info(
                    "stopping at step %d (%s); saved %s", step, why, run.manager.latest_checkpoint
                )
                break
            if step % loop.checkpoint_every == 0:
                if recovery.consecutive_bad:
                    # Keep the last checkpoint good: a restore must not land in the bad run.
                    logging.warning("step %d: checkpoint skipped after a non-finite step", step)
                else:
                    run.save(step)
        steady_seconds = time.time() - outputs.first_step_end if outputs.first_step_end else 0.0
        final_step = run.save_final(stopped_by_collapse)
    run.export_if_done(trained=final_step > start_step)
    return {
        "step": final_step,
        "start_step": start_step,
        **{k: float(v) for k, v in metrics.items()},
        "steady_seconds": steady_seconds,
        "restores": recovery.restores,
        "stopped_by_collapse": stopped_by_collapse,
    }


class _Outputs:
    """The loop's reports: progress bar, scalars, sample grids, periodic evaluation."""

    def __init__(self, run: Run):
        self.run = run
        config, generator = run.config, run.state.generator
        self.grids = summaries.SampleGrids(
            generator.dim_z,
            generator.num_classes,
            config.loop.samples_per_class,
            config.loop.max_sample_classes,
            seed=config.step.seed + 1,
        )
        self.evaluation = None
        if config.evaluation.every:
            self.evaluation = summaries.PeriodicEvaluation(
                config.evaluation,
                generator.num_classes,
                generator.dim_z,
                run.out_dir,
                run.checkpoint,
                seed=config.step.seed + 2,
                decide=run.decision.chief_says,
            )
        self.progress = keras.utils.Progbar(
            config.loop.total_steps, stateful_metrics=["loss/d", "loss/g", "img/s"]
        )
        self.progress.update(run.step)
        self.interactive, self.shown, self.first_step_end = sys.stdout.isatty(), [], None
        self.last_time, self.last_step = time.time(), run.step

    def first_step_done(self, step: int) -> None:
        """Ends start-up (`first_step_end`, the time) and writes
        `operative_config.gin`: every setting the run used (gin knows it after a step), also
        in TensorBoard with the settings as hparams and the real-examples grid."""
        self.first_step_end, run = time.time(), self.run
        if not run.chief:
            return
        operative = gin.operative_config_str()
        _write_text(os.path.join(run.model_dir, "operative_config.gin"), operative)
        examples = os.path.join(run.model_dir, "real_examples.png")
        summaries.write_run_description(operative, run.config.settings(), examples, step)

    def summarize(self, step: int, metrics: dict) -> dict:
        """Adds `img/s` to `metrics`, writes the scalars; returns the SN summaries."""
        now = time.time()
        images = (step - self.last_step) * self.run.config.step.images_per_step
        metrics["img/s"] = images / max(now - self.last_time, 1e-9)
        self.last_time, self.last_step = now, step
        self.shown = [(k, metrics[k]) for k in ("loss/d", "loss/g", "img/s") if k in metrics]
        sigmas = summaries.spectral_norm_summaries(self.run.state)
        if self.run.chief:
            summaries.write_scalars(
                self.run.state, metrics, step, self.run.input_data.skipped, sigmas
            )
        return sigmas

    def after_step(self, step: int) -> None:
        """The progress bar, and the sample grid and evaluation when due."""
        loop = self.run.config.loop
        # In a terminal the bar redraws in place; in a log (CI, nohup) each update is a line,
        # so there it is updated on summary steps only.
        # The values shown are those of the last summary step (read back there).
        if self.interactive or step % loop.summary_every == 0 or step == loop.total_steps:
            self.progress.update(step, self.shown)
        ema_generator = self.run.state.ema_generator
        if step % loop.sample_every == 0 or step == loop.total_steps:
            self.grids.write(ema_generator, self.run.model_dir, step, self.run.chief)
        if self.evaluation is not None and self.evaluation.due(step):
            self.evaluation(ema_generator, step)


# --------------------------------------------------------------------------- CLI


def define_flags() -> None:
    """Defines the CLI's flags (only when run as the program, so importing defines none)."""
    from tf_biggan import gin_config

    gin_config.define_gin_flags(
        "Gin config file(s), applied in order.",
        "Extra gin bindings, e.g. 'train.total_steps = 10'.",
    )
    flags.DEFINE_string("model_dir", None, "Output directory; a restart with the same one resumes.")
    flags.DEFINE_string("init_from", None, "Checkpoint or model_dir to fine-tune from.")


def main(argv):
    del argv
    from tf_biggan import gin_config

    FLAGS = flags.FLAGS
    if not FLAGS.gin_config:
        raise app.UsageError(
            "--gin_config is required, e.g. --gin_config=gin_configs/quickstart.gin"
        )
    gin_config.parse_gin(FLAGS.gin_config, FLAGS.gin_bindings)
    model_dir = FLAGS.model_dir or os.path.join(
        "runs", os.path.splitext(os.path.basename(FLAGS.gin_config[-1]))[0]
    )
    logging.info("model_dir: %s", model_dir)
    result = train(model_dir, init_from=FLAGS.init_from)
    logging.info("finished at step %d", result["step"])


def cli() -> None:
    """The `tf-biggan-train` console script: `python -m tf_biggan.train` with its flags."""
    from tf_biggan import cli as cli_lib

    cli_lib.run(__name__, define_flags, main)


if __name__ == "__main__":
    cli()
