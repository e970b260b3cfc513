"""The analysis of a run directory, for any method: one import path for the modules that do it.

- :mod:`cryoscape.analysis.latent_analysis`: :func:`analyse_latents` of an
  array ``[N, d]`` (embedding, clusters, density, landscape, PC points,
  outlier scores, truth statistics) and its result :class:`LatentAnalysis`;
- :mod:`cryoscape.analysis.run_analysis`: :func:`analyse_run` of a run
  directory (truth file, fit of every image to the consensus map, learning
  curves, volumes), with :func:`check_run_inputs` for the checks before work;
- :mod:`cryoscape.analysis.volumes`: :func:`volume_at` and
  :func:`generate_volumes` (the run's model, injected as ``volume_fn``, or
  local reconstructions);
- :mod:`cryoscape.analysis.learning_curves`: :func:`learning_curves` from ``metrics.json``;
- :mod:`cryoscape.analysis.analysis_files`: :func:`save_analysis` into
  ``run/analysis/`` and the saved clusters, embedding and scores read back
  while they match the latents;
- :mod:`cryoscape.analysis.run_selection`: :func:`selection_indices` by a
  :class:`SelectionCriterion`;
- :mod:`cryoscape.analysis.traversal`: :func:`traverse` along a
  density-weighted graph path, and :func:`save_traversal`.

The analysis never imports :mod:`cryoscape.methods`: a run's model volume
comes in as ``volume_fn(run, z)``, which callers above both (the command
line, the demo, the benchmark) take from
:func:`cryoscape.methods.registry.volume_function`.
"""

from __future__ import annotations

from cryoscape.analysis.analysis_files import (
    ANALYSIS_JSON,
    ARRAY_FILES,
    FIT_CORRELATION_FILE,
    VOLUMES_DIR,
    analysis_output_names,
    check_analysis_outputs,
    cluster_labels,
    read_saved_summary,
    run_embedding,
    run_outlier_scores,
    save_analysis,
)
from cryoscape.analysis.latent_analysis import (
    AnalysisSettings,
    LatentAnalysis,
    analyse_latents,
    embed_2d,
    latents_fingerprint,
)
from cryoscape.analysis.learning_curves import LEARNING_CURVE_WORDS, learning_curves
from cryoscape.analysis.progress import Progress
from cryoscape.analysis.run_analysis import RunInputs, analyse_run, check_run_inputs, read_truth_coordinate, truth_path
from cryoscape.analysis.run_selection import SelectionCriterion, selection_indices
from cryoscape.analysis.traversal import (
    Traversal,
    check_traversal_inputs,
    check_traversal_outputs,
    save_traversal,
    traversal_outputs,
    traverse,
)
from cryoscape.analysis.volumes import GeneratedVolume, VolumeFn, default_neighbours, generate_volumes, volume_at
from cryoscape.io.plain import write_json

__all__ = [
    "ANALYSIS_JSON", "ARRAY_FILES", "FIT_CORRELATION_FILE", "VOLUMES_DIR", "LEARNING_CURVE_WORDS",
    "Progress", "VolumeFn", "AnalysisSettings", "LatentAnalysis", "GeneratedVolume", "RunInputs",
    "SelectionCriterion", "Traversal",
    "analyse_latents", "embed_2d", "latents_fingerprint", "learning_curves",
    "analyse_run", "check_run_inputs", "truth_path", "read_truth_coordinate",
    "volume_at", "generate_volumes", "default_neighbours",
    "analysis_output_names", "check_analysis_outputs", "save_analysis", "read_saved_summary", "write_json",
    "cluster_labels", "run_embedding", "run_outlier_scores", "selection_indices",
    "traverse", "check_traversal_inputs", "traversal_outputs", "check_traversal_outputs", "save_traversal",
]
