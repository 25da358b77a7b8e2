"""Everything that touches TensorFlow lives in this package."""
