"""Synthetic 4DCT cohort with planted ventilation defects, written in the VAMPIRE layout.

The real VAMPIRE data are available only on request, so vent ships a seeded, deterministic generator whose output is
read by the same code as real data. The generative model, per subject:

1. **Anatomy at maximum exhalation** (the reference configuration; ``anatomy``). An elliptic torso with
   subcutaneous fat (-100 HU), muscle (+50 HU), mediastinal fat (-90 HU), heart and descending aorta (blood, +40 HU),
   liver under the right dome (+58 HU), ribs (+650 HU), vertebral bodies (cortical +1000 HU, cancellous +400 HU,
   discs +80 HU). Two lungs: tapered ellipses on diaphragm domes, with the mediastinum, heart (cardiac notch),
   aorta and spine cut out. Branching vessel trees (blood, Murray's law radii) and airway trees (air lumen with a
   soft-tissue wall) grow from each hilum; trachea and main bronchi run through the mediastinum. All edges carry
   the CT partial-volume effect of the (possibly 5 mm thick) voxels.
2. **Parenchyma density.** Lung HU = -1000 (1 - tau) + 40 tau with tissue fraction tau ~ 0.14-0.19 at exhale,
   increased posteriorly (gravity-dependent gradient of a supine subject) and around the hila, modulated by
   correlated texture.
3. **Ventilation defects** (1-4 per subject, 15-40% of the lung in total): smooth, randomly oriented ellipsoidal
   blobs with noise-perturbed outlines. Inside them the local expansion is reduced by 70-95% and the tissue is
   denser (tau + 0.04-0.10) and more heterogeneous (coarser texture, plus dense patches that close at exhale and
   open towards inhale), so defects grow denser and less homogeneous towards exhalation while healthy lung changes
   density more.
4. **Breathing** (``breathing``). A volumetric strain field s (healthy: larger at the base and posteriorly; reduced
   in defects) is integrated into a displacement u with div u = s: mostly cranio-caudal (diaphragm-driven, 0 at the
   apex, 10-20 mm at the base for adult size), plus anterior and lateral chest-wall motion; outside the lungs u is
   smoothed, so the lungs slide along the chest wall. Phase p warps the reference by a_p u with a_p rising from 0
   (phase 1 = maximum exhalation) to 1 (inhalation) and back. Parenchymal density follows mass conservation,
   tau_p = tau / J_p with J_p = det(I + a_p grad u); vessels, airway walls and body tissue are incompressible.
   Each phase gets an in-plane CT blur and correlated noise (sigma 20-40 HU).
5. **Reference ventilation image** (``ventilation``). Activity = (J_inhale - 1) x lung x smooth gain at the
   time-averaged position, blurred by the scanner PSF (PET ~8 mm, SPECT 12-15 mm FWHM), resampled onto the RefVI's
   own grid, Poisson-counted, with a few hot-spot outliers (> mean + 6 SD) near the hila; 0 outside VentMask.

Distractors that are *not* defects: the dorsal-ventral density gradient (the dense dependent lung is healthy and
well ventilated), dense perihilar vessels, and motion and partial volume at the lung edges. Sizes: ``tiny``
(scaled-down anatomy, ~2k lung voxels at 2 mm, for tests), ``demo`` (~20k) and ``full`` (adult, ~4.5-5 L, ~600k).
Subject k depends only on (seed, k, modality, size).
"""

from vent.synth.subject import DefectRegion, SyntheticSubject, make_synthetic_subject
from vent.synth.writer import write_synthetic_cohort

__all__ = ["DefectRegion", "SyntheticSubject", "make_synthetic_subject", "write_synthetic_cohort"]
