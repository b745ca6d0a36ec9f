"""Selectors (one module each) behind the `Selector` protocol in `base`."""

from curation.registry import Registry

SELECTORS: Registry = Registry("selector", "curation.selectors")
