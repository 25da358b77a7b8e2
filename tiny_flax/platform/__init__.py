"""Platform choices, made once at the start of a run and passed down.

- backend.py: what differs between XLA backends (`backend.resolve` -> a
  `Platform`: kernels, compiler options, steps per dispatch, resident input);
- launch.py: the CPU entry points' restart with malloc tunables, run before
  anything imports JAX (so this package imports nothing on its own);
- cpu_kernels.py: the convolution and max-pool forms XLA:CPU runs faster.

docs/performance.md has the measurements behind each choice.
"""
