"""Accumulates a model_dir's truncation-indexed BN statistics (standing statistics).

    python tools/standing_stats.py --model_dir=runs/imagenet128 [--num_entries=51]
        [--num_batches=16] [--batch_size=64] [--seed=0] [--checkpoint=PREFIX]

Writes `model_dir/standing_stats.npz` for the checkpoint used (the latest by default) and
prints its path; `sample`, `export`, `eval` and `tf_biggan.load` then use the table with
that checkpoint. The program is `tf_biggan.standing_stats` (installed as
`tf-biggan-standing-stats`); this file runs it from a checkout.
"""

from tf_biggan import standing_stats

if __name__ == "__main__":
    standing_stats.cli()
