"""K class maps as a representation: slices against the projector, mixtures, config round trip."""

from __future__ import annotations

import pytest
import torch
from scipy.spatial.transform import Rotation

from cryoscape.imaging import FourierProjector
from cryoscape.models import build_representation
from cryoscape.models.discrete import DiscreteVolumes
from cryoscape.models.representation import Representation


def _maps(K: int = 3, D: int = 16) -> torch.Tensor:
    return torch.randn(K, D, D, D, generator=torch.Generator().manual_seed(0))


def test_class_slices_are_each_maps_slices_and_z_mixes_them() -> None:
    vols = _maps()
    model = DiscreteVolumes(vols, apix=2.0)
    assert isinstance(model, Representation) and model.latent_dim == 3 and model.box == 16
    R = torch.tensor(Rotation.random(4, random_state=1).as_matrix(), dtype=torch.float32)
    S = model.class_slices(R)
    for k in range(3):
        assert torch.allclose(S[:, k], FourierProjector(vols[k]).slice_half(R), atol=1e-4)
    z = torch.tensor([[0.0, 1.0, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    mixed = model.slice_half(R, z)
    assert torch.allclose(mixed[1], 0.2 * S[1, 0] + 0.3 * S[1, 1] + 0.5 * S[1, 2], atol=1e-4)
    assert torch.allclose(model.volumes(z[:1])[0], vols[1])
    assert torch.allclose(model.latent_jacobian(R, z)[:, :, 2], S[:, 2])
    assert list(model.parameters()) == [] and model.reference_slices(R) is None


def test_config_and_state_rebuild_the_same_maps() -> None:
    model = DiscreteVolumes(_maps(2, 8), apix=1.5)
    again = build_representation(model.config())
    again.load_state_dict(model.state_dict())
    assert torch.equal(again.class_volumes, model.class_volumes) and again.apix == 1.5
    with pytest.raises(ValueError, match="volumes"):
        again.set_volumes(torch.zeros(3, 8, 8, 8))
    with pytest.raises(ValueError, match="K, D, D, D"):
        DiscreteVolumes(torch.zeros(2, 8, 8, 9), apix=1.0)
