"""Fixtures for the EWS simulator: a running server with one rep's mailbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.ews.simulator import EwsSimulator, SimMailbox

SERVICE_USER = "svc-mailsync@contoso.com"
SERVICE_PASSWORD = "correct horse battery staple"
REP = "tamara@contoso.com"


@pytest.fixture
def ews(monkeypatch: pytest.MonkeyPatch) -> Iterator[EwsSimulator]:
    """A started simulator with a service account allowed to impersonate.

    It fails the test if the simulator itself hit a bug while answering.
    """
    # requests honours HTTP(S)_PROXY; the simulator is on this machine.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with EwsSimulator() as sim:
        sim.add_user(SERVICE_USER, SERVICE_PASSWORD)
        sim.add_mailbox(REP, "Tamara Johnston")
        yield sim
    assert not sim.errors, "the EWS simulator failed:\n" + "\n".join(sim.errors)


@pytest.fixture
def rep_mailbox(ews: EwsSimulator) -> SimMailbox:
    return ews.mailbox(REP)
