"""The virtual board's bluetooth shim against a real bumble central, with a minimal
peripheral (tests/fixtures/mini_peripheral/main.py) instead of the insole firmware:
IRQ codes and data shapes, handles, MTU 23 truncation and MTU exchange, write
truncation to the value buffer, encrypted writes, OSError(ENOMEM), disconnects."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import numpy as np
import pytest

from host_tools.vboard.central import Central
from host_tools.vboard.insole import VirtualInsole
from host_tools.vboard.radio import VirtualRadio

MINI = Path(__file__).resolve().parent / "fixtures" / "mini_peripheral"
TX = "6e400003-b5a3-f393-e0a9-e50e24dcca9e"
RX = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"
SEC = 0xFFE1


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _session(check):
    radio = VirtualRadio()
    trace = np.full((200, 3), 1000, dtype=np.int32)
    # paused: the clock stands still, IRQs still arrive (as in a sleep)
    vi = VirtualInsole(trace, radio=radio, firmware_dir=MINI, paused=True)
    await vi.start()
    try:
        central = Central(await radio.central())
        await central.connect(vi)
        await check(vi, central)
    finally:
        await vi.stop()
        await radio.close()


def test_connect_irq_handles_and_mtu_truncation():
    async def check(vi, central):
        m = await vi.wait_log(r"^handles (\d+) (\d+) (\d+) mac (\w+)")
        # the handles the firmware got are the ATT handles the central discovered
        assert [int(m.group(i)) for i in (1, 2, 3)] == vi.handles[0]
        assert central.characteristic(TX).handle == int(m.group(1))
        assert central.characteristic(RX).handle == int(m.group(2))
        assert m.group(4).upper() == vi.address.replace(":", "")
        # _IRQ_CENTRAL_CONNECT: (conn_handle, addr_type, addr) with addr a memoryview
        c = await vi.wait_log(r"^IRQ 1 (\d+) (\d) (\w{12}) memoryview$")
        own = central.device.random_address
        assert c.group(3) == bytes(reversed(bytes(own))).hex()
        assert int(c.group(2)) == int(own.address_type) & 1
        # GAP device name follows config(gap_name=...)
        assert (await central.read(0x2A00)) == b"mini"
        got = await central.subscribe(TX)
        await central.write(RX, b"notify:30")
        await vi.wait_log(r"^notify ok")
        await _wait(lambda: len(got) == 1)
        assert got[0][1] == bytes(range(20))  # MTU 23: cut to 20 bytes
        assert await central.request_mtu(100) == 100
        await vi.wait_log(r"^IRQ 21 \d+ 100 int$")
        await central.write(RX, b"notify:30")
        await _wait(lambda: len(got) == 2)
        assert got[1][1] == bytes(range(30))
        # a central's write is cut to the 20-byte value buffer, as NimBLE does
        await central.write(RX, b"x" * 30)
        await vi.wait_log(r"^rx 20$")
        # _IRQ_CONNECTION_UPDATE: (conn, interval in 1.25 ms, latency, timeout in 10 ms,
        # status)
        await central.connection.update_parameters(30.0, 30.0, 2, 4000.0)
        await vi.wait_log(r"^IRQ 27 \d+ 24 2 400 0 int$")

    run(_session(check))


def test_enomem_switch_and_send_update():
    async def check(vi, central):
        got = await central.subscribe(TX)
        vi.fail_notifications(1)
        await central.write(RX, b"notify:5")
        await vi.wait_log(r"^notify errno 12$")
        await central.write(RX, b"notify:5")
        await _wait(lambda: len(got) == 1)
        assert got[0][1] == bytes(range(5))
        # simulated buffer pool: 2 buffers, no refill while the clock stands still
        vi.set_notify_buffers(2, refill_ms=1000)
        mark = len(vi.log)
        for _ in range(3):
            await central.write(RX, b"notify:3")
        await vi.wait_log(r"^notify errno 12$", start=mark)
        assert [line for _, line in vi.log[mark:] if line.startswith("notify")] == [
            "notify ok", "notify ok", "notify errno 12"]
        vi.set_notify_buffers(0)
        # gatts_write(..., send_update=True) notifies the subscriber, and reads see it
        await central.write(RX, b"update:7")
        await _wait(lambda: len(got) == 4)
        assert got[-1][1] == bytes(range(7))
        assert await central.read(TX) == bytes(range(7))

    run(_session(check))


def test_encrypted_write_needs_pairing_and_disconnect_irq():
    from bumble.att import ATT_INSUFFICIENT_AUTHENTICATION_ERROR
    from bumble.core import ProtocolError

    async def check(vi, central):
        with pytest.raises(ProtocolError) as err:
            await central.write(SEC, b"\x01")
        # NimBLE ble_att_svr_check_perms: with no key stored for this central the
        # answer is "insufficient authentication" (pair), not "encryption"
        assert err.value.error_code == ATT_INSUFFICIENT_AUTHENTICATION_ERROR
        await central.pair()
        # _IRQ_ENCRYPTION_UPDATE: (conn, encrypted, authenticated, bonded, key_size)
        await vi.wait_log(r"^IRQ 28 \d+ 1 0 [01] 16 int$")
        await central.write(SEC, b"\x01")
        sec = central.characteristic(SEC).handle
        await vi.wait_log(rf"^IRQ 3 \d+ {sec} int$")
        # only the encrypted write reached the firmware, not the refused one
        writes = [line for _, line in vi.log if re.match(rf"^IRQ 3 \d+ {sec} int$", line)]
        assert len(writes) == 1
        gone = asyncio.get_running_loop().create_future()
        central.connection.on("disconnection", lambda *_: gone.set_result(True))
        await central.write(RX, b"disc")
        await asyncio.wait_for(gone, 10)
        await vi.wait_log(r"^IRQ 2 \d+ \d \w{12} memoryview$")
        # it advertises again and takes a new connection
        mark = len(vi.log)
        await central.connect(vi)
        await vi.wait_log(r"^IRQ 1 \d+ \d \w{12} memoryview$", start=mark)

    run(_session(check))


async def _wait(pred, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
