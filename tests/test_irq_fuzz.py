"""Random IRQs at the insole's real BLE IRQ handler (firmware/ble_insole.py).

On an ESP32 one exception in the handler disables it for good (extmod/modbluetooth.c),
so the handler must survive anything: event codes from the whole _IRQ_ range and
beyond, data tuples of any length holding ints, huge ints, bools, None, floats, text,
bytes, bytearrays, memoryviews and nested sequences, mixed with well-formed events
of the right shape so the deeper paths (Control writes, secrets, MTU) run too.

- CPython, FakeBLE (tests/fw_fakes.py): 10,000 events straight at the handler, with
  the sampling loop running in between; not one may raise, every answer has the type
  NimBLE takes. Then a central connects, pairs and gets the steps of a walk, and
  advertising comes back when it leaves.
- The micropython binary, virtual board: 2,000 events through the bluetooth shim
  (whose handler-disable rule makes any raise fatal), then a real bumble central over
  the virtual radio gets the steps the detector finds in the trace.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

import numpy as np

from host_tools.ble import protocol as HP
from host_tools.vboard.central import Central
from host_tools.vboard.insole import VirtualInsole
from host_tools.vboard.radio import VirtualRadio
from tests.test_vboard import TRACE, as_reference, reference_events

ROOT = Path(__file__).resolve().parent.parent
for p in (str(ROOT / "firmware"), str(ROOT / "tests")):
    if p not in sys.path:
        sys.path.insert(0, p)

import fw_fakes as F  # noqa: E402
import gaitsynth  # noqa: E402

EVENTS = range(-2, 40)  # the _IRQ_ codes are 1..31; the rest are unknown ones
SEC_TYPES = (1, 2, 10)


class IrqFuzzer:
    """Random (event, data) pairs; handles and connections are drawn partly from
    the ones the firmware really uses, so well-formed events reach their code."""

    def __init__(self, seed: int, handles: list[int], floats: bool = True):
        self.rng = random.Random(seed)
        self.handles = handles
        self.floats = floats
        self.conns = [0, 1, 2, 64, 0xFFFF]
        self.conn = 0  # the connection the last shaped connect announced
        self.keys = [b"irk"]  # keys stored so far: lookups that find something

    def value(self, depth: int = 0):
        r = self.rng
        kind = r.randrange(14 if depth < 2 else 12)
        if kind == 0:
            return r.choice(self.conns)
        if kind == 1:
            return r.choice(self.handles)
        if kind == 2:
            return r.randrange(-(1 << 40), 1 << 40)
        if kind == 3:
            return r.choice((0, 1, -1, 23, 527, 65536, (1 << 29) - 1, 1 << 31))
        if kind == 4:
            return r.choice((True, False))
        if kind == 5:
            return None
        if kind == 6:
            return r.uniform(-1e6, 1e6) if self.floats else r.randrange(100)
        if kind == 7:
            return "".join(r.choice("abc\u00e9\u2603\x00") for _ in range(r.randrange(8)))
        if kind in (8, 9, 10, 11):
            raw = bytes(r.randrange(256) for _ in range(r.choice((0, 1, 3, 7, 16, 80, 200))))
            return (bytes, bytearray, memoryview, memoryview)[kind - 8](raw)
        items = tuple(self.value(depth + 1) for _ in range(r.randrange(4)))
        return items if kind == 12 else list(items)

    def shaped(self, event: int):
        """A tuple of the binding's shape for event, with random contents."""
        r = self.rng
        conn = self.conn if r.random() < 0.6 else r.choice(self.conns)
        if event in (1, 2):
            if event == 1:
                self.conn = conn
            return (conn, r.randrange(4), memoryview(bytes(r.randrange(256) for _ in range(6))))
        if event in (3, 4, 21):
            return (conn, r.choice(self.handles + [r.randrange(1 << 16)]))
        if event in (20,):
            return (conn, r.choice(self.handles), r.randrange(256))
        if event in (27, 28):
            return tuple([conn] + [r.randrange(1 << 12) for _ in range(4)])
        if event == 31:
            return (conn, r.choice((0, 2, 3, 4, 9)), r.randrange(1 << 20))
        if event == 29:
            key = None if r.random() < 0.4 else memoryview(self.key())
            return (r.choice(SEC_TYPES), r.randrange(8 if r.random() < 0.9 else 300), key)
        if event == 30:
            value = None if r.random() < 0.3 else memoryview(
                bytes(r.randrange(256) for _ in range(r.choice((16, 80)))))
            return (r.choice(SEC_TYPES), memoryview(self.key()), value)
        return tuple(self.value() for _ in range(r.randrange(6)))

    def key(self) -> bytes:
        r = self.rng
        if r.random() < 0.7:
            return r.choice(self.keys)
        key = bytes(r.randrange(256) for _ in range(7))
        self.keys = (self.keys + [key])[-6:]
        return key

    def next(self):
        r = self.rng
        event = r.choice(EVENTS) if r.random() < 0.9 else r.randrange(-(1 << 33), 1 << 33)
        if r.random() < 0.5:
            data = self.shaped(event)
        elif r.random() < 0.95:
            data = tuple(self.value() for _ in range(r.randrange(7)))
        else:
            data = self.value()  # not even a tuple
        return event, data


