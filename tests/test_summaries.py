"""The TensorBoard side's own pieces."""

import numpy as np

from tiny_flax import summaries


def test_image_grid_tiles_and_rescales():
  images = np.stack([np.full((4, 6, 3), v, np.float32) for v in range(10)])
  images[:, 0, 0, 0] = -3.0  # each image spans [-3, v] before rescaling
  grid = summaries.image_grid(images, columns=4, rows=2)
  assert grid.shape == (2 * 4, 4 * 6, 3)
  assert grid.min() == 0.0 and grid.max() == 1.0
  # Image 7 sits in row 1, column 3, rescaled from [-3, 7] to [0, 1].
  np.testing.assert_allclose(grid[4:8, 18:24], (images[7] + 3) / 10)
  np.testing.assert_array_equal(grid[4:8, 12:18], (images[6] + 3) / 9)
