"""Checked command-line values: every number a command takes is validated by argparse.

``checked(int, low=1)`` is an argparse ``type=`` that converts the string and
checks it with :func:`tinylm.training.config.check_setting` -- the same check
TrainConfig applies to its fields (``setting(..., low=, high=, above=,
below=)``), so the ranges are declared once.  A bad value ends with one line::

    tinylm train: error: argument --steps: must be an integer >= 1 ..., got '-5'

and exit status 2, before anything runs.  :func:`fail` prints a run-time
error the same way.
"""

import argparse
import sys

from tinylm.training.config import check_setting, describe_setting

__all__ = ["checked", "field_type", "fail"]


def _type(kind, meta, hint=""):
    def convert(text):
        try:
            value = kind(text) if kind is not int else int(text, 10)
            return check_setting("value", kind, meta, value)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError("must be %s, got %r%s"
                                             % (describe_setting(kind, meta), text, hint)) \
                from None
    convert.__name__ = kind.__name__       # argparse names the type in some messages
    return convert


def checked(kind, hint="", **bounds):
    """An argparse ``type=``: ``kind`` (int or float) within low/high/above/below."""
    return _type(kind, bounds, hint)


def field_type(field):
    """The argparse ``type=`` for a dataclass field declared with ``setting(...)``."""
    return _type(field.type, field.metadata)


def fail(command, message):
    """Print ``tinylm COMMAND: error: MESSAGE`` on one line; return exit status 2."""
    message = " ".join(str(message).split())          # one line
    for prefix in (command + ": ", "error: "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    print("tinylm %s: error: %s" % (command, message), file=sys.stderr)
    return 2
