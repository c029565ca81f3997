"""Pairing that only the wearer can do, over the virtual radio, against the unchanged
firmware on the virtual board. The centrals here are bare bumble Devices with their
own pairing delegates (bumble's SMP and GATT client, none of the project's central
code): a stranger in range pairs "just works" or guesses a passkey, the owner types
the insole's passkey.

- a just-works pairing gets no authenticated key: the bond is not kept, Status,
  the step stream and Control stay shut, a Control write changes nothing;
- a wrong passkey fails; the right one bonds and Control works;
- outside the pairing window (2 minutes after power-on) a new bond is refused, and
  the foot gesture opens the window again;
- while strangers stay connected the owner still finds the insole, connects and gets
  every step, and the strangers get none;
- a bond from before passkey pairing (no MITM) is refused for Control until the
  central pairs once more with the passkey."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import numpy as np
import pytest

from host_tools.ble import protocol
from host_tools.vboard.bonds import SEC_OUR, SEC_PEER, SecRecord, store_key
from host_tools.vboard.central import Central
from host_tools.vboard.gatt import uuid_key
from host_tools.vboard.insole import VirtualInsole, address_for, uid_for
from host_tools.vboard.radio import VirtualRadio
from tests.test_pairing_gesture import gesture_trace
from tests.test_vboard import TRACE, as_reference, reference_events

BONDS = "insole_bonds.json"


def run(coro, timeout=120):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Stranger:
    """A bumble central with its own pairing delegate: `io` its I/O capability,
    `passkey` what it types when asked (None: it cannot type)."""

    def __init__(self, device):
        self.device = device
        self.conn = None
        self.peer = None
        self.chars = {}

    @classmethod
    async def make(cls, radio, n, passkey=None, mitm=False, io=None):
        from bumble.pairing import PairingConfig, PairingDelegate

        dev = await radio.device(f"stranger{n}", f"C1:00:00:00:5E:{n:02X}")

        class Delegate(PairingDelegate):
            async def get_number(self):
                return passkey

        if io is None:
            io = (PairingDelegate.IoCapability.KEYBOARD_INPUT_ONLY if passkey is not None
                  else PairingDelegate.IoCapability.NO_OUTPUT_NO_INPUT)
        dev.pairing_config_factory = lambda _c: PairingConfig(
            sc=True, mitm=mitm, bonding=True,
            identity_address_type=PairingConfig.AddressType.RANDOM,
            delegate=Delegate(io_capability=io))
        await dev.power_on()
        return cls(dev)

    async def connect(self, name):
        from bumble.core import AdvertisingData
        from bumble.device import Peer

        got = asyncio.get_running_loop().create_future()

        def on_adv(adv):
            seen = adv.data.get(AdvertisingData.COMPLETE_LOCAL_NAME)
            if seen in (name, name.encode()) and not got.done():
                got.set_result(adv.address)

        self.device.on("advertisement", on_adv)
        await self.device.start_scanning(filter_duplicates=False)
        try:
            address = await asyncio.wait_for(got, 10)
        finally:
            self.device.remove_listener("advertisement", on_adv)
            await self.device.stop_scanning()
        self.conn = await asyncio.wait_for(self.device.connect(address), 10)
        self.peer = Peer(self.conn)
        await self.peer.discover_services()
        for svc in self.peer.services:
            await svc.discover_characteristics()
            for c in svc.characteristics:
                self.chars[uuid_key(c.uuid)] = c

    def char(self, uuid):
        return self.chars[uuid_key(uuid)]

    async def att_error(self, coro):
        """The ATT error the insole answers, 0 when it did what was asked."""
        from bumble.core import ProtocolError

        try:
            await asyncio.wait_for(coro, 10)
        except ProtocolError as e:
            return int(e.error_code)
        return 0


def _bonded_keys(flash):
    """The store keys of the peers in the firmware's bond file."""
    path = flash / BONDS
    if not path.exists():
        return set()
    return {bytes.fromhex(k) for t, k, _ in json.loads(path.read_text()) if t in (1, 2)}


