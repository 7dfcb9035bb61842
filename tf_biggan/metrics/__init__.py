"""Sample-quality metrics for BigGAN: FID, Inception Score, KID, precision/recall.

Both FID and IS move with the extractor's weights, the resizing of the images, the number of
samples and the truncation threshold, so every result produced here records the extractor, the
sample count and the truncation it was measured with.

The package re-exports the public names of its modules (their docstrings say more):

* `statistics`: streaming feature statistics and the metrics computed from features.
* `extractors`: the networks that map images to features and logits.
* `runners`: generators and data sets through an extractor, and the evaluation itself.

The command-line program is `python -m tf_biggan.eval`.
"""

# Each module's `__all__` is the one list of its public names.
from tf_biggan.metrics import extractors, runners, statistics
from tf_biggan.metrics.extractors import *  # noqa: F403
from tf_biggan.metrics.runners import *  # noqa: F403
from tf_biggan.metrics.statistics import *  # noqa: F403

__all__ = [*statistics.__all__, *extractors.__all__, *runners.__all__]
