"""Bonds live in the firmware, as with NimBLE on an ESP32: the pairing keys reach the
firmware through _IRQ_SET_SECRET as NimBLE's records (one of the insole's keys, one of
the central's, under the central's identity address) and the main loop writes them to
the bond file on flash; after a restart of the board, active(True) reads the peer
IRKs back (before any central can connect), so a bonded central encrypts the link
straight away with the stored keys, no new pairing - also one that connects from a
new resolvable private address, as phones do. A board with an empty flash cannot.

The private central is a bumble Device with LE privacy on: it connects from an RPA
made with its own IRK and hands out that IRK and its identity (a random static
address) when it pairs; before the second boot it takes a fresh RPA."""

from __future__ import annotations

import asyncio
import shutil
import sys

import pytest

from host_tools.ble import protocol
from host_tools.vboard.bonds import SEC_OUR, SEC_OUR_IRK, SEC_PEER, SecRecord, store_key
from host_tools.vboard.central import Central
from host_tools.vboard.insole import VirtualInsole
from host_tools.vboard.process import FIRMWARE
from host_tools.vboard.radio import VirtualRadio
from tests.fw_fakes import LogSink
from tests.test_vboard import TRACE

BONDS = "insole_bonds.json"  # the firmware's bond file (firmware/app.py)


def _bond_file(path):
    """The firmware's bond table, read by the firmware's own module."""
    sys.path.insert(0, str(FIRMWARE))
    try:
        from bonds import Bonds
        from log import Log
    finally:
        sys.path.remove(str(FIRMWARE))
    bonds = Bonds(str(path), Log(LogSink()))
    rows = []
    for sec_type in (SEC_OUR, SEC_PEER, SEC_OUR_IRK):
        i = 0
        while (value := bonds.get(sec_type, i, None)) is not None:
            rows.append((sec_type, value))
            i += 1
    return rows


async def _pair_and_leave(vi, central_device):
    central = Central(central_device)
    await central.connect(vi)
    await central.pair()
    await vi.wait_log(r"ble encrypted 1 bonded 1")
    await vi.wait_stored()
    await vi.run_for(0.2)  # the main loop writes the bond file
    await central.disconnect()
    await vi.wait_log(r"ble disconnect")


async def _reconnect(vi, central_device):
    """Connect, encrypt with the stored keys, send a Control command; the replies."""
    central = Central(central_device)
    await central.connect(vi)
    await asyncio.wait_for(central.connection.encrypt(), 10)
    await vi.wait_log(r"ble encrypted 1 bonded 1")
    replies = await central.subscribe(protocol.UUID_CONTROL)
    await central.write(protocol.UUID_CONTROL, protocol.cmd_zero())
    await vi.run_for(0.1)
    peer = next(iter(vi.connections.values())).peer_address
    return [protocol.decode_reply(v) for _, v in replies], peer


async def _bond_then_reboot(tmp_path):
    radio = VirtualRadio()
    central_device = await radio.central()
    flash = tmp_path / "flash"
    async with VirtualInsole(TRACE, radio=radio, paused=True, flash_dir=flash) as vi:
        await _pair_and_leave(vi, central_device)
    rows = _bond_file(flash / BONDS)
    # reboot: a new process on the same flash
    async with VirtualInsole(TRACE, radio=radio, paused=True, flash_dir=flash) as vi:
        got, _ = await _reconnect(vi, central_device)
        encryptions = sum(1 for _, line in vi.log if "encrypted" in line)
    # a board that never bonded (empty flash) has no keys for this central
    async with VirtualInsole(TRACE, radio=radio, paused=True,
                                    flash_dir=tmp_path / "fresh") as vi:
        central = Central(central_device)
        await central.connect(vi)
        # refused (an HCI error) or never completed (bumble's virtual controller
        # does not answer a missing key): either way no encrypted link
        with pytest.raises(Exception):  # noqa: B017
            await asyncio.wait_for(central.connection.encrypt(), 2)
        assert not any("encrypted" in line for _, line in vi.log)
    await radio.close()
    return rows, got, encryptions, central_device


