"""Names the dead-code check (tests/test_dead_code.py, vulture) must not report: used by libraries, not by our code.

vulture reads this file as Python; each line "uses" one name. Keep a reason beside each.
"""

# pyradiomics reads this attribute of its feature classes when it is set (vent.radiomics.pyradiomics_reference)
labelledVoxelCoordinates  # noqa: B018, F821

# planted-truth fields of a synthetic defect, written to each subject's truth.json with dataclasses.asdict
center_mm_xyz  # noqa: B018, F821
radii_mm  # noqa: B018, F821
expansion_reduction  # noqa: B018, F821
tissue_fraction_increase  # noqa: B018, F821
volume_ml  # noqa: B018, F821
