"""Bonds live in the firmware, as with NimBLE on an ESP32: the pairing keys reach the
firmware through _IRQ_SET_SECRET and land in its bond file on flash; after a restart
of the board a bonded central encrypts the link straight away with the stored keys
(no new pairing), while a board with an empty flash cannot."""

from __future__ import annotations

import asyncio
import json

import pytest

from host_tools import protocol, vboard
from tests.test_vboard import TRACE

BONDS = "insole_bonds.json"  # the firmware's bond file (firmware/app.py)


async def _bond_then_reboot(tmp_path):
    radio = vboard.VirtualRadio()
    central_device = await radio.central()
    flash = tmp_path / "flash"
    async with vboard.VirtualInsole(TRACE, radio=radio, paused=True, flash_dir=flash) as vi:
        central = vboard.Central(central_device)
        await central.connect(vi)
        await central.pair()
        await vi.wait_log(r"ble encrypted 1 bonded 1")
        await central.disconnect()
        await vi.wait_log(r"ble disconnect")
    bonds = json.loads((flash / BONDS).read_text())
    # reboot: a new process on the same flash
    async with vboard.VirtualInsole(TRACE, radio=radio, paused=True, flash_dir=flash) as vi:
        central = vboard.Central(central_device)
        await central.connect(vi)
        await asyncio.wait_for(central.connection.encrypt(), 10)
        await vi.wait_log(r"ble encrypted 1")
        replies = await central.subscribe(protocol.UUID_CONTROL)
        await central.write(protocol.UUID_CONTROL, protocol.cmd_zero())
        await vi.run_for(0.1)
        got = [protocol.decode_reply(v) for _, v in replies]
        encryptions = sum(1 for _, line in vi.log if "encrypted" in line)
    # a board that never bonded (empty flash) has no keys for this central
    async with vboard.VirtualInsole(TRACE, radio=radio, paused=True,
                                    flash_dir=tmp_path / "fresh") as vi:
        central = vboard.Central(central_device)
        await central.connect(vi)
        # refused (an HCI error) or never completed (bumble's virtual controller
        # does not answer a missing key): either way no encrypted link
        with pytest.raises(Exception):  # noqa: B017
            await asyncio.wait_for(central.connection.encrypt(), 2)
        assert not any("encrypted" in line for _, line in vi.log)
    await radio.close()
    return bonds, got, encryptions


def test_bond_survives_a_reboot(tmp_path):
    bonds, replies, encryptions = asyncio.run(asyncio.wait_for(_bond_then_reboot(tmp_path), 60))
    assert len(bonds) == 1 and bonds[0][0] == 2  # one peer record (NimBLE sec type 2)
    assert [(r.op, r.error) for r in replies] == [(protocol.OP_ZERO, protocol.ERR_OK)]
    assert encryptions == 1
