"""Deploying images on engines GPUX does not run itself: KServe manifests (kserve.py)."""
