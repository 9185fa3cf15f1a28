"""Errors a user can act on. The CLI prints their message in one line and exits non-zero."""

from __future__ import annotations


class DigitlabError(Exception):
    """Base class: anything raised as a DigitlabError is a user-facing, one-line reason."""


class DataError(DigitlabError):
    """A dataset file is missing or defective; the message names the file."""


class MissingDataError(DataError):
    pass


class ChecksumError(DataError):
    pass


class TruncatedFileError(DataError):
    pass


class CorruptFileError(DataError):
    pass


class BadMagicError(DataError):
    pass


class HeaderMismatchError(DataError):
    pass


class CountMismatchError(DataError):
    pass


class ImageError(DigitlabError):
    """An input image cannot be read or holds no usable content."""


class ImageTooLargeError(ImageError):
    """The file, or the pixel count its header claims, is over the limits (`reader.image.Limits`)."""


class ModelError(DigitlabError):
    """A model directory or file is missing, incomplete or incompatible."""


class NoDigitError(ImageError):
    """The image is blank or holds nothing that stands out from the background."""
