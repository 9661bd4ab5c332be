import signal
import sys


def _exit_early(signum, frame):
    # A signal before the guest exists: nothing to save, so no traceback either.
    sys.exit(128 + signum)


signal.signal(signal.SIGINT, _exit_early)
signal.signal(signal.SIGTERM, _exit_early)

from .cli import main  # noqa: E402 - imported after the handlers, it takes a while

sys.exit(main())
