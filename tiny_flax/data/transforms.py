"""Transforms: torchvision-style op lists written as config strings.

    'random_horizontal_flip|random_resized_crop(224)|to_tensor|normalize(0.5, 0.5)'

Parsed here, without TensorFlow, for both implementations of the ops: the
tf.data one (tiny_flax/data/tf_transforms.py) and the on-device JAX one
(tiny_flax/data/jax_transforms.py).
"""

import ast

from tiny_flax import errors


class PreprocessError(errors.UserError):
  pass


def parse_op(spec):
  """'name(arg, key=value)' -> (name, args, kwargs), values as Python literals."""
  try:
    node = ast.parse(spec.strip(), mode='eval').body
    if isinstance(node, ast.Name):
      return node.id, (), {}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      return (node.func.id, tuple(ast.literal_eval(a) for a in node.args),
              {k.arg: ast.literal_eval(k.value) for k in node.keywords})
  except (SyntaxError, ValueError):
    pass
  raise PreprocessError(
      f'Cannot parse preprocessing op {spec!r}: write name or name(args).')


def parse(value):
  """[(name, args, kwargs)] of transforms: a string with '|', or a list."""
  specs = value.split('|') if isinstance(value, str) else list(value)
  ops = [parse_op(spec) for spec in specs]
  if 'to_tensor' not in [name for name, _, _ in ops]:
    raise PreprocessError(
        f'Transforms {value!r} never convert to float: add to_tensor, as in '
        'torchvision.')
  return ops


def instantiate(spec, registry):
  """The ops of `spec` built from `registry` (name -> factory), in order."""
  ops = []
  for name, args, kwargs in parse(spec):
    if name not in registry:
      raise PreprocessError(
          f'Unknown preprocessing op {name!r} in {spec!r}. Known ops: '
          f'{", ".join(sorted(registry))}.')
    try:
      ops.append((name, registry[name](*args, **kwargs)))
    except TypeError as e:
      raise PreprocessError(f'Bad arguments for {name} in {spec!r}: {e}.') from e
  return ops


def positive_size(op, size):
  """torchvision's `size`: an int or an (h, w) pair, all positive."""
  sizes = (size, size) if isinstance(size, int) else tuple(size)
  if len(sizes) != 2 or not all(isinstance(s, int) and s > 0 for s in sizes):
    raise PreprocessError(
        f'{op}: size must be a positive int or a pair of them, got {size!r}.')
  return sizes


def padding_sides(op, padding):
  """torchvision's `padding`: an int for every side, a (left/right,
  top/bottom) pair, or (left, top, right, bottom); -> the four, >= 0."""
  sides = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
  if len(sides) == 2:
    sides = sides * 2
  if len(sides) != 4 or not all(isinstance(s, int) and s >= 0 for s in sides):
    raise PreprocessError(
        f'{op}: padding must be an int >= 0, or 2 or 4 of them (left, top, '
        f'right, bottom), got {padding!r}.')
  return sides


def check_crop_ranges(scale, ratio):
  if not 0 < scale[0] <= scale[1] or not 0 < ratio[0] <= ratio[1]:
    raise PreprocessError(
        'random_resized_crop: scale and ratio must be increasing positive '
        f'pairs, got scale={scale!r}, ratio={ratio!r}.')


def resized_shorter_side(height, width, size):
  """torchvision's Resize(int): the shorter side to `size`, the other truncated."""
  if height <= width:
    return size, int(size * width / height)
  return int(size * height / width), size
