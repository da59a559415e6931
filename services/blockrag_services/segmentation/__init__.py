"""The segmentation service."""
