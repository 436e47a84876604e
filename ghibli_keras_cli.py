"""The `ghibli-keras` launcher: marks the process as the command line before the package is
imported, so arguments are validated before TensorFlow loads (see ghibli_keras/__init__.py)."""

import os
import sys


def main(argv=None) -> int:
    os.environ["GHIBLI_KERAS_CLI"] = "1"
    from ghibli_keras.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
