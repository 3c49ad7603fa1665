"""The semi-real generator (vent.synth.from_ct) on the real CT LUNG1-001, shrunk 2x in-plane to keep the test short."""

from pathlib import Path

import pytest
import SimpleITK as sitk

from vent.synth.from_ct import SemiRealSettings, write_semireal_cohort

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lung_ct" / "lung1-001"


@pytest.fixture(scope="module")
def small_ct(tmp_path_factory) -> tuple[Path, list[Path]]:
    if not (DATA / "LUNG1-001_ct.nii.gz").is_file():
        pytest.skip(f"reference CT {DATA}/LUNG1-001_ct.nii.gz is absent")
    folder = tmp_path_factory.mktemp("small_ct")
    paths = []
    for name in ("ct", "mask_Lung-Left", "mask_Lung-Right"):
        image = sitk.ReadImage(str(DATA / f"LUNG1-001_{name}.nii.gz"))
        image = sitk.Shrink(image, [2, 2, 1])
        paths.append(folder / f"{name}.nii.gz")
        sitk.WriteImage(image, str(paths[-1]))
    return paths[0], paths[1:]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_subjects_made_in_a_pool_equal_those_made_one_at_a_time(small_ct, tmp_path):
    ct, masks = small_ct
    settings = SemiRealSettings(n_phases=3, slab_mm=16.0, below_mm=24.0, inplane_factor=2, model_spacing_mm=8.0,
                                vent_spacing_mm=8.0)
    serial = write_semireal_cohort(ct, masks, tmp_path / "serial", 2, seed=3, settings=settings)
    pooled = write_semireal_cohort(ct, masks, tmp_path / "pooled", 2, seed=3, settings=settings, workers=2)
    assert [p.name for p in serial] == [p.name for p in pooled] == ["Subject_01", "Subject_02"]
    files = _files(tmp_path / "serial")
    assert len([name for name in files if name.endswith(".mha")]) == 2 * (2 * 3 + 5)
    assert files == _files(tmp_path / "pooled")


@pytest.mark.parametrize("modality, n_phases", [("pet", 5), ("spect", 10)])
def test_cli_from_ct_takes_the_phase_count_from_the_modality(small_ct, tmp_path, modality, n_phases):
    from typer.testing import CliRunner

    from vent.cli import app

    ct, (left, right) = small_ct
    result = CliRunner().invoke(app, ["synth", str(tmp_path / "out"), "--from-ct", str(ct), "--lung-mask", str(left),
                                      "--lung-mask", str(right), "--cases", "1", "--modality", modality,
                                      "--slab-mm", "16"])
    assert result.exit_code == 0, result.output
    ct_files = sorted((tmp_path / "out" / "Subject_01" / "CT").glob("PhaseImage_*.mha"))
    assert len(ct_files) == n_phases, ct_files
