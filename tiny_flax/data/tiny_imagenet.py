"""TFDS builder for Tiny ImageNet (cs231n), prepared once from the official zip.

Class indices follow the sorted wnids, the order torchvision's ImageFolder
gives, so logits line up with PyTorch models trained the usual way. Validation
labels come from `val/val_annotations.txt`: reading `val/images` as an image
folder (as the PyTorch original did) gives every image one label and chance
accuracy. The JPEG bytes are stored untouched, so decoding them here and in PIL
gives the same pixels.
"""

import os

import tensorflow_datasets as tfds
import tqdm

from tiny_flax.data import archive


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
  """Tiny ImageNet: 200 classes, 64x64 JPEGs, 100k train / 10k val / 10k test."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Without network access, download {archive.URL} elsewhere and put '
      f'{archive.ARCHIVE_NAME} (or its extracted {archive.ROOT}/ folder) in the manual_dir.')

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=archive.IMAGE_SHAPE,
                                         encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://www.kaggle.com/c/tiny-imagenet',
        metadata=tfds.core.MetadataDict(),
    )

  def _source(self, dl_manager):
    manual_dir = os.fspath(dl_manager._manual_dir or '')  # pylint: disable=protected-access
    if manual_dir:
      source = archive.find(manual_dir)
      if source is not None:
        return source
    try:
      archive.check_reachable(archive.URL)
      path = os.fspath(dl_manager.download(archive.URL))
    except Exception as e:  # pylint: disable=broad-except
      looked = f'{manual_dir!r} has no {archive.ARCHIVE_NAME} or {archive.ROOT}/, and ' if (
          manual_dir) else 'no manual_dir was given, and '
      where = f'put it in {manual_dir}' if manual_dir else 'put it in a folder'
      raise archive.DatasetError(
          f'Tiny ImageNet not found: {looked}downloading {archive.URL} failed '
          f'({type(e).__name__}: {str(e)[:200]}). Download the zip on a '
          f'machine with network access and {where}, or pass '
          '--config.dataset.manual_dir=FOLDER holding it.') from e
    if archive.md5(path) != archive.ARCHIVE_MD5:
      raise archive.DatasetError(
          f'The download of {archive.URL} at {path} is corrupt (md5 mismatch). '
          'Delete it and run again.')
    return archive.Archive(path)

  def _split_generators(self, dl_manager):
    source = self._source(dl_manager)
    found = archive.listing(source)
    self.info.features['label'].names = found.wnids
    self.info.metadata['class_names'] = found.names
    test = [(member, -1) for member, _ in found.test]
    return {
        'train': self._generate_examples(source, found.train, 'train'),
        'validation': self._generate_examples(source, found.validation,
                                              'validation'),
        'test': self._generate_examples(source, test, 'test'),
    }

  def _generate_examples(self, source, examples, split):
    # TFDS's own bar counts examples; this one knows the total, hence an ETA.
    for member, label in tqdm.tqdm(examples, desc=f'Reading {split} images',
                                   unit='image', leave=False, disable=None):
      file_name = os.path.basename(member)
      yield file_name, {'image': source.jpeg(member), 'label': label,
                        'file_name': file_name}
