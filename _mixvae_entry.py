"""The ``mixvae`` console script: Ctrl-C while the package loads is one line and exit status 130.

A KeyboardInterrupt raised inside an import (torch, numpy, scipy take
seconds) can leave a half-imported module that fails with another error
(numpy's ``__getattr__`` recursing), so no ``except KeyboardInterrupt`` can
catch it reliably.  Until ``mixvae.cli`` is imported, SIGINT therefore exits at
once: nothing has been written yet.  From then on the CLI handles it.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_loading(signum: int, frame: object) -> None:
    sys.stderr.write("mixvae: interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def main() -> int:
    previous = signal.signal(signal.SIGINT, _interrupted_while_loading)
    from mixvae.cli import main as cli_main

    signal.signal(signal.SIGINT, previous)
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
