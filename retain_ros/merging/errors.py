"""Errors raised by the merging engine. Messages name the file and the offending tensors."""


class MergeError(RuntimeError):
    """A merge could not be carried out; nothing changed (no file written, old weights live)."""


class CheckpointError(MergeError):
    """A checkpoint could not be opened or read (missing, corrupted, refused format, ...)."""


class KeyMismatchError(MergeError):
    """Two checkpoints do not hold the same tensors (names, shapes or dtype families)."""


class SpecError(ValueError):
    """A merge specification is invalid (alpha out of range, unknown recipe, ...)."""


class InvalidMergeSpecError(MergeError, SpecError):
    """A merge specification was refused by a merger (both a MergeError and a SpecError)."""


class RestoreFailedError(MergeError):
    """A merge failed and putting the previous weights back failed too.

    The module's weights are inconsistent (``LiveMerger.valid`` is False) until a later merge or
    reload succeeds.
    """
