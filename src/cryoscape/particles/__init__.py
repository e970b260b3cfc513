"""Particle sets: lazy image stacks with per-particle pose, shift, CTF, optics and half-set."""

from cryoscape.particles.image_source import ArrayImageSource, ImageSource, StackImageSource
from cryoscape.particles.particle_set import CTF_FIELDS, ParticleSet

__all__ = ["ParticleSet", "CTF_FIELDS", "ImageSource", "StackImageSource", "ArrayImageSource"]
