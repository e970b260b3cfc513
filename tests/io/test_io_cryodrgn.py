"""cryoDRGN pickles: the restricted loader, golden files and round trips."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from cryoscape.errors import InputError
from cryoscape.io.cryodrgn import (
    ctf_array_to_fields,
    ctf_fields_to_array,
    read_ctf_pkl,
    read_pose_pkl,
    safe_load_pickle,
    write_ctf_pkl,
    write_pose_pkl,
)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - builds the malicious pickle
        return (os.system, (f"touch {self.marker}",))


class _EvalPayload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_Payload, _EvalPayload])
def test_malicious_pickle_refused_and_not_run(tmp_path: Path, payload: type) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "pose.pkl"
    with open(bad, "wb") as fh:
        pickle.dump((np.zeros((2, 3, 3)), payload(marker)), fh)
    with pytest.raises(InputError, match="refusing to load .*pose.pkl: the pickle references .*which is not plain numeric data"):
        read_pose_pkl(bad)
    assert not marker.exists()


def test_plain_containers_and_numbers_load(tmp_path: Path) -> None:
    p = tmp_path / "x.pkl"
    obj = {"a": [1, 2.5, (3, None)], "b": np.arange(4, dtype=np.int16), "c": np.float32(1.5)}
    for protocol in (2, 4, 5):
        p.write_bytes(pickle.dumps(obj, protocol=protocol))
        out = safe_load_pickle(p)
        assert out["a"] == [1, 2.5, (3, None)]
        np.testing.assert_array_equal(out["b"], obj["b"])
        assert out["c"] == np.float32(1.5)


def test_golden_pickles_load(fixtures_dir: Path) -> None:
    rot, trans = read_pose_pkl(fixtures_dir / "pose.star.pkl")
    assert rot.shape == (5, 3, 3) and trans.shape == (5, 2)
    assert read_ctf_pkl(fixtures_dir / "ctf2.pkl").shape == (2019, 9)
    rot, trans = read_pose_pkl(fixtures_dir / "hand_rot_trans.pkl")
    np.testing.assert_allclose(rot @ rot.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rot.shape), atol=1e-5)


def test_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    from scipy.spatial.transform import Rotation

    rot = Rotation.random(6, random_state=2).as_matrix()
    trans = rng.uniform(-0.1, 0.1, (6, 2))
    write_pose_pkl(tmp_path / "pose.pkl", rot, trans)
    r2, t2 = read_pose_pkl(tmp_path / "pose.pkl")
    np.testing.assert_allclose(r2, rot, atol=1e-6)
    np.testing.assert_allclose(t2, trans, atol=1e-7)
    ctf = np.column_stack([np.full(6, 64), np.full(6, 1.2), rng.uniform(1e4, 2e4, (6, 2)), rng.uniform(-90, 90, 6),
                           np.full(6, 300), np.full(6, 2.7), np.full(6, 0.1), np.zeros(6)])
    write_ctf_pkl(tmp_path / "ctf.pkl", ctf)
    back = read_ctf_pkl(tmp_path / "ctf.pkl")
    np.testing.assert_allclose(back, ctf, rtol=1e-6)
    fields = ctf_array_to_fields(back)
    np.testing.assert_allclose(ctf_fields_to_array(fields["box"], fields["apix"], fields), back)


def test_bad_shapes_and_missing(tmp_path: Path) -> None:
    p = tmp_path / "ctf.pkl"
    p.write_bytes(pickle.dumps(np.zeros((3, 4))))
    with pytest.raises(InputError, match=r"expected \(N,9\)"):
        read_ctf_pkl(p)
    with pytest.raises(InputError, match="not found"):
        read_pose_pkl(tmp_path / "missing.pkl")
