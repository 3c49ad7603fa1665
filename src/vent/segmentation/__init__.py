"""Lung segmentation for CTs that come without lung masks. ``classical``: SimpleITK thresholding and morphology, no
learned weights (validated on the real CT LUNG1-001 against its expert masks)."""

from vent.segmentation.classical import LungMasks, LungSegmentationSettings, segment_lungs

__all__ = ["LungMasks", "LungSegmentationSettings", "segment_lungs"]
