"""cryoSPARC .cs reading and writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cryoscape.errors import InputError
from cryoscape.io.cryosparc import cs_blob_paths, cs_ctf, cs_has_poses, cs_poses, matrices_to_cs_pose, read_cs, write_cs


def test_read_refinement(fixtures_dir: Path) -> None:
    arr = read_cs(fixtures_dir / "cryosparc_P12_J24_001_particles.cs")
    assert len(arr) == 2019 and cs_has_poses(arr)
    rot, shift = cs_poses(arr)
    assert rot.shape == (2019, 3, 3) and shift.shape == (2019, 2)
    # cryoSPARC does not wrap rotation angles to [0, π], so compare the rotations, not the vectors
    again = Rotation.from_rotvec(matrices_to_cs_pose(rot)).as_matrix().transpose(0, 2, 1)
    np.testing.assert_allclose(again, rot, atol=1e-9)
    ctf = cs_ctf(arr)
    np.testing.assert_allclose(ctf["defocus_angle_deg"], np.degrees(arr["ctf/df_angle_rad"].astype(float)))


def test_two_d_only_and_import_marker(fixtures_dir: Path) -> None:
    arr = read_cs(fixtures_dir / "cryosparc_J2_particles_exported.cs")
    assert not cs_has_poses(arr)
    assert all(not p.startswith(">") for p in cs_blob_paths(arr))


def test_write_subset_round_trip(tmp_path: Path, fixtures_dir: Path) -> None:
    arr = read_cs(fixtures_dir / "cryosparc_P12_J24_001_particles.cs")
    sel = arr[[5, 2, 100]]
    out = write_cs(tmp_path / "sub.cs", sel)
    back = read_cs(out)
    assert back.dtype == arr.dtype
    np.testing.assert_array_equal(back, sel)


def test_pose_convention() -> None:
    v = np.array([[0.3, -0.2, 1.1]])
    arr = np.zeros(1, dtype=[("alignments3D/pose", "<f4", (3,)), ("alignments3D/shift", "<f4", (2,))])
    arr["alignments3D/pose"] = v
    rot, _ = cs_poses(arr)
    np.testing.assert_allclose(rot[0], Rotation.from_rotvec(v[0]).as_matrix().T, atol=1e-6)


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_cs(tmp_path / "none.cs")
    p = tmp_path / "plain.cs"
    with open(p, "wb") as fh:
        np.save(fh, np.zeros(3))
    with pytest.raises(InputError, match="structured array"):
        read_cs(p)
