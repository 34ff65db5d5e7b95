"""Segmentation metrics (numpy/scipy only)."""
