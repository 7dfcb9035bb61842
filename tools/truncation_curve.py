"""FID and Inception Score across truncation thresholds (the BigGAN truncation trade-off).

The program is `tf_biggan.truncation_curve` (installed as `tf-biggan-truncation-curve`);
this file runs it from a checkout: `python tools/truncation_curve.py --help`.
"""

from tf_biggan import truncation_curve

if __name__ == "__main__":
    truncation_curve.cli()
