"""The top-level names a notebook user reaches for resolve to the real objects."""

from __future__ import annotations

import cryoscape


def test_top_level_names_resolve():
    for name in cryoscape.__all__:
        assert getattr(cryoscape, name) is not None, name
    from cryoscape.particles.particle_set import ParticleSet
    from cryoscape.reconstruct import reconstruct

    assert cryoscape.ParticleSet is ParticleSet
    import cryoscape.reconstruct as rec_pkg

    assert cryoscape.reconstruct is rec_pkg and rec_pkg.reconstruct is reconstruct
