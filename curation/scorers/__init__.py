"""Scorers (one module each) behind the `Scorer` protocol in `base`."""

from curation.registry import Registry

SCORERS: Registry = Registry("scorer", "curation.scorers")
