"""Particle selection and export: selectors, index files and round trips of every export format."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from cryoscape.analysis.select import (
    export_selection,
    invert_selection,
    project_image_names,
    read_index_file,
    select_by_cluster,
    select_by_region,
    select_by_score,
)
from cryoscape.errors import InputError, OutputExistsError
from cryoscape.io.cryodrgn import read_index_pkl, safe_load_pickle
from cryoscape.particles.particle_set import ParticleSet

STAR_6OPTICS = "relion31.6opticsgroups.star"
CS_FILE = "cryosparc_P12_J24_001_particles.cs"


def _one_line_input_error(exc: pytest.ExceptionInfo, path: Path | None = None) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and ";" in msg
    if path is not None:
        assert str(path) in msg


# ------------------------------------------------------------------ selectors
def test_select_by_cluster() -> None:
    labels = np.array([2, 0, 1, 2, 1, 0, 2])
    np.testing.assert_array_equal(select_by_cluster(labels, 2), [0, 3, 6])
    out = select_by_cluster(labels, [0, 1])
    np.testing.assert_array_equal(out, [1, 2, 4, 5])
    assert out.dtype == np.int64
    with pytest.raises(InputError, match="none of the clusters"):
        select_by_cluster(labels, [7])


def test_select_by_region_box_and_polygon() -> None:
    rng = np.random.default_rng(1)
    emb = rng.uniform(-1, 1, size=(500, 2))
    box = select_by_region(emb, (-0.5, 0.25, 0.0, 0.75))
    expect = np.flatnonzero((emb[:, 0] > -0.5) & (emb[:, 0] < 0.25) & (emb[:, 1] > 0) & (emb[:, 1] < 0.75))
    np.testing.assert_array_equal(box, expect)
    tri = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # x > 0, y > 0, x + y < 1
    inside = select_by_region(emb, tri)
    expect = np.flatnonzero((emb[:, 0] > 0) & (emb[:, 1] > 0) & (emb.sum(1) < 1))
    np.testing.assert_array_equal(inside, expect)
    emb[expect[0]] = np.nan
    assert expect[0] not in select_by_region(emb, tri)


@pytest.mark.parametrize("region", [(1.0, 0.0, 0.0, 1.0), [[0, 0], [1, 1]], np.zeros((3, 3))])
def test_select_by_region_bad_region(region: object) -> None:
    with pytest.raises(InputError) as exc:
        select_by_region(np.zeros((4, 2)), region)  # type: ignore[arg-type]
    _one_line_input_error(exc)


def test_select_by_region_needs_2d_embedding() -> None:
    with pytest.raises(InputError, match="expected \\(N,2\\)"):
        select_by_region(np.zeros((4, 3)), (0, 1, 0, 1))


def test_select_by_score() -> None:
    s = np.array([0.5, 3.0, 1.0, 2.0, 0.1, 4.0, 2.0, 0.0, 5.0, 1.5])
    np.testing.assert_array_equal(select_by_score(s, threshold=1.0), [0, 2, 4, 7])
    np.testing.assert_array_equal(select_by_score(s, threshold=2.0, keep="above"), [1, 3, 5, 6, 8])
    np.testing.assert_array_equal(select_by_score(s, top_fraction=0.3, keep="above"), [1, 5, 8])
    np.testing.assert_array_equal(select_by_score(s, top_fraction=0.2), [4, 7])
    assert select_by_score(s, top_fraction=1.0).size == s.size
    for kwargs in ({}, {"threshold": 1.0, "top_fraction": 0.5}, {"top_fraction": 0.0}, {"threshold": 1.0, "keep": "left"}):
        with pytest.raises(InputError) as exc:
            select_by_score(s, **kwargs)  # type: ignore[arg-type]
        _one_line_input_error(exc)
    with pytest.raises(InputError, match="NaN"):
        select_by_score(np.array([1.0, np.nan]), threshold=1.0)


def test_invert_selection() -> None:
    np.testing.assert_array_equal(invert_selection([3, 0, 4], 6), [1, 2, 5])
    assert invert_selection(np.arange(5), 5).size == 0
    with pytest.raises(InputError, match="out of range for 5 particles"):
        invert_selection([5], 5)


# ----------------------------------------------------------------- index files
def test_read_index_text_formats(tmp_path: Path) -> None:
    lines = tmp_path / "a.txt"
    lines.write_text("5\n0\n\n17\n")
    np.testing.assert_array_equal(read_index_file(lines, n=20), [5, 0, 17])
    csv = tmp_path / "a.csv"
    csv.write_text("1, 2,3\n4.0,9\n")
    out = read_index_file(csv)
    np.testing.assert_array_equal(out, [1, 2, 3, 4, 9])
    assert out.dtype == np.int64


def test_read_index_npy_and_mask(tmp_path: Path) -> None:
    p = tmp_path / "a.npy"
    np.save(p, np.array([4, 2, 7], dtype=np.int32))
    np.testing.assert_array_equal(read_index_file(p, n=8), [4, 2, 7])
    mask = np.zeros(8, bool)
    mask[[1, 6]] = True
    np.save(p, mask)
    np.testing.assert_array_equal(read_index_file(p, n=8), [1, 6])


def test_read_index_pkl_as_written_by_cryodrgn(tmp_path: Path) -> None:
    p = tmp_path / "ind.pkl"
    with open(p, "wb") as fh:
        pickle.dump(np.array([3, 1, 2]), fh)
    np.testing.assert_array_equal(read_index_file(p, n=4), [3, 1, 2])


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.txt", "1\n2\n99\n", "out of range for 10 particles"),
        ("a.txt", "1\n-2\n", "negative"),
        ("a.txt", "1\n2.5\n", "not an integer"),
        ("a.txt", "1\nabc\n", "not an integer"),
        ("a.txt", "1\n1\n", "repeated"),
        ("a.json", "[1, 2]", "unknown type"),
        ("a.npy", np.array([0.5, 1.0]), "whole numbers"),
        ("a.npy", np.array([[1, 2]]), "1-D"),
        ("a.npy", np.array([0, 10]), "out of range"),
        ("a.npy", b"not numpy", "not a plain numeric .npy"),
        ("a.npy", np.array([1, None], dtype=object), "not a plain numeric .npy"),
        ("a.pkl", np.array([1.5, 2.0]), "1-D integer array"),
        ("a.pkl", np.array([0, 10]), "out of range"),
    ],
)
def test_bad_index_file_one_line_error(tmp_path: Path, name: str, content: object, match: str) -> None:
    p = tmp_path / name
    if isinstance(content, str):
        p.write_text(content)
    elif isinstance(content, bytes):
        p.write_bytes(content)
    elif name.endswith(".npy"):
        np.save(p, content)
    else:
        p.write_bytes(pickle.dumps(content, protocol=4))
    with pytest.raises(InputError, match=match) as exc:
        read_index_file(p, n=10)
    _one_line_input_error(exc, p)


def test_missing_index_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_index_file(tmp_path / "nope.txt")


def test_index_pkl_refuses_code(tmp_path: Path) -> None:
    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps(pd.Series([1, 2])))
    with pytest.raises(InputError, match="refusing to load"):
        read_index_file(p)


# ---------------------------------------------------------------------- export
@pytest.fixture
def star_set(fixtures_dir: Path) -> ParticleSet:
    return ParticleSet.from_file(fixtures_dir / STAR_6OPTICS)


def test_export_star_keeps_columns_and_optics(star_set: ParticleSet, fixtures_dir: Path, tmp_path: Path) -> None:
    assert star_set.n == 139
    orig = starfile.read(fixtures_dir / STAR_6OPTICS, always_dict=True)
    idx = np.array([0, 5, 17, 40, 100, 138])
    out = export_selection(star_set, idx, tmp_path / "sub.star")
    assert out == tmp_path / "sub.star"
    sub = starfile.read(out, always_dict=True)
    parts, o_parts = sub["particles"], orig["particles"]
    assert set(o_parts.columns) <= set(parts.columns)
    expect = o_parts.iloc[idx].reset_index(drop=True)
    cols = [c for c in o_parts.columns if c != "rlnImageName"]
    pd.testing.assert_frame_equal(parts[cols], expect[cols], check_dtype=False)
    # image names are rewritten (relative to the current folder, or absolute: these stacks lie outside it)
    # but name the same frames of the same stacks
    for new_name, old_name in zip(parts["rlnImageName"], expect["rlnImageName"]):
        (nf, npath), (of, opath) = new_name.split("@"), old_name.split("@")
        assert int(nf) == int(of)
        assert (out.parent / npath).resolve() == (fixtures_dir / opath).resolve()
    o_optics = orig["optics"].set_index("rlnOpticsGroup")
    groups = sorted(set(expect["rlnOpticsGroup"]))
    assert sorted(sub["optics"]["rlnOpticsGroup"]) == groups
    assert set(o_optics.columns) <= set(sub["optics"].columns) - {"rlnOpticsGroup"}
    got = sub["optics"].set_index("rlnOpticsGroup").loc[groups, list(o_optics.columns)]
    pd.testing.assert_frame_equal(got, o_optics.loc[groups], check_dtype=False)


def test_export_star_all_groups(star_set: ParticleSet, fixtures_dir: Path, tmp_path: Path) -> None:
    out = export_selection(star_set, invert_selection([3], star_set.n), tmp_path / "all.star")
    sub = starfile.read(out, always_dict=True)
    orig = starfile.read(fixtures_dir / STAR_6OPTICS, always_dict=True)
    assert len(sub["particles"]) == 138 and len(sub["optics"]) == 6
    pd.testing.assert_frame_equal(sub["optics"][list(orig["optics"].columns)], orig["optics"], check_dtype=False)


def test_export_cs_rows(fixtures_dir: Path, tmp_path: Path) -> None:
    src = fixtures_dir / CS_FILE
    ps = ParticleSet.from_file(src)
    arr = np.load(src, allow_pickle=False)
    idx = np.array([2, 0, 11, 500, ps.n - 1])
    out = export_selection(ps, idx, tmp_path / "sub.cs")
    got = np.load(out, allow_pickle=False)
    assert got.dtype == arr.dtype and got.shape == (idx.size,)
    for name in arr.dtype.names:
        np.testing.assert_array_equal(got[name], arr[name][idx], err_msg=name)


def test_export_cs_needs_cs_source(star_set: ParticleSet, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not read from a cryoSPARC .cs file; export to .star instead") as exc:
        export_selection(star_set, [0, 1], tmp_path / "x.cs")
    _one_line_input_error(exc)
    assert not (tmp_path / "x.cs").exists()


def _array_set(n: int = 30) -> ParticleSet:
    return ParticleSet.from_arrays(None, n=n)


@pytest.mark.parametrize("suffix", [".pkl", ".txt", ".npy"])
def test_index_export_round_trip(tmp_path: Path, suffix: str) -> None:
    ps = _array_set()
    idx = np.array([29, 0, 7, 13])
    out = export_selection(ps, idx, tmp_path / f"ind{suffix}")
    back = read_index_file(out, n=ps.n)
    np.testing.assert_array_equal(back, idx)
    assert back.dtype == np.int64


def test_index_pkl_is_plain_int_ndarray(tmp_path: Path) -> None:
    idx = np.array([4, 1, 9])
    out = export_selection(_array_set(), idx, tmp_path / "ind.pkl")
    raw = safe_load_pickle(out)
    assert type(raw) is np.ndarray and raw.dtype == np.int64 and raw.ndim == 1
    np.testing.assert_array_equal(raw, idx)
    np.testing.assert_array_equal(read_index_pkl(out), idx)
    assert out.read_bytes()[:2] == b"\x80\x04"  # pickle protocol 4


def test_txt_export_is_one_index_per_line(tmp_path: Path) -> None:
    out = export_selection(_array_set(), [3, 1], tmp_path / "ind.txt")
    assert out.read_text() == "3\n1\n"
    npy = export_selection(_array_set(), [3, 1], tmp_path / "ind.npy")
    assert np.load(npy, allow_pickle=False).dtype == np.int64


def test_export_refuses_existing_without_force(tmp_path: Path) -> None:
    ps = _array_set()
    out = tmp_path / "ind.txt"
    out.write_text("keep me\n")
    with pytest.raises(OutputExistsError):
        export_selection(ps, [1, 2], out)
    assert out.read_text() == "keep me\n"
    export_selection(ps, [1, 2], out, force=True)
    assert out.read_text() == "1\n2\n"
    assert [p.name for p in tmp_path.iterdir()] == ["ind.txt"]


def test_export_star_refuses_existing(star_set: ParticleSet, tmp_path: Path) -> None:
    out = tmp_path / "sub.star"
    out.write_text("old")
    with pytest.raises(OutputExistsError):
        export_selection(star_set, [0], out)
    assert out.read_text() == "old"


@pytest.mark.parametrize(
    ("name", "indices", "match"),
    [
        ("x.mrc", [0], "unknown type"),
        ("x.txt", [], "empty"),
        ("x.txt", [30], "out of range"),
        ("x.txt", [1, 1], "repeated"),
        ("x.txt", [0.5], "whole numbers"),
    ],
)
def test_export_bad_selection(tmp_path: Path, name: str, indices: list, match: str) -> None:
    with pytest.raises(InputError, match=match) as exc:
        export_selection(_array_set(), indices, tmp_path / name)
    _one_line_input_error(exc)
    assert not (tmp_path / name).exists()


# ------------------------------------------------ image paths for RELION's project folder
def _relion_project(root: Path) -> Path:
    """A RELION-style project: two stacks in Extract/job003/Movies and a STAR naming them from the project folder."""
    import mrcfile

    movies = root / "Extract" / "job003" / "Movies"
    movies.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(2):
        with mrcfile.new(movies / f"mic_{k}.mrcs") as m:
            m.set_data(rng.standard_normal((4, 8, 8)).astype(np.float32))
            m.voxel_size = 2.0
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"], "rlnImagePixelSize": [2.0],
                           "rlnImageSize": [8], "rlnImageDimensionality": [2], "rlnVoltage": [300.0],
                           "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1]})
    names = [f"{f + 1:06d}@Extract/job003/Movies/mic_{k}.mrcs" for k in range(2) for f in range(4)]
    parts = pd.DataFrame({"rlnImageName": names, "rlnOpticsGroup": [1] * 8,
                          "rlnDefocusU": [15000.0] * 8, "rlnDefocusV": [14000.0] * 8, "rlnDefocusAngle": [10.0] * 8})
    starfile.write({"optics": optics, "particles": parts}, movies.parent / "particles.star")
    return movies.parent / "particles.star"


def test_star_subset_in_a_subfolder_names_stacks_from_the_project_folder(tmp_path: Path, monkeypatch) -> None:
    project = tmp_path / "project"
    star = _relion_project(project)
    monkeypatch.chdir(project)  # RELION and the user work in the project folder
    particles = ParticleSet.from_file(star.relative_to(project), datadir=Path("."))
    idx = np.array([6, 1, 4])
    out = export_selection(particles, idx, Path("Select") / "job010" / "subset.star")
    names = starfile.read(project / "Select" / "job010" / "subset.star", always_dict=True)["particles"]["rlnImageName"]
    assert list(names) == ["000003@Extract/job003/Movies/mic_1.mrcs", "000002@Extract/job003/Movies/mic_0.mrcs",
                           "000001@Extract/job003/Movies/mic_1.mrcs"]
    for name in names:  # resolved as RELION resolves them: from the folder it runs in
        assert (project / name.split("@")[1]).is_file()
    back = ParticleSet.from_file(out, datadir=project)
    np.testing.assert_array_equal(back.images.read(np.arange(3)), particles.images.read(idx))


def test_star_subset_names_outside_stacks_absolutely(tmp_path: Path, monkeypatch) -> None:
    project = tmp_path / "project"
    star = _relion_project(project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the stacks are not below the current folder
    particles = ParticleSet.from_file(star, datadir=project)
    out = export_selection(particles, [0, 5], elsewhere / "sub" / "subset.star")
    names = list(starfile.read(out, always_dict=True)["particles"]["rlnImageName"])
    stacks = [Path(n.split("@")[1]) for n in names]
    assert all(p.is_absolute() and p.is_file() for p in stacks)
    assert stacks == [(project / "Extract/job003/Movies/mic_0.mrcs").resolve(),
                      (project / "Extract/job003/Movies/mic_1.mrcs").resolve()]
    # an explicit project folder makes them project-relative again
    rel = project_image_names(particles[np.array([0, 5])].images, project)
    assert rel == ["000001@Extract/job003/Movies/mic_0.mrcs", "000002@Extract/job003/Movies/mic_1.mrcs"]


def test_select_help_says_how_image_paths_are_written() -> None:
    import argparse

    from cryoscape.cli import select as select_cli

    parser = select_cli.add_parser(argparse.ArgumentParser(prog="cryoscape").add_subparsers())
    text = " ".join(parser.format_help().split())
    assert "a stack below the project folder (--project, default: the current folder) is written relative to it" in text
    assert "any other stack by its absolute path" in text
