"""Lung segmentation for CTs that come without lung masks, behind one interface (``backends.SEGMENTERS``).

``classical``: SimpleITK thresholding and morphology, no learned weights (validated on the real CT LUNG1-001 against
its expert masks); ``lungmask``: the learned U-net R231 through its own package, where weights can be downloaded.
"""

from vent.segmentation.backends import SEGMENTERS, segment_case, segment_image
from vent.segmentation.classical import LungMasks, LungSegmentationSettings, segment_lungs

__all__ = ["LungMasks", "LungSegmentationSettings", "segment_lungs", "SEGMENTERS", "segment_case", "segment_image"]
