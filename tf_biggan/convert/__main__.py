"""`python -m tf_biggan.convert`: released BigGAN weights → a tf_biggan `model_dir`.

    python -m tf_biggan.convert --from=biggan_pytorch \\
      --checkpoint=weights/BigGAN_ch96_bs256x8_138k --resolution=128 --model_dir=runs/biggan128
    python -m tf_biggan.convert --from=tfhub --module_dir=biggan-128_2 --model_dir=runs/hub128
    python -m tf_biggan.convert --from=tfhub --module_dir=biggan-deep-128_1 \\
      --model_dir=runs/hubdeep128

`--checkpoint` is the port's run folder (G.pth, G_ema.pth, D.pth: whichever it holds) or
one of the files. `--module_dir` is an extracted TF-Hub module folder of DeepMind's
`biggan-128/256/512` (version 2) or `biggan-deep-128/256/512` (version 1), told apart by
its variables. The written folder is read by `sample`, `export`, `eval` and
`train --init_from` (see `tf_biggan.convert.model_dir`).
"""

from __future__ import annotations

from absl import flags

SOURCES = ("biggan_pytorch", "tfhub")


def convert_source(source: str, checkpoint=None, resolution=None, module_dir=None):
    """Runs the converter of `source`; returns its `Converted`.

    Raises:
      ValueError: a setting the source needs is missing, or the source is unknown.
    """
    if source == "biggan_pytorch":
        if not checkpoint or not resolution:
            raise ValueError("--from=biggan_pytorch needs --checkpoint and --resolution")
        from tf_biggan.convert import biggan_pytorch

        return biggan_pytorch.convert(checkpoint, resolution)
    if source == "tfhub":
        if not module_dir:
            raise ValueError("--from=tfhub needs --module_dir (the extracted module folder)")
        from tf_biggan.convert import tfhub, tfhub_deep

        # The module's variables tell BigGAN (biggan-*/2) and BigGAN-deep (biggan-deep-*/1) apart.
        if tfhub_deep.is_deep_module(module_dir):
            return tfhub_deep.convert(module_dir)
        return tfhub.convert(module_dir)
    raise ValueError(f"--from must be one of {', '.join(SOURCES)}, got {source!r}")


def main(argv) -> None:
    from absl import logging

    from tf_biggan import paths
    from tf_biggan.convert import model_dir as model_dir_lib

    del argv
    f = flags.FLAGS
    converted = convert_source(
        f["from"].value, paths.expand(f.checkpoint), f.resolution, paths.expand(f.module_dir)
    )
    prefix = model_dir_lib.write_model_dir(converted, f.model_dir)
    logging.info("converted %s", converted.source)
    print(prefix, flush=True)


def _define_flags() -> None:
    flags.DEFINE_enum("from", None, list(SOURCES), "Format of the released weights.")
    flags.DEFINE_string(
        "checkpoint", None, "biggan_pytorch: run folder (G.pth, G_ema.pth, D.pth) or one file."
    )
    flags.DEFINE_integer("resolution", None, "biggan_pytorch: image size, e.g. 128.")
    flags.DEFINE_string("module_dir", None, "tfhub: the extracted module folder.")
    flags.DEFINE_string("model_dir", None, "Folder to write (must not hold a checkpoint).")
    flags.mark_flags_as_required(["from", "model_dir"])


def cli() -> None:
    """The `tf-biggan-convert` console script: `python -m tf_biggan.convert` with its flags."""
    from tf_biggan import cli as cli_lib

    cli_lib.run(__name__, _define_flags, main)


if __name__ == "__main__":
    cli()
