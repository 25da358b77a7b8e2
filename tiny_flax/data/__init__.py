"""Everything that touches TensorFlow lives in this package."""

import os

# Before TensorFlow loads: its C++ INFO lines drown the training log.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
