"""Choosing the backbone before training: transferability scores of candidate backbones on frozen features.

`hubtl rank CONFIG.yaml --candidates A B C` (and `accelerate launch -m hubtl.ranking ...`), or
`hubtl.rank(config, candidates)`. Modules: `scores` (LogME, k-NN, linear probe), `run` (candidates,
`rank`, `RankResult`), `report` (table, rank.json, rank.png), `__main__` (the command line).
"""

from .run import Candidate, RankResult, RankRow, kendall_tau, parse_candidates, rank
from .scores import SCORES, knn_accuracy, linear_probe_score, logme

__all__ = [
    "SCORES",
    "Candidate",
    "RankResult",
    "RankRow",
    "kendall_tau",
    "knn_accuracy",
    "linear_probe_score",
    "logme",
    "parse_candidates",
    "rank",
]
