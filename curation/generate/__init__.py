"""Generation backends (one module each) behind the `Generator` protocol in `base`."""

from curation.registry import Registry

GENERATORS: Registry = Registry("generation backend", "curation.generate")
