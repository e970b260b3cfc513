"""The files a reconstruction writes (``OUT.mrc``, half maps, FSC tables and plot) and the check that they are free."""

from __future__ import annotations

from pathlib import Path

__all__ = ["output_paths", "check_outputs"]


def output_paths(out_path: str | Path) -> dict[str, Path]:
    """Files written by :meth:`Reconstruction.save` for ``out_path`` (``consensus.mrc``).

    ``volume`` ``consensus.mrc``, ``half1``/``half2`` ``consensus_half{1,2}.mrc``,
    ``fsc_txt``/``fsc_json``/``fsc_png`` ``consensus_fsc.{txt,json,png}``, ``filter_txt``
    ``consensus_filter.txt`` (the filter's per-shell weights).
    """
    p = Path(out_path)
    stem = p.with_suffix("") if p.suffix.lower() in (".mrc", ".map") else p
    base = stem.name
    folder = stem.parent
    return {
        "volume": p if p.suffix.lower() in (".mrc", ".map") else p.with_suffix(".mrc"),
        "half1": folder / f"{base}_half1.mrc",
        "half2": folder / f"{base}_half2.mrc",
        "fsc_txt": folder / f"{base}_fsc.txt",
        "fsc_json": folder / f"{base}_fsc.json",
        "fsc_png": folder / f"{base}_fsc.png",
        "filter_txt": folder / f"{base}_filter.txt",
    }


def check_outputs(out_path: str | Path, force: bool = False) -> dict[str, Path]:
    """Raise :class:`~cryoscape.errors.OutputExistsError` if any output of ``out_path`` exists (unless ``force``)."""
    from cryoscape.io.atomic import check_output_path

    paths = output_paths(out_path)
    for p in paths.values():
        check_output_path(p, force)
    return paths
