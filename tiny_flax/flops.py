"""Model FLOPs and utilisation (MFU), counted from a traced program.

FLOPs are read off the program's dots and convolutions rather than from
XLA's cost analysis, which GPU backends leave empty or count without cuDNN's
convolutions. A model is counted with XLA's ops (layers.Kernels()): the CPU
forms skip multiplies by padding, and the count would depend on the backend.
"""

import functools
import math

import jax
import jax.extend
import jax.numpy as jnp

from tiny_flax.models import layers


def matmul_flops(jaxpr):
  """FLOPs (2 per multiply-add) of the dots and convolutions in `jaxpr`."""
  flops = 0
  for eqn in jaxpr.eqns:
    outputs = math.prod(eqn.outvars[0].aval.shape)
    if eqn.primitive.name == 'dot_general':
      (contracting, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      flops += 2 * outputs * math.prod(lhs[d] for d in contracting)
    elif eqn.primitive.name == 'conv_general_dilated':
      kernel = eqn.invars[1].aval.shape
      rhs_spec = eqn.params['dimension_numbers'].rhs_spec  # (out, in, *window)
      flops += 2 * outputs * math.prod(kernel[d] for d in rhs_spec[1:])
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          sub = sub.jaxpr
        if isinstance(sub, jax.extend.core.Jaxpr):
          flops += matmul_flops(sub)
  return flops


def forward_flops(module, variables, image_shape):
  """Dot and convolution FLOPs of one image's forward pass, as published."""
  apply = functools.partial(module.clone(kernels=layers.Kernels()).apply,
                            train=False)
  jaxpr = jax.make_jaxpr(apply)(variables, jnp.zeros((1,) + image_shape))
  return matmul_flops(jaxpr.jaxpr)


def utilisation(forward_flops_per_image, images_per_second, peak):
  """Training MFU: a step costs about 3 forward passes (forward, two grads)."""
  return 3 * forward_flops_per_image * images_per_second / peak
