"""The one error type of the embodiment package."""


class EmbodimentError(ValueError):
    """An embodiment file that cannot be used, or inputs that do not fit the embodiment.

    Messages name the file and the field path, e.g.
    ``droid.yaml: actions[0].kind: unknown kind 'joint_vel' (use one of ...)``.
    """


def fail(source: str, path: str, message: str) -> EmbodimentError:
    """Build an :class:`EmbodimentError` prefixed with the file and the field path.

    :param source: the file name (``droid.yaml``) or another label of the embodiment.
    :param path: the field path (``actions[0].kind``); empty for the whole file.
    :param message: what is wrong and, where possible, how to fix it.
    :return: the error (the caller raises it).
    """
    where = f'{source}: {path}: ' if path else f'{source}: '
    return EmbodimentError(where + message)
