"""The ``mixvae`` console script: imports the package inside a guard, so that Ctrl-C during
the first seconds (while torch and Pyro load) is one line and exit status 130, not a traceback."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from mixvae.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:
        print("mixvae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
