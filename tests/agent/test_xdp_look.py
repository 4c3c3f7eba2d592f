"""The watch's look at the XDP hook (xdp.Look, a bare rtnetlink socket kept open in the
interface's namespace) answers exactly what xdp.query() (pyroute2) answers: nothing
attached, a program in generic mode, another program in its place, a missing interface."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.helpers import ForeignXdp
from xlb.dataplane import xdp
from xlb.errors import AttachError
from xlb.lab import netns

pytestmark = pytest.mark.root
NS = f"xlblook-{os.getpid()}"


@pytest.fixture
def look() -> Iterator[xdp.Look]:
    netns.create(NS)
    try:
        netns.veth(NS, "xlb0", NS, "peer0", queues=4)
        lk = xdp.Look(NS)
        try:
            yield lk
        finally:
            lk.close()
    finally:
        netns.remove(NS)


def test_look_answers_as_query_does(look: xdp.Look) -> None:
    empty = look.query("xlb0")
    assert empty == xdp.query("xlb0", NS) and empty.prog_id == 0 and empty.programs == ()
    first, second = ForeignXdp("fw_first"), ForeignXdp("fw_second")
    xdp.attach("xlb0", first.fd, "generic", NS)
    one = look.query("xlb0")
    assert one == xdp.query("xlb0", NS)
    assert (one.mode, one.prog_id, one.programs) == ("generic", first.id,
                                                     (("generic", first.id),))
    xdp.attach("xlb0", second.fd, "generic", NS, expected_fd=first.fd)
    assert look.query("xlb0").prog_id == second.id == xdp.query("xlb0", NS).prog_id
    xdp.detach("xlb0", NS)
    assert look.query("xlb0") == xdp.query("xlb0", NS) == empty
    assert look.query("peer0") == xdp.query("peer0", NS)  # by name, whatever its index


def test_look_names_a_missing_interface_as_query_does(look: xdp.Look) -> None:
    with pytest.raises(AttachError) as by_look:
        look.query("nothere0")
    with pytest.raises(AttachError) as by_query:
        xdp.query("nothere0", NS)
    assert str(by_look.value) == str(by_query.value)
    assert "'nothere0' not found" in str(by_look.value)
