"""Structures, Gaussian-atom parameters and trajectory superposition."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from cryoscape.errors import InputError
from cryoscape.simulate.structures import (
    ADK_CORE_RESIDUES,
    ADK_LID_RESIDUES,
    AtomicStructure,
    atom_sigmas_A,
    element_amplitudes,
    load_structure,
    parse_residue_ranges,
    residue_mask,
)
from cryoscape.simulate.trajectory import (
    centre_frames,
    kabsch_rotation,
    prepare_trajectory,
    rmsd,
)

PDB_TEXT = """\
MODEL        1
ATOM      1  N   ALA A   1       1.000   2.000   3.000  1.00 20.00           N
ATOM      2  CA  ALA A   1       2.400   2.000   3.000  1.00 20.00           C
ATOM      3  C   ALA A   1       3.000   3.400   3.000  1.00 20.00           C
ATOM      4  O   ALA A   1       2.300   4.400   3.000  1.00 20.00           O
ATOM      5  H   ALA A   1       0.500   1.500   3.000  1.00 20.00           H
ATOM      6  SG  CYS A   2       4.300   3.500   3.200  1.00 20.00           S
HETATM    7  O   HOH A 101      10.000  10.000  10.000  1.00 20.00           O
ENDMDL
MODEL        2
ATOM      1  N   ALA A   1       1.100   2.000   3.000  1.00 20.00           N
ATOM      2  CA  ALA A   1       2.500   2.000   3.000  1.00 20.00           C
ATOM      3  C   ALA A   1       3.100   3.400   3.000  1.00 20.00           C
ATOM      4  O   ALA A   1       2.400   4.400   3.000  1.00 20.00           O
ATOM      5  H   ALA A   1       0.600   1.500   3.000  1.00 20.00           H
ATOM      6  SG  CYS A   2       4.400   3.500   3.200  1.00 20.00           S
HETATM    7  O   HOH A 101      10.000  10.000  10.000  1.00 20.00           O
ENDMDL
END
"""


def test_adk_builtin_loads() -> None:
    st = load_structure("adk")
    assert st.frames_A.shape == (98, 1656, 3)
    assert len(st.ca_indices()) == 214
    assert st.default_align_residues == ADK_CORE_RESIDUES
    amps = st.amplitudes()
    assert set(np.unique(amps)) <= {6.0, 7.0, 8.0, 16.0}


def test_pdb_via_gemmi_drops_hydrogens_and_waters(tmp_path) -> None:
    path = tmp_path / "tiny.pdb"
    path.write_text(PDB_TEXT)
    st = load_structure(path)
    assert st.frames_A.shape == (2, 5, 3)  # two models; H and water removed
    np.testing.assert_allclose(st.frames_A[1, 0], [1.1, 2.0, 3.0], atol=1e-5)
    np.testing.assert_array_equal(element_amplitudes(st.elements), [7, 6, 6, 8, 16])
    assert list(st.ca_indices()) == [1]


def test_unknown_inputs_raise(tmp_path) -> None:
    with pytest.raises(InputError):
        load_structure(tmp_path / "missing.pdb")
    bad = tmp_path / "x.txt"
    bad.write_text("hello")
    with pytest.raises(InputError):
        load_structure(bad)
    with pytest.raises(InputError):
        element_amplitudes(["C", "Qq"])
    with pytest.raises(InputError):
        parse_residue_ranges("1-x")


def test_sigma_floor_is_one_pixel() -> None:
    np.testing.assert_allclose(atom_sigmas_A(3, apix=1.5), 1.5)
    np.testing.assert_allclose(atom_sigmas_A(3, apix=0.4), 0.6)
    np.testing.assert_allclose(atom_sigmas_A(3, apix=1.5, min_sigma_px=2.0), 3.0)


def test_residue_ranges() -> None:
    assert parse_residue_ranges("1-29, 60-121,160-214") == ADK_CORE_RESIDUES
    assert parse_residue_ranges("5") == ((5, 5),)
    assert parse_residue_ranges("all") is None
    np.testing.assert_array_equal(residue_mask(np.array([1, 30, 60, 200]), ADK_CORE_RESIDUES), [1, 0, 1, 1])


def test_kabsch_recovers_rigid_motion() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 3)) * 10
    rot = Rotation.random(random_state=3).as_matrix()
    y = x @ rot.T + np.array([3.0, -2.0, 7.0])
    r = kabsch_rotation(x, y)
    np.testing.assert_allclose(r, rot, atol=1e-10)
    assert np.linalg.det(kabsch_rotation(x, -y)) == pytest.approx(1.0)


def test_superposition_removes_rigid_motion_but_keeps_domain_motion() -> None:
    """Synthetic trajectory: frame 0 of AdK, LID displaced, then tumbling + drift."""
    st = load_structure("adk")
    rng = np.random.default_rng(0)
    lid = residue_mask(st.resid, ADK_LID_RESIDUES)
    base = st.frames_A[0].astype(np.float64)
    frames = []
    for f in range(5):
        x = base.copy()
        x[lid] += f * np.array([1.0, 0.5, 0.0])
        rot = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
        frames.append(x @ rot.T + rng.normal(size=3) * 20)
    moved = AtomicStructure(np.stack(frames), st.elements, st.resid, st.atom_names, "syn", "syn",
                            default_align_residues=ADK_CORE_RESIDUES)
    tr = prepare_trajectory(moved)
    core_ca = tr.align_mask
    assert rmsd(tr.frames_A, tr.frames_A[0], core_ca).max() < 1e-3
    lid_shift = np.linalg.norm(tr.frames_A[4][lid] - tr.frames_A[0][lid], axis=-1)
    np.testing.assert_allclose(lid_shift, np.hypot(4.0, 2.0), atol=1e-3)
    # one common translation: density centre over all frames at the origin
    w = moved.amplitudes() / moved.amplitudes().sum()
    np.testing.assert_allclose(np.einsum("a,fak->k", w, tr.frames_A.astype(np.float64)) / 5, 0, atol=1e-4)


def test_adk_core_alignment_is_optimal_and_lid_moves() -> None:
    st = load_structure("adk")
    tr = prepare_trajectory(st)
    assert tr.align_mask.sum() == 29 + 62 + 55  # C-alpha atoms of the CORE
    ca = np.zeros(st.n_atoms, bool)
    ca[st.ca_indices()] = True
    core_rmsd = rmsd(tr.frames_A, tr.frames_A[0], tr.align_mask)
    lid_rmsd = rmsd(tr.frames_A, tr.frames_A[0], ca & residue_mask(st.resid, ADK_LID_RESIDUES))
    raw_core = rmsd(st.frames_A, st.frames_A[0], tr.align_mask)
    # the CORE itself differs by ~2 Å between 1AKE and 4AKE; superposition brings it
    # down to that optimum while the LID moves by > 10 Å in the same fixed frame.
    assert core_rmsd.max() < 2.1 and core_rmsd.max() < raw_core.max()
    assert lid_rmsd[-1] > 10.0
    last = st.frames_A[-1][tr.align_mask]
    first = st.frames_A[0][tr.align_mask]
    _, best = Rotation.align_vectors(first - first.mean(0), last - last.mean(0))
    best_rmsd = best / np.sqrt(len(first))  # align_vectors returns the root of the summed squares
    assert core_rmsd[-1] == pytest.approx(best_rmsd, rel=1e-3)
    # all atoms within a 40 Å radius of the box centre
    assert np.linalg.norm(tr.frames_A, axis=-1).max() < 40


def test_centre_first_mode() -> None:
    x = np.zeros((2, 3, 3), np.float32)
    x[1] += 2
    out, c = centre_frames(x, mode="first")
    np.testing.assert_allclose(c, 0)
    out, c = centre_frames(x, mode="mean")
    np.testing.assert_allclose(c, 1)
    with pytest.raises(InputError):
        centre_frames(x, mode="middle")


def test_generic_npz_trajectory(tmp_path) -> None:
    st = load_structure("adk")
    np.savez(tmp_path / "traj.npz", heavy_xyz=st.frames_A[:4], heavy_element=st.elements,
             heavy_resid=st.resid, heavy_name=st.atom_names)
    gen = load_structure(tmp_path / "traj.npz")
    assert gen.default_align_residues is None and gen.n_frames == 4
    assert prepare_trajectory(gen).align_description == "all C-alpha atoms"
    core = prepare_trajectory(gen, align_residues="1-29,60-121,160-214")
    full = prepare_trajectory(st).frames_A[:4]  # same superposition, other common translation
    np.testing.assert_allclose(core.frames_A - core.frames_A[0].mean(0), full - full[0].mean(0), atol=1e-3)
    np.savez(tmp_path / "bare.npz", xyz=st.frames_A[:2, :50])
    bare = load_structure(tmp_path / "bare.npz")
    assert set(bare.elements) == {"C"}
    assert prepare_trajectory(bare).align_description == "all atoms"
    with pytest.raises(InputError):
        prepare_trajectory(bare, align_residues="1-29")
