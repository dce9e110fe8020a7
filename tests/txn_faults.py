"""Failures injected into the index store's transaction, for the tests of plugins that write with an index.

A plugin's write that goes through :func:`ulisse.indexes.transaction` fails where the injected
error is raised; one that bypasses it does not, so a test of "a failed write leaves the previous
files" can also fail.
"""

from __future__ import annotations


class Injected(Exception):
    """An error injected into the index's transaction."""


def fail_at(monkeypatch, method: str, call: int = 1) -> list:
    """Make the ``call``-th call of ``Transaction.<method>`` (``stage``, ``remove``, ``commit``) raise
    :class:`Injected`; the other calls run as usual. Returns the arguments of every call seen."""
    from ulisse.indexes.transaction import Transaction

    real, calls = getattr(Transaction, method), []

    def failing(self, *args, **kw):
        calls.append(args)
        if len(calls) == call:
            raise Injected
        return real(self, *args, **kw)

    monkeypatch.setattr(Transaction, method, failing)
    return calls
