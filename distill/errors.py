"""Exceptions raised by the core package.

The whole tree::

    DistillError                 base of everything raised on purpose here
    ├── CardError                a checkpoint or its card is missing, malformed or incompatible
    ├── DataError                a COCO file or data set does not meet the contract
    ├── ImageDecodeError         one image cannot be decoded (per-image: reported, then skipped)
    └── ConfigError              an option has a bad value (unknown preset, threshold out of range)

Every message names the offending value, so a user can fix the input without
reading the source.
"""


class DistillError(Exception):
    """Base class of all errors raised on purpose by ``distill``."""


class CardError(DistillError):
    """A checkpoint or its card is missing, malformed or incompatible."""


class DataError(DistillError):
    """A COCO file or data set does not meet the contract."""


class ImageDecodeError(DistillError):
    """One image cannot be decoded."""


class ConfigError(DistillError, ValueError):
    """An option has a bad value."""