def _fake_insole(samples):
    """fw_fakes.build() with a bond store on the fake flash, so secrets are kept."""
    from ble_insole import InsoleBLE
    from bonds import Bonds
    from config import ConfigStore
    from device import Insole
    from log import Log
    from pairing import PairingWindow

    log = Log(F.LogSink())
    fs = F.MemFS()
    store = ConfigStore("insole.json", log, fs=fs, opener=fs.open)
    ble = F.FakeBLE()
    bonds = Bonds("insole_bonds.json", log, fs=fs, opener=fs.open)
    clock = F.FakeClock()
    radio = InsoleBLE(ble, F.UUID, log, "Test Board", bonds, passkey=123456,
                      window=PairingWindow(clock, log))
    dev = Insole(F.trace_adcs(samples), radio, store, store.load(), log, clock,
                 "1A2B", "Test Board", battery_mv=lambda: 3750)
    return dev, ble, radio, fs


def test_ten_thousand_random_irqs_under_cpython_leave_the_insole_working():
    walk = gaitsynth.make(gaitsynth.Walk(strides_ms=[1000.0] * 60)).astype(np.int64)
    samples = [int(v) for v in walk.ravel()]
    dev, ble, radio, fs = _fake_insole(samples)
    # Control, the one handle whose writes the firmware acts on, drawn more often
    handles = [radio.h_event, radio.h_status, radio.h_raw, radio.h_rsc, radio.h_battery]
    handles += [radio.h_control] * 4
    fuzz = IrqFuzzer(20260819, handles)
    # a read request's answer is an ATT error or 0 (mp_obj_get_int_maybe)
    answers = {4: (int, type(None)), 29: (bytes, type(None)), 30: (bool,)}
    for i in range(10_000):
        event, data = fuzz.next()
        try:
            got = ble.handler(event, data)
        except BaseException as e:  # on the ESP32 this would end BLE for good
            raise AssertionError(f"event {i}: {event} {data!r} raised {e!r}") from e
        # what NimBLE reads back (a non-tuple never comes from the binding)
        want = answers.get(event, (type(None),)) if isinstance(data, tuple) else (type(None),)
        assert isinstance(got, want), (event, data, got)
        if i % 50 == 0:
            dev.run(1)  # the main loop in between: commands, notifications, bond file
    assert radio.irq_errors == 0  # every odd event was turned away, none failed
    # a real central after all that: connect, pair, subscribe, walk
    ble.conn = None
    ble.kicked = []
    ble.connect()
    assert radio.conn == -1 and not radio.encrypted  # no bond: not the event link yet
    radio.open_window("gesture")  # the fuzz may have failed pairings enough to close it
    assert ble.pair()
    assert radio.conn == 64 and radio.encrypted
    ble.subscribe(radio.h_event)
    dev.run()
    events = [HP.decode_event(d) for d in ble.take(radio.h_event)]
    assert sum(isinstance(e, HP.Step) for e in events) >= 50
    ble.disconnect()
    assert ble.advertising is not None  # it advertises again
    assert "insole_bonds.json" in fs.files  # the main loop wrote the bonds


async def _fuzz_the_virtual_board(count: int):
    radio = VirtualRadio()
    async with VirtualInsole(TRACE, radio=radio, paused=True) as vi:
        handles = [h for svc in vi.handles for h in svc]
        fuzz = IrqFuzzer(29, handles)
        for i in range(count):
            vi.fire_irq(*fuzz.next())
            if i % 200 == 199:
                await vi.irqs_delivered()
                await vi.run_for(0.05)  # the main loop runs between the bursts
        raised, handler_set = await vi.irqs_delivered()
        await vi.run_for(0.1)
        advertising = vi.advertising
        central = Central(await radio.central())
        await central.connect(vi)
        await central.pair()
        got = await central.subscribe(HP.UUID_STEP_EVENT)
        start = await vi.run_for(0.0)
        end = await vi.run_until(start + 30.0)
        await vi.run_for(0.5)
        decoded = [HP.decode_event(v) for _, v in got]
        await central.disconnect()
        await vi.wait_log(r"ble disconnect")
        await vi.run_for(0.1)
        log = [line for _, line in vi.log]
        readvertised = vi.advertising
    await radio.close()
    return raised, handler_set, advertising, readvertised, decoded, start, end, log


def test_random_irqs_on_the_virtual_board_leave_it_streaming():
    raised, handler_set, advertising, readvertised, decoded, start, end, log = asyncio.run(
        asyncio.wait_for(_fuzz_the_virtual_board(10_000), 240))
    assert raised >= 10_000 and handler_set  # all reached the handler, and it is still set
    assert not [line for line in log if "Unhandled exception in IRQ" in line]
    assert advertising and readvertised
    steps = [e for e in as_reference(decoded) if e[0] == "S"]
    ref = [e for e in reference_events(end) if e[0] == "S" and e[2] >= start * 1000 + 1500]
    assert len(ref) > 15
    # every step of the walk from a little after the central subscribed reached it
    assert {e[1:3] for e in ref} <= {e[1:3] for e in steps}
