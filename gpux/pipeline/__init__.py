"""Turning what users send into tensors, and tensors into what users read."""
