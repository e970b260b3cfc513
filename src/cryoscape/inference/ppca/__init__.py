"""Probabilistic PCA by EM over closed-form posteriors, one module per step.

The model, its Fourier conventions and every update are described in
:mod:`cryoscape.inference.ppca_em`, which re-exports the public names.

* :mod:`.estep`: frequency weights, per-image statistics, posteriors, contrasts,
  expected residual and log-likelihood.
* :mod:`.mstep`: :class:`~.mstep.MStepAccumulator`, the streaming M-step sums and
  their per-voxel solve.
* :mod:`.halves`: half-set bookkeeping (which model serves which image, which sums
  an image feeds, the half-set FSC filter of the M-step).
* :mod:`.start`: input checks, per-batch poses and CTF, the initial model.
* :mod:`.result`: :class:`~.result.PPCAResult`, the constraints on the components
  and the final orthonormal frame.
* :mod:`.checkpoint`: the EM state as tensors and back (resuming a fit).
* :mod:`.loop`: :func:`~.loop.fit_ppca`, the EM iterations.

The modules import one another in that order only; none imports a concrete
representation class (the representation to fit is passed in and must offer
:class:`~cryoscape.models.representation.LinearInLatent`).
"""