async def _owner(vi, radio):
    owner = Central(await radio.central())
    await owner.connect(vi)
    await owner.pair(vi.passkey)
    # its stream starts once the firmware has the encryption report (the serial log,
    # 5 lines a second, may have dropped the line while the clock stands still)
    me = owner.device.random_address
    sec = next(vi.security[h] for h, c in vi.connections.items() if c.peer_address == me)
    await asyncio.wait_for(sec.settled.wait(), 10)
    assert sec.authenticated
    await vi.irqs_delivered()
    return owner


def test_just_works_gets_no_key_and_control_changes_nothing(tmp_path):
    from bumble.att import ATT_INSUFFICIENT_AUTHENTICATION_ERROR as AUTHEN

    async def main():
        radio = VirtualRadio()
        flash = tmp_path / "flash"
        async with VirtualInsole(TRACE, radio=radio, paused=True, flash_dir=flash) as vi:
            s = await Stranger.make(radio, 1)
            await s.connect(vi.name)
            await asyncio.wait_for(s.conn.pair(), 10)  # "just works": the stack allows it
            await vi.wait_log(r"bond of conn \d+ refused: not authenticated")
            await vi.run_for(0.5)
            out = {
                "write": await s.att_error(
                    s.char(protocol.UUID_CONTROL).write_value(protocol.cmd_set_name("Evil"),
                                                              with_response=True)),
                "status": await s.att_error(s.char(protocol.UUID_STATUS).read_value()),
                "subscribe": await s.att_error(
                    s.char(protocol.UUID_STEP_EVENT).subscribe(lambda _v: None)),
                # the open services stay open: a watch reads RSC and the battery
                "rsc": await s.att_error(s.char(0x2A54).read_value()),
                "battery": await s.att_error(s.char(0x2A19).read_value()),
            }
            await vi.run_for(1.0)
            out["cfg"] = json.loads((flash / "insole.json").read_text())
            out["bonded"] = _bonded_keys(flash)
            out["stranger"] = store_key(s.device.random_address)
            out["log"] = [line for _, line in vi.log]
        await radio.close()
        return out

    got = run(main())
    assert got["write"] == AUTHEN and got["status"] == AUTHEN and got["subscribe"] == AUTHEN
    assert got["rsc"] == 0 and got["battery"] == 0
    assert got["cfg"]["name"] == "Insole"  # SET_NAME changed nothing
    assert got["stranger"] not in got["bonded"]  # its keys were not kept
    assert any(" ble encrypted 1 bonded 1 auth 0" in line for line in got["log"])


def test_wrong_passkey_fails_and_the_right_one_bonds_with_control(tmp_path):
    from bumble.core import ProtocolError
    from bumble.smp import ErrorCode

    async def main():
        radio = VirtualRadio()
        flash = tmp_path / "flash"
        out = {}
        async with VirtualInsole(TRACE, radio=radio, paused=True, flash_dir=flash) as vi:
            key = vi.passkey
            wrong = await Stranger.make(radio, 2, passkey=(key + 1) % 1000000, mitm=True)
            await wrong.connect(vi.name)
            with pytest.raises(ProtocolError) as err:
                await asyncio.wait_for(wrong.conn.pair(), 15)
            out["wrong_error"] = err.value.error_code
            await vi.run_for(0.2)
            out["wrong_write"] = await wrong.att_error(
                wrong.char(protocol.UUID_CONTROL).write_value(protocol.cmd_zero(),
                                                              with_response=True))
            await wrong.conn.disconnect()
            await vi.run_for(1.1)  # a new second of the serial log (5 lines a second)
            right = await Stranger.make(radio, 3, passkey=key, mitm=True)
            await right.connect(vi.name)
            await asyncio.wait_for(right.conn.pair(), 15)
            await vi.wait_log(r"ble encrypted 1 bonded 1 auth 1")
            replies = []
            await right.char(protocol.UUID_CONTROL).subscribe(lambda v: replies.append(v))
            await right.char(protocol.UUID_CONTROL).write_value(
                protocol.cmd_set_name("Owner"), with_response=True)
            await vi.run_for(0.2)
            out["replies"] = [protocol.decode_reply(bytes(v)) for v in replies]
            await vi.wait_stored()
            await vi.run_for(0.2)
            out["cfg"] = json.loads((flash / "insole.json").read_text())
            out["bonded"] = _bonded_keys(flash)
            out["wrong"] = store_key(wrong.device.random_address)
            out["right"] = store_key(right.device.random_address)
            out["name"] = vi.name
        await radio.close()
        return out

    got = run(main())
    assert got["wrong_error"] in (ErrorCode.CONFIRM_VALUE_FAILED, ErrorCode.DHKEY_CHECK_FAILED)
    assert got["wrong_write"] == 0x05
    assert [(r.op, r.error) for r in got["replies"]] == [(protocol.OP_SET_NAME, protocol.ERR_OK)]
    assert got["cfg"]["name"] == "Owner" and got["name"].startswith("Owner-L-")
    assert got["bonded"] == {got["right"]}


