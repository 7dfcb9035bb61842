"""Computes the feature statistics of a data set once and saves them as `.npz`.

The program is `tf_biggan.reference_stats` (installed as `tf-biggan-reference-stats`);
this file runs it from a checkout: `python tools/reference_stats.py --help`.
"""

from tf_biggan import reference_stats

if __name__ == "__main__":
    reference_stats.cli()
