"""The one exception type for bad user input. Imports nothing heavy, so the CLI can catch it."""


class InputError(ValueError):
    """Bad input from the user: a path, a file or an argument.

    The message names the file or argument and says what to do; the command line prints it on one
    line and exits with status 2, without a traceback.
    """
