"""Sharing images: OCI registries, archives, Hugging Face."""
