"""torchvision state dicts to Flax variables and back, and pretrained initialisation.

The Flax modules name their submodules after torchvision's keys with each
numeric index joined to its parent (`layer1.0.conv1` -> `layer1_0/conv1`), so
conversion is by name: kernels go from OIHW / (out, in) to HWIO / (in, out),
BatchNorm's weight, bias and running statistics to scale, bias, mean and var.
torch is only needed to read `.pth` files.
"""

import os
import pickle
import re

from absl import logging
import flax
import numpy as np

from tiny_flax import errors

# Layers whose input torchvision flattens from NCHW: (channels, height, width).
_FLATTENED_INPUTS = {'alexnet': {('classifier_1',): (256, 6, 6)}}
# The classifier layer, re-initialised when its class count differs.
HEADS = {'alexnet': ('classifier_6',)}
_DEFAULT_HEAD = ('fc',)


def _flax_path(torch_module):
  path = []
  for part in torch_module.split('.'):
    if part.isdigit() and path:
      path[-1] = f'{path[-1]}_{part}'
    else:
      path.append(part)
  return tuple(path)


def _to_numpy(value):
  if hasattr(value, 'detach'):
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def check_torchvision_file(path):
  """Refuses a `.pth` path that names no file, before a run prepares data."""
  if not os.path.isfile(path):
    raise errors.UserError(f'No torchvision checkpoint at {path}.')


def _read_state_dict(state_dict):
  if not isinstance(state_dict, str):
    return state_dict
  check_torchvision_file(state_dict)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise errors.UserError(
        f'Reading {state_dict} needs PyTorch: pip install torch.') from e
  try:
    loaded = torch.load(state_dict, map_location='cpu', weights_only=True)
  except (OSError, RuntimeError, ValueError, EOFError,
          pickle.UnpicklingError) as e:
    raise errors.UserError(
        f'Cannot read {state_dict} as a torchvision checkpoint '
        f'({type(e).__name__}: {str(e).splitlines()[0][:200]}).') from e
  if isinstance(loaded, dict) and 'state_dict' in loaded:
    loaded = loaded['state_dict']
  if not isinstance(loaded, dict):
    raise errors.UserError(
        f'{state_dict} holds a {type(loaded).__name__}, not a state dict.')
  return loaded


def load_torchvision(name, state_dict):
  """{'params', 'batch_stats'} of model `name` from a state dict or `.pth` path."""
  state_dict = _read_state_dict(state_dict)
  modules = {}
  for key, value in state_dict.items():
    module, _, leaf = key.rpartition('.')
    modules.setdefault(module, {})[leaf] = _to_numpy(value)
  params, batch_stats = {}, {}
  flattened = _FLATTENED_INPUTS.get(name, {})
  for module, tensors in modules.items():
    path = _flax_path(module)
    if 'running_mean' in tensors:
      params[path + ('scale',)] = tensors['weight']
      params[path + ('bias',)] = tensors['bias']
      batch_stats[path + ('mean',)] = tensors['running_mean']
      batch_stats[path + ('var',)] = tensors['running_var']
      continue
    weight = tensors['weight']
    if weight.ndim == 4:
      kernel = weight.transpose(2, 3, 1, 0)
    elif path in flattened:
      channels, height, width = flattened[path]
      kernel = weight.reshape(-1, channels, height, width).transpose(
          2, 3, 1, 0).reshape(height * width * channels, -1)
    else:
      kernel = weight.T
    params[path + ('kernel',)] = kernel
    if 'bias' in tensors:
      params[path + ('bias',)] = tensors['bias']
  return {'params': flax.traverse_util.unflatten_dict(params),
          'batch_stats': flax.traverse_util.unflatten_dict(batch_stats)}


def _torch_module(path):
  """The inverse of `_flax_path`: ('layer1_0', 'conv1') -> 'layer1.0.conv1'."""
  parts = []
  for part in path:
    indices = []
    while match := re.fullmatch(r'(.+)_(\d+)', part):
      part, index = match.groups()
      indices.insert(0, index)
    parts += [part] + indices
  return '.'.join(parts)


def to_torchvision(name, variables, num_batches_tracked=0):
  """The torchvision state dict (numpy values) of model `name`'s variables.

  The inverse of `load_torchvision`: `torchvision.models.<name>()` loads it
  strictly once its values are tensors. `num_batches_tracked` fills the
  BatchNorm counters that Flax does not keep (torch reads them only with
  momentum=None).
  """
  flattened = _FLATTENED_INPUTS.get(name, {})
  modules = {}
  for collection in ('params', 'batch_stats'):
    tree = flax.traverse_util.flatten_dict(
        flax.core.unfreeze(variables.get(collection, {})))
    for path, value in tree.items():
      modules.setdefault(path[:-1], {})[path[-1]] = np.asarray(value)
  state_dict = {}
  for path, tensors in modules.items():
    prefix = _torch_module(path) + '.'
    if 'mean' in tensors:
      state_dict.update({
          prefix + 'weight': tensors['scale'], prefix + 'bias': tensors['bias'],
          prefix + 'running_mean': tensors['mean'],
          prefix + 'running_var': tensors['var'],
          prefix + 'num_batches_tracked': np.array(num_batches_tracked,
                                                   np.int64)})
      continue
    kernel = tensors['kernel']
    if kernel.ndim == 4:
      weight = kernel.transpose(3, 2, 0, 1)
    elif path in flattened:
      channels, height, width = flattened[path]
      weight = kernel.reshape(height, width, channels, -1).transpose(
          3, 2, 0, 1).reshape(kernel.shape[-1], -1)
    else:
      weight = kernel.T
    state_dict[prefix + 'weight'] = np.ascontiguousarray(weight)
    if 'bias' in tensors:
      state_dict[prefix + 'bias'] = tensors['bias']
  return state_dict


def _describe(path):
  return '/'.join(path)


def merge_pretrained(name, variables, pretrained):
  """`variables` with every matching tensor of `pretrained` copied in.

  The classifier head is kept freshly initialised when its shape differs
  (another class count); any other mismatch is an error.
  """
  head = HEADS.get(name, _DEFAULT_HEAD)
  merged, loaded, kept = {}, [], []
  for collection, tree in variables.items():
    source = flax.traverse_util.flatten_dict(pretrained.get(collection, {}))
    target = flax.traverse_util.flatten_dict(
        flax.core.unfreeze(tree))
    for path, value in target.items():
      if path not in source:
        kept.append(_describe(path))
        continue
      if source[path].shape != value.shape:
        if path[:len(head)] != head:
          raise errors.UserError(
              f'Pretrained {collection} {_describe(path)} has shape '
              f'{source[path].shape}, the model needs {value.shape}.')
        kept.append(_describe(path) + ' (head, other class count)')
        continue
      target[path] = source[path].astype(value.dtype)
      loaded.append(_describe(path))
    unused = sorted(_describe(p) for p in source if p not in target)
    if unused:
      logging.warning('Pretrained %s not in the model: %s', collection, unused)
    merged[collection] = flax.traverse_util.unflatten_dict(target)
  if not loaded:
    raise errors.UserError(
        f'No tensor of the pretrained weights fits {name}: are they weights '
        f'of torchvision\'s {name}?')
  logging.info('Loaded %d pretrained tensors; kept initialised: %s',
               len(loaded), kept or 'none')
  return merged
