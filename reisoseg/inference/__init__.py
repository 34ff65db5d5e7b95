"""Segmentation of volumes larger than memory: blocks, their output store, and the `segment` API."""
