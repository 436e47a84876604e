"""The exceptions the command line turns into one line: bad user input, and a run that
diverged. Imports nothing heavy, so the CLI can catch them."""

import contextlib
import warnings


class InputError(ValueError):
    """Bad input from the user: a path, a file or an argument.

    The message names the file or argument and says what to do; the command line prints it on one
    line and exits with status 2, without a traceback.
    """


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; the backup of the last finished epoch is kept. The
    message says how to go on; the command line prints it on one line and exits with 1."""


@contextlib.contextmanager
def warnings_only_if_it_works():
    """Warnings raised in the block are shown when it completes and dropped when it raises:
    Keras warns once per layer about a weights file that does not fit the network before the
    error that the caller turns into one `InputError` line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def gist(error: BaseException) -> str:
    """An exception's message on one line: its first line, with the next one when the first
    ends in ':' (Keras' "... Example error message for object <Conv2D ...>:"); the type's name
    when the message is empty."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
