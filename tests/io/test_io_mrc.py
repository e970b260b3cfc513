"""MRC reading and writing: voxel size, atomic output, memory-mapped stacks, odd headers."""

from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from cryoscape.errors import InputError, OutputExistsError
from cryoscape.io.mrc import open_stack, read_mrc, read_stack_header, write_mrc


def test_volume_round_trip_keeps_voxel_size(tmp_path: Path) -> None:
    vol = np.random.default_rng(0).normal(size=(8, 10, 12)).astype(np.float64)
    out = write_mrc(tmp_path / "v.mrc", vol, apix=1.7)
    data, apix = read_mrc(out)
    assert data.dtype == np.float32 and data.shape == (8, 10, 12)
    np.testing.assert_allclose(data, vol.astype(np.float32))
    assert apix == pytest.approx(1.7, abs=1e-5)
    with mrcfile.open(out) as m:
        assert float(m.header.origin.x) == 0.0
        assert int(m.header.ispg) == 1


def test_stack_written_as_image_stack_and_memory_mapped(tmp_path: Path) -> None:
    imgs = np.arange(5 * 4 * 4, dtype=np.float32).reshape(5, 4, 4)
    p = write_mrc(tmp_path / "s.mrcs", imgs, apix=2.0)
    with mrcfile.open(p) as m:
        assert m.is_image_stack()
    with open_stack(p) as st:
        assert len(st) == 5 and st.shape == (5, 4, 4) and st.apix == pytest.approx(2.0)
        assert isinstance(st.data, np.memmap)
        np.testing.assert_array_equal(st[[3, 1]], imgs[[3, 1]])
    h = read_stack_header(p)
    assert (h.n, h.ny, h.nx) == (5, 4, 4)


def test_existing_output_refused_without_force(tmp_path: Path) -> None:
    p = tmp_path / "v.mrc"
    write_mrc(p, np.zeros((4, 4, 4)), 1.0)
    with pytest.raises(OutputExistsError, match="--force"):
        write_mrc(p, np.ones((4, 4, 4)), 1.0)
    write_mrc(p, np.ones((4, 4, 4)), 1.0, force=True)
    assert read_mrc(p)[0].max() == 1.0
    assert [x.name for x in tmp_path.iterdir()] == ["v.mrc"]  # no temporary files left


def test_bad_pixel_size_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="pixel size"):
        write_mrc(tmp_path / "v.mrc", np.zeros((4, 4, 4)), 0.0)


def test_missing_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_mrc(tmp_path / "nope.mrc")
    with pytest.raises(InputError, match="not found"):
        open_stack(tmp_path / "nope.mrcs")


def test_non_standard_header_read_permissively_with_warning(tmp_path: Path) -> None:
    p = write_mrc(tmp_path / "odd.mrcs", np.ones((3, 4, 4)), 1.5)
    raw = bytearray(p.read_bytes())
    raw[208:212] = b"\x00\x00\x00\x00"  # the "MAP " identifier
    p.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="non-standard MRC header"):
        data, apix = read_mrc(p)
    assert data.shape == (3, 4, 4) and apix == pytest.approx(1.5)
    with open_stack(p) as st:
        assert st[0].sum() == 16


def test_fixture_stack_with_odd_header(fixtures_dir: Path) -> None:
    with open_stack(fixtures_dir / "relion31.mrcs") as st:
        assert st.shape == (5, 256, 256)
        assert np.isfinite(st[4]).all()


def test_read_frames_matches_memory_map(tmp_path: Path, fixtures_dir: Path) -> None:
    imgs = np.random.default_rng(1).normal(size=(9, 6, 6)).astype(np.float32)
    p = write_mrc(tmp_path / "s.mrcs", imgs, apix=1.0)
    frames = [7, 2, 3, 4, 0, 3, 8]  # out of order, a run, a repeat
    with open_stack(p) as st:
        np.testing.assert_array_equal(st.read_frames(frames), imgs[frames])
        np.testing.assert_array_equal(st.read_frames(range(2, 9)), imgs[2:])  # one run read in place
        np.testing.assert_array_equal(st.read_frames([5, 6, 1, 2]), imgs[[5, 6, 1, 2]])  # two runs, in place
        assert st.read_frames([]).shape == (0, 6, 6)
    with open_stack(fixtures_dir / "relion31.mrcs") as st:  # a stack written by RELION
        np.testing.assert_array_equal(st.read_frames([4, 0, 1]), st[[4, 0, 1]])


def test_read_frames_other_modes_extended_header_and_byte_order(tmp_path: Path) -> None:
    imgs = np.arange(4 * 3 * 3).reshape(4, 3, 3)
    for dtype in (np.dtype("<f2"), np.dtype(">f4"), np.dtype("<i2")):
        p = tmp_path / f"s_{dtype.str[1:]}.mrcs"
        with mrcfile.new(p) as m:
            m.set_extended_header(np.zeros(10, dtype=[("x", "<i4")]))
            m.set_data(imgs.astype(dtype))
            m.set_image_stack()
        with open_stack(p) as st:
            got = st.read_frames([3, 1, 2])
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, imgs[[3, 1, 2]].astype(np.float32))


def test_read_frames_on_truncated_stack_is_input_error(tmp_path: Path) -> None:
    p = write_mrc(tmp_path / "s.mrcs", np.ones((4, 8, 8)), apix=1.0)
    st = open_stack(p)
    try:
        with open(p, "r+b") as f:
            f.truncate(p.stat().st_size - 100)
        with pytest.raises(InputError, match="truncated"):
            st.read_frames([3])
    finally:
        st.close()