def test_bond_survives_a_reboot(tmp_path):
    rows, replies, encryptions, central = asyncio.run(
        asyncio.wait_for(_bond_then_reboot(tmp_path), 60))
    # NimBLE's records (ble_sm_persist_keys): ours and the peer's, both under the
    # central's identity address, and the device's own IRK from load_irk()
    assert sorted(t for t, _ in rows) == [SEC_OUR, SEC_PEER, SEC_OUR_IRK]
    records = {t: SecRecord.unpack(v) for t, v in rows if t != SEC_OUR_IRK}
    assert records[SEC_OUR].key == records[SEC_PEER].key == store_key(central.static_address)
    assert records[SEC_OUR].ltk is not None and records[SEC_OUR].sc  # le_secure=True
    assert len(dict(rows)[SEC_OUR_IRK]) == 16
    assert [(r.op, r.error) for r in replies] == [(protocol.OP_ZERO, protocol.ERR_OK)]
    assert encryptions == 1


async def _private_central_reboot(tmp_path, firmware_dir):
    from bumble.hci import HCI_Error

    radio = VirtualRadio()
    phone = await radio.central(private=True)
    out = {"phone": phone, "first": phone.random_address}
    flash = tmp_path / "flash"
    kw = dict(radio=radio, paused=True, flash_dir=flash, firmware_dir=firmware_dir)
    async with VirtualInsole(TRACE, **kw) as vi:
        await _pair_and_leave(vi, phone)
    out["rows"] = _bond_file(flash / BONDS)
    out["second"] = await radio.new_private_address(phone)
    async with VirtualInsole(TRACE, **kw) as vi:
        try:
            out["replies"], out["peer"] = await _reconnect(vi, phone)
        except HCI_Error as e:
            out["error"] = e.error_code
            out["peer"] = next(iter(vi.connections.values())).peer_address
        out["log"] = [line for _, line in vi.log]
    await radio.close()
    return out


def test_a_private_address_central_keeps_its_bond_over_a_reboot(tmp_path):
    got = asyncio.run(asyncio.wait_for(_private_central_reboot(tmp_path, FIRMWARE), 60))
    phone, first, second = got["phone"], got["first"], got["second"]
    assert first.is_resolvable and second.is_resolvable and first != second
    # the bond is kept under the identity the phone handed out, with its IRK ...
    peer_rec = next(SecRecord.unpack(v) for t, v in got["rows"] if t == SEC_PEER)
    assert peer_rec.key == store_key(phone.static_address)
    assert peer_rec.irk == phone.irk
    # ... and after the reboot the new RPA resolves to it: the stored LTK encrypts
    assert store_key(got["peer"]) == store_key(phone.static_address)
    assert [(r.op, r.error) for r in got["replies"]] == [(protocol.OP_ZERO, protocol.ERR_OK)]
    assert sum(1 for line in got["log"] if "encrypted" in line) == 1


def test_a_handler_registered_after_active_loses_private_bonds(tmp_path):
    """The order matters: with ble.irq() after ble.active(True) the peer IRKs are
    not read at boot, the phone's new RPA stays unresolved and the keys stored under
    its identity are never found."""
    from bumble.hci import HCI_PIN_OR_KEY_MISSING_ERROR

    firmware = tmp_path / "late_irq_firmware"
    shutil.copytree(FIRMWARE, firmware)
    src = (firmware / "ble_gatt.py").read_text()  # InsoleBLE's setup at boot
    register = "    ble.irq(bl._irq)  # before active(True): see the top of ble_insole.py\n"
    start = "    ble.active(True)"
    assert src.count(register) == 1 and src.count(start) == 1
    late = src.replace(register, "").replace(start, start + "\n    ble.irq(bl._irq)")
    (firmware / "ble_gatt.py").write_text(late)
    got = asyncio.run(asyncio.wait_for(_private_central_reboot(tmp_path, firmware), 60))
    assert any(t == SEC_PEER for t, _ in got["rows"])  # the keys were stored ...
    assert got["error"] == HCI_PIN_OR_KEY_MISSING_ERROR  # ... and are not found
    assert got["peer"] == got["second"]  # the RPA, unresolved
