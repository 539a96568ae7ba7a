"""The offline continual-learning benchmark behind ``streamcl bench``: one pass over a labeled
stream, domain after domain, with the learners the live platform builds (``build_learner``).

Per domain a seeded random sample is held out as its test set; the rest is streamed once in
micro-batches of ``batch_size``. Every domain's test set is scored at each domain boundary,
giving the accuracy matrix (row i: after training through domain i; column j: domain j's test
set), final average accuracy and forgetting; the predictions ``learn`` returns give the
prequential accuracy. The ``naive`` and ``iid`` baselines (the same training examples shuffled
across domains, trained naively: the one-pass upper bound) give each strategy's gap closure.

Domain boundaries: with ``--order domain`` a domain's examples are contiguous and its boundary
follows its last one. With ``--order time`` or ``file`` domains may interleave: domains are
ordered by their *last* appearance in the stream and domain i's boundary is the point where its
last training example has passed (whatever other domains it trained on before). The ``iid``
stream is scored at the same numbers of examples as the ordered stream's boundaries. Micro-batches
never straddle a boundary, so a boundary is an exact point of the stream.

Each strategy runs in its own spawned process: ``peak_rss_mb`` is that strategy's, and a crash
is reported in its result instead of ending the benchmark. Names that resolve to the same run
(``default`` and the strategy it stands for; ``naive`` asked for and the ``naive`` baseline) are
run once and reported under every name.

``--seeds N`` runs the whole benchmark for seeds seed … seed + N − 1 and reports each figure's
mean with its spread (std, min, max, values); gap closure over seeds is computed from the mean
accuracies. One seed keeps the single-run result unchanged.
"""

from learners.bench._report import format_table, plot
from learners.bench._run import BASELINES, check_strategies, resolve_strategy, run_bench, run_strategy
from learners.bench._seeds import aggregate, run_seeds, spread
from learners.bench._stream import (
    DEFAULT_DOMAIN,
    ORDERS,
    backward_transfer,
    boundaries,
    evaluate_stream,
    forgetting,
    gap_closure,
    split,
)

__all__ = [
    "BASELINES",
    "DEFAULT_DOMAIN",
    "ORDERS",
    "aggregate",
    "backward_transfer",
    "boundaries",
    "check_strategies",
    "evaluate_stream",
    "forgetting",
    "format_table",
    "gap_closure",
    "plot",
    "resolve_strategy",
    "run_bench",
    "run_seeds",
    "run_strategy",
    "split",
    "spread",
]
