"""Ready-made Typer command ``vent features`` (the lead registers it: ``app.command("features")(features_command)``)."""

from __future__ import annotations

from pathlib import Path

import typer


def features_command(
    image: Path = typer.Argument(..., help="Image file (any format SimpleITK reads)."),
    mask: Path = typer.Argument(..., help="Mask on the image grid; voxels > 0 are the ROI."),
    out: Path = typer.Option(..., "-o", "--out", help="Output .h5 (maps) or .csv (with --roi)."),
    kernel_mm: float = typer.Option(26.0, "--kernel-mm", help="Kernel edge in mm (odd voxel count)."),
    bins: str = typer.Option("64", "--bins", help="Fixed bin number, or 'none' (bin width or raw grey levels)."),
    bin_width: float | None = typer.Option(None, "--bin-width", help="Fixed bin width (with --bins none)."),
    features: str | None = typer.Option(None, "--features", help="Comma-separated feature ids (default all 56)."),
    roi: bool = typer.Option(False, "--roi", help="One value per feature over the whole mask (CSV)."),
    nifti_dir: Path | None = typer.Option(None, "--nifti-dir", help="Also write one NIfTI per feature."),
    backend: str = typer.Option("auto", "--backend", help="auto, numba or torch."),
    workers: int | None = typer.Option(None, "--workers", help="CPU threads (default all)."),
) -> None:
    """Voxel-wise radiomic feature maps (or ROI values) for any image and mask."""
    from vent.errors import ConfigError, VentError
    from vent.radiomics.maps import write_feature_maps

    try:
        if bins.lower() == "none":
            bin_count = None
        else:
            try:
                bin_count = int(bins)
            except ValueError as error:
                raise ConfigError(f"--bins must be an integer or 'none', got {bins!r}.") from error
        ids = [f.strip() for f in features.split(",") if f.strip()] if features else None
        path = write_feature_maps(image, mask, out, kernel_mm=kernel_mm, bin_count=bin_count, bin_width=bin_width,
                                  feature_ids=ids, roi=roi, nifti_dir=nifti_dir, backend=backend,
                                  n_workers=workers)
    except VentError as error:
        typer.echo(f"Error: {error}", err=True)
        raise typer.Exit(code=error.exit_code) from error
    typer.echo(f"wrote {path}")
