"""Makes TensorFlow and TFDS absent in every Python process started with this
folder on PYTHONPATH, as on a host where they are not installed
(tests/test_without_tensorflow.py). A restarted process keeps the block.

A None in sys.modules makes `import` raise ImportError and
importlib.util.find_spec answer None, as for a package that is not there.
"""

import sys

for _name in ('tensorflow', 'tensorflow_datasets'):
  sys.modules[_name] = None
