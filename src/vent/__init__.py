"""vent: regional ventilation from 4DCT via voxel-wise radiomic sequences."""

__version__ = "0.1.0"
