"""Content-addressed image store (OCI image layout) with names and tags."""

from gpux.store.images import Image, Layer, LayerSource, Store
from gpux.store.reference import Reference, parse

__all__ = ["Image", "Layer", "LayerSource", "Reference", "Store", "parse"]
