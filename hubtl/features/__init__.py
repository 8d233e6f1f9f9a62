"""Frozen-backbone features, computed once and kept: the persistent feature store and the features of a dataset.

Used by linear probes (`hubtl train`, through `training/feature_cache.py`) and by `hubtl rank`.
"""

from .compute import FeatureDataset, Features, backbone_features, cached_outputs, feature_key, weights_fingerprint
from .store import CacheEntry, FeatureStore, StoredFeatures, cache_root

__all__ = [
    "CacheEntry",
    "FeatureDataset",
    "FeatureStore",
    "Features",
    "StoredFeatures",
    "backbone_features",
    "cache_root",
    "cached_outputs",
    "feature_key",
    "weights_fingerprint",
]
