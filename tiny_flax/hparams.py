"""A config as flat hyperparameters, for TensorBoard and the report."""


def flat(config):
  """{'dotted.key': value} of a config, values as TensorBoard hparams take them."""
  def flatten(tree, prefix=''):
    for key, value in tree.items():
      if isinstance(value, dict):
        yield from flatten(value, f'{prefix}{key}.')
      else:
        yield f'{prefix}{key}', value if isinstance(
            value, (int, float, str, bool)) else str(value)
  return dict(flatten(config.to_dict()))