def _stand_then_gesture(seconds):
    """Quiet standing for `seconds`, then the pairing gesture and standing again."""
    stand = np.tile([[30000, 9000, 30000]], (int(seconds * 100), 1))
    noise = np.random.default_rng(3).normal(0, 200, stand.shape)
    stand = np.clip(stand + noise, 0, 65535).astype(int)
    return np.concatenate([stand, gesture_trace(6, 100, stand_s=2.0)])


def test_outside_the_window_a_new_bond_is_refused_until_the_gesture(tmp_path):
    async def main():
        radio = VirtualRadio()
        trace = _stand_then_gesture(125.0)
        out = {}
        async with VirtualInsole(trace, radio=radio, paused=True) as vi:
            key = vi.passkey
            await vi.run_until(122.0)  # two minutes after power-on: the window closes
            await vi.wait_log(r"pair window closed \(time up\)")
            late = await Stranger.make(radio, 4, passkey=key, mitm=True)
            await late.connect(vi.name)
            gone = asyncio.get_running_loop().create_future()
            late.conn.on("disconnection", lambda *_: gone.done() or gone.set_result(1))
            # the insole ends the link: bumble cancels the pairing
            with pytest.raises((asyncio.CancelledError, ConnectionError)):
                await asyncio.wait_for(late.conn.pair(), 15)
            await asyncio.wait_for(gone, 10)
            await vi.wait_log(r"pairing of conn \d+ refused: window closed")
            out["late_bonded"] = any("auth 1" in line for _, line in vi.log)
            # the wearer taps the heel 6 times (forefoot loaded) and holds it up
            await vi.run_to_end()
            await vi.wait_log(r"pair window open 120 s \(gesture\)")
            await vi.run_for(1.0)  # the firmware serves BLE after the trace
            again = await Stranger.make(radio, 5, passkey=key, mitm=True)
            await again.connect(vi.name)
            await asyncio.wait_for(again.conn.pair(), 15)
            await vi.run_for(1.0)
            await vi.wait_log(r"ble encrypted 1 bonded 1 auth 1")
            out["status"] = await again.att_error(again.char(protocol.UUID_STATUS).read_value())
        await radio.close()
        return out

    got = run(main(), 180)
    assert got["late_bonded"] is False
    assert got["status"] == 0


def test_strangers_connected_do_not_lock_the_owner_out():
    async def main():
        radio = VirtualRadio()
        async with VirtualInsole(TRACE, radio=radio, paused=True) as vi:
            strangers = []
            for n in range(3):  # three of the four connections NimBLE holds
                s = await Stranger.make(radio, 10 + n)
                await s.connect(vi.name)
                strangers.append(s)
            await asyncio.wait_for(strangers[0].conn.pair(), 10)  # just works
            assert vi.advertising  # a slot is still free
            owner = await _owner(vi, radio)
            events = await owner.subscribe(protocol.UUID_STEP_EVENT)
            await vi.run_for(0.2)
            full = vi.advertising  # four links: nothing left to offer
            await vi.run_to_end()
            await vi.run_for(0.5)
            h_event = owner.characteristic(protocol.UUID_STEP_EVENT).handle
            step_conns = {n.conn for n in vi.notifications if n.handle == h_event}
            me = owner.device.random_address
            owner_conn = next(h for h, c in vi.connections.items() if c.peer_address == me)
            decoded = [protocol.decode_event(v) for _, v in events]
            await strangers[1].conn.disconnect()
            await vi.run_for(0.2)
            back = vi.advertising
        await radio.close()
        return decoded, step_conns, owner_conn, full, back

    decoded, step_conns, owner_conn, full, back = run(main())
    # every step of the walk reached the owner, none a stranger
    steps = [e for e in as_reference(decoded) if e[0] == "S"]
    ref = [e for e in reference_events() if e[0] == "S"]
    assert len(ref) > 60 and steps == ref
    assert step_conns == {owner_conn}
    assert full is False and back is True


