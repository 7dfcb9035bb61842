"""Released BigGAN weights → a tf_biggan `model_dir`.

    python -m tf_biggan.convert --from=biggan_pytorch --checkpoint=PATH --resolution=128 \\
      --model_dir=OUT

Each source module reads one format and returns a `Converted` (the built networks, the
generator's constructor arguments, the class names and a description of the source);
`write_model_dir` writes every source the same way: a checkpoint in the layout of
`tf_biggan.state.TrainState` (`generator`, `ema_generator`, `discriminator` when the source
has one, `step`), `model_config.json`, `classes.json` and `config.gin`, the gin bindings that
build the networks. `sample`, `export`, `eval` and `train --init_from` read that folder as
they read a training `model_dir`.

Sources:
- `biggan_pytorch`: ajbrock/BigGAN-PyTorch checkpoints (`G.pth`, `G_ema.pth`, `D.pth`).
- `tfhub`: DeepMind's BigGAN TF-Hub generator modules `biggan-128/256/512` (version 2).
- `tfhub_deep`: DeepMind's BigGAN-deep TF-Hub generator modules `biggan-deep-128/256/512`
  (version 1), with their truncation-indexed batch-norm statistics.
"""

from tf_biggan.convert.model_dir import Converted, write_model_dir

__all__ = ["Converted", "write_model_dir"]
