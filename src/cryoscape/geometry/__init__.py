"""Rotations, SO(3) grids, centred Fourier grids and shells, masks."""

from __future__ import annotations

from cryoscape.geometry.fourier import (
    fft_freqs,
    fftn_c,
    freq_grid_2d,
    freq_grid_3d,
    ifftn_c,
    irfftn_c,
    radial_shell_index,
    rfft_freqs,
    rfftn_c,
    shell_average,
    shell_sum,
)
from cryoscape.geometry.masks import circle_mask, radius_grid, soft_sphere_mask
from cryoscape.geometry.rotations import (
    axis_angle_to_matrix,
    cryosparc_pose_to_matrix,
    euler_relion_to_matrix,
    geodesic_distance_deg,
    matrix_to_axis_angle,
    matrix_to_cryosparc_pose,
    matrix_to_euler_relion,
    matrix_to_quaternion,
    quaternion_to_matrix,
    random_quaternions,
    random_rotations,
    rotation_angle_deg,
)
from cryoscape.geometry.so3_grid import grid_size, grid_spacing_deg, so3_grid, so3_grid_euler

__all__ = [
    "axis_angle_to_matrix",
    "circle_mask",
    "cryosparc_pose_to_matrix",
    "euler_relion_to_matrix",
    "fft_freqs",
    "fftn_c",
    "freq_grid_2d",
    "freq_grid_3d",
    "geodesic_distance_deg",
    "grid_size",
    "grid_spacing_deg",
    "ifftn_c",
    "irfftn_c",
    "matrix_to_axis_angle",
    "matrix_to_cryosparc_pose",
    "matrix_to_euler_relion",
    "matrix_to_quaternion",
    "quaternion_to_matrix",
    "radial_shell_index",
    "radius_grid",
    "random_quaternions",
    "random_rotations",
    "rfft_freqs",
    "rfftn_c",
    "rotation_angle_deg",
    "shell_average",
    "shell_sum",
    "so3_grid",
    "so3_grid_euler",
    "soft_sphere_mask",
]