def test_a_bond_from_before_passkey_pairing_needs_one_new_pairing(tmp_path):
    """A bond made "just works" by the firmware before this change: the central
    encrypts with it, Control stays shut and the serial log says to re-pair; one
    pairing with the passkey replaces it (NimBLE's repeat pairing)."""
    from bumble.keys import PairingKeys

    async def main():
        radio = VirtualRadio()
        flash = tmp_path / "flash"
        flash.mkdir()
        phone = await radio.central()
        insole_address = address_for(uid_for("left", 0))
        ltk = os.urandom(16)
        irk = os.urandom(16)
        key = store_key(phone.random_address)
        rows = [[SEC_OUR, key.hex(), SecRecord(key[0], key[1:], ltk=ltk, sc=True).pack().hex()],
                [SEC_PEER, key.hex(), SecRecord(key[0], key[1:], ltk=ltk, irk=irk,
                                                sc=True).pack().hex()]]
        (flash / BONDS).write_text(json.dumps(rows))
        await phone.keystore.update(insole_address, PairingKeys(
            address_type=1, ltk=PairingKeys.Key(ltk, authenticated=False)))
        out = {}
        async with VirtualInsole(TRACE, radio=radio, paused=True, flash_dir=flash) as vi:
            central = Central(phone)
            await central.connect(vi)
            await asyncio.wait_for(central.connection.encrypt(), 10)
            await vi.wait_log(r"re-pair once with the passkey")
            await vi.run_for(1.1)  # a new second of the serial log (5 lines a second)
            from bumble.core import ProtocolError

            try:
                await central.write(protocol.UUID_CONTROL, protocol.cmd_zero())
                out["old"] = 0
            except ProtocolError as e:
                out["old"] = e.error_code
            await central.pair(vi.passkey)
            await vi.wait_log(r"ble encrypted 1 bonded 1 auth 1")
            replies = await central.subscribe(protocol.UUID_CONTROL)
            await central.write(protocol.UUID_CONTROL, protocol.cmd_zero())
            await vi.run_for(0.2)
            out["new"] = [protocol.decode_reply(v).error for _, v in replies]
            await vi.wait_stored()
            await vi.run_for(0.2)
            rec = await vi.store.record(SEC_OUR, 0, key)
            out["authenticated"] = rec is not None and rec.authenticated
        await radio.close()
        return out

    got = run(main())
    assert got["old"] == 0x05
    assert got["new"] == [protocol.ERR_OK]
    assert got["authenticated"] is True


def test_two_bonded_centrals_each_get_every_step_and_their_own_backfill():
    """The owner's phone and laptop at once: each has its own event stream; one that
    joins late asks for a backfill and gets the walk so far, the other's stream goes
    on untouched."""

    async def main():
        radio = VirtualRadio()
        async with VirtualInsole(TRACE, radio=radio, paused=True) as vi:
            phone = await _owner(vi, radio)
            first = await phone.subscribe(protocol.UUID_STEP_EVENT)
            await vi.run_until(30.0)
            laptop = await _owner(vi, radio)
            second = await laptop.subscribe(protocol.UUID_STEP_EVENT)
            replies = await laptop.subscribe(protocol.UUID_CONTROL)
            await laptop.write(protocol.UUID_CONTROL, protocol.cmd_backfill(0))
            await vi.run_to_end()
            await vi.run_for(1.0)
            backfill = [protocol.decode_reply(v) for _, v in replies]
        await radio.close()
        return ([protocol.decode_event(v) for _, v in first],
                [protocol.decode_event(v) for _, v in second], backfill)

    first, second, backfill = run(main())
    ref = reference_events()
    assert as_reference(first) == ref
    assert backfill[0].op == protocol.OP_BACKFILL and backfill[0].ok
    # the late one: its replay from event 0, then the live events, each event once
    seqs = sorted({e.seq for e in second})
    assert seqs == list(range(seqs[-1] + 1)) and len(second) == len(seqs)
    assert as_reference(sorted(second, key=lambda e: e.seq)) == ref


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
