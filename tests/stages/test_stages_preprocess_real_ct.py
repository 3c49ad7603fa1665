"""preprocess on a real chest CT (NSCLC-Radiomics LUNG1-001) made into a VAMPIRE-layout 4DCT.

The phases are the real CT warped by a known cranio-caudal stretch, the RefVI is a known function of physical
position written on its own 4 mm grid with a *flipped* direction matrix. If preprocessing resamples in physical
space (and not by array index), the 2 mm RefVI equals that function at every lung voxel and the defects (lowest
30%) sit at the apex. Skipped when ../shared/data is absent.
"""

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from vent.config import config_from_dict
from vent.io.vampire import check_subject_headers, find_subject_files
from vent.stages.preprocess import preprocess_subject

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lung_ct" / "lung1-001"
pytestmark = pytest.mark.skipif(not (DATA / "LUNG1-001_ct.nii.gz").is_file(),
                                reason=f"reference CT {DATA}/LUNG1-001_ct.nii.gz is absent")

STRETCH = (0.0, 0.04, 0.08)  # cranio-caudal stretch per phase (exhale first)


def _ventilation(z_mm, z0, z1):
    """The planted RefVI: rises linearly from apex (z1, top) to base (z0)."""
    return 100.0 + 400.0 * (z1 - z_mm) / (z1 - z0)


@pytest.fixture(scope="module")
def real_subject(tmp_path_factory):
    ct = sitk.ReadImage(str(DATA / "LUNG1-001_ct.nii.gz"))
    lung = (sitk.ReadImage(str(DATA / "LUNG1-001_mask_Lung-Left.nii.gz")) > 0) | (
        sitk.ReadImage(str(DATA / "LUNG1-001_mask_Lung-Right.nii.gz")) > 0)
    lung.CopyInformation(ct)
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(sitk.Cast(lung, sitk.sitkUInt8))
    x, y, z, sx, sy, sz = stats.GetBoundingBox(1)
    pad = 6
    start = [max(0, x - pad), max(0, y - pad), max(0, z - 2)]
    size = [min(ct.GetSize()[0] - start[0], sx + 2 * pad), min(ct.GetSize()[1] - start[1], sy + 2 * pad),
            min(ct.GetSize()[2] - start[2], sz + 4)]
    ct, lung = sitk.RegionOfInterest(ct, size, start), sitk.RegionOfInterest(lung, size, start)

    root = tmp_path_factory.mktemp("real") / "Study"
    folder = root / "Subject_01"
    (folder / "CT").mkdir(parents=True)
    (folder / "GT").mkdir()
    lung_z = [ct.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in (z - start[2], z - start[2] + sz - 1)]
    z0, z1 = min(lung_z), max(lung_z)
    for t, stretch in enumerate(STRETCH, start=1):
        # stretch about the apex: a point at height z maps to z1 - (z1 - z) / (1 + s) in the exhale CT
        transform = sitk.AffineTransform(3)
        transform.SetCenter((0.0, 0.0, z1))
        transform.SetMatrix((1, 0, 0, 0, 1, 0, 0, 0, 1.0 / (1.0 + stretch)))
        phase = sitk.Resample(ct, ct, transform, sitk.sitkLinear, -1024.0, sitk.sitkInt16)
        mask = sitk.Resample(lung, lung, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        sitk.WriteImage(phase, str(folder / "CT" / f"PhaseImage_{t:02d}.mha"), True)
        sitk.WriteImage(mask, str(folder / "CT" / f"PhaseMask_{t:02d}.mha"), True)
    sitk.WriteImage(sitk.Cast(ct, sitk.sitkInt16), str(folder / "CT" / "AverageImage.mha"), True)
    sitk.WriteImage(sitk.Cast(lung, sitk.sitkUInt8), str(folder / "CT" / "AverageMask.mha"), True)

    # RefVI on a 4 mm grid whose x and y axes point the other way (direction diag(-1, -1, 1))
    spacing = 4.0
    lo = np.array(ct.TransformIndexToPhysicalPoint((0, 0, 0)))
    hi = np.array(ct.TransformIndexToPhysicalPoint([s - 1 for s in ct.GetSize()]))
    n = np.ceil((hi - lo) / spacing).astype(int) + 3
    vent = sitk.Image([int(v) for v in n], sitk.sitkFloat32)
    vent.SetSpacing((spacing,) * 3)
    vent.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    vent.SetOrigin((float(hi[0]) + spacing, float(hi[1]) + spacing, float(lo[2]) - spacing))
    zz = np.array([vent.TransformIndexToPhysicalPoint((0, 0, k))[2] for k in range(n[2])])
    values = np.broadcast_to(_ventilation(zz, z0, z1)[:, None, None], tuple(n[::-1])).astype(np.float32)
    image = sitk.GetImageFromArray(values.copy())
    image.CopyInformation(vent)
    sitk.WriteImage(image, str(folder / "GT" / "VentImage.mha"), True)
    vent_mask = sitk.Resample(lung, vent, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    sitk.WriteImage(sitk.BinaryDilate(vent_mask, [1, 1, 1]), str(folder / "GT" / "VentMask.mha"), True)
    return root, (z0, z1)


def test_real_ct_cohort_reads_and_checks(real_subject):
    root, _ = real_subject
    files = find_subject_files(root, "Subject_01")
    assert len(files.phase_images) == 3
    assert check_subject_headers(files, expected_phases=3) == []


def test_real_ct_resampled_in_physical_space(real_subject, tmp_path):
    root, (z0, z1) = real_subject
    config = config_from_dict({"run_dir": str(tmp_path / "run"), "data": {"root": str(root)}}, tmp_path)
    case = preprocess_subject(find_subject_files(root, "Subject_01"), config)
    lung = case.lung_mask_zyx > 0
    assert case.grid.spacing_mm_xyz == (2.0, 2.0, 2.0)
    assert 2.0 < lung.sum() * 8e-3 / 1000 < 8.0  # litres: a real adult lung pair
    # lung volume grows with the stretch, and the phases keep the file order
    volumes = case.attrs["lung_volume_ml"]
    assert volumes[0] < volumes[1] < volumes[2]
    assert case.attrs["inhale_phase"] == 2 and case.attrs["exhale_phase"] == 0
    # the RefVI is linear in z: physical-space resampling reproduces it at every lung voxel
    reference = case.grid.reference_image()
    index = np.argwhere(lung)
    z_mm = np.array([reference.TransformIndexToPhysicalPoint((int(i[2]), int(i[1]), int(i[0])))[2]
                     for i in index[:: max(1, len(index) // 2000)]])
    got = np.array([case.refvi_zyx[tuple(i)] for i in index[:: max(1, len(index) // 2000)]])
    np.testing.assert_allclose(got, _ventilation(z_mm, z0, z1), rtol=1e-4, atol=1e-2)
    # the lowest 30% of ventilation is the apex: defects lie above (higher z than) healthy lung
    defect = case.defect_zyx[lung] > 0
    assert defect.mean() == pytest.approx(0.3, abs=0.01)
    all_z = np.array([reference.TransformIndexToPhysicalPoint((int(i[2]), int(i[1]), int(i[0])))[2] for i in index])
    assert all_z[defect].min() >= all_z[~defect].max() - 2.0
