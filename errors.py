"""How the command-line tools report problems: one ``error:`` line, and signals that end a run cleanly."""
import contextlib
import signal


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM; ``exit_code`` is 128 + the signal number, as a shell reports it."""

    def __init__(self, signum=signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signal_name, self.exit_code = signal.Signals(signum).name, 128 + int(signum)


def one_line(error):
    """An error message on one line: 'header:' lines run into the next, other lines are joined by '; '."""
    text = ""
    for line in (line.strip() for line in str(error).splitlines() if line.strip()):
        text += line if not text else (" " if text.endswith(":") else "; ") + line
    return text


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_as_interrupts():
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted`, so ``with`` blocks and ``finally``
    clauses clean up (a temporary file is removed, an earlier result kept) before the tool exits 130 or 143."""
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
