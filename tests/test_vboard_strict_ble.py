"""The bluetooth shim is no kinder than MicroPython v1.29's NimBLE binding on an ESP32.

Each test names the MicroPython source it follows (extmod/modbluetooth.c,
extmod/nimble/modbluetooth_nimble.c). The first group runs the shim standalone in the
micropython binary (no host bridge, no radio); the second serves a minimal peripheral
(tests/fixtures/mini_peripheral) to a real bumble central."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess

import numpy as np
import pytest

from host_tools.gait.engine import micropython_binary
from host_tools.vboard.central import Central
from host_tools.vboard.insole import VirtualInsole
from host_tools.vboard.process import SHIMS
from host_tools.vboard.radio import VirtualRadio
from host_tools.vboard.wire import VBoardError
from tests.mpy import run_micropython
from tests.test_vboard_shim import MINI, RX, TX

ENODEV, EINVAL, EBUSY = 19, 22, 16


@pytest.fixture()
def standalone(monkeypatch):
    for var in ("VBOARD_SOCK", "VBOARD_TRACE", "VBOARD_LIMIT", "VBOARD_SPEED"):
        monkeypatch.delenv(var, raising=False)


def shim(code: str) -> list[str]:
    """Run code in micropython with the virtual board's shims; its output lines."""
    return run_micropython(code, path=[str(SHIMS)]).splitlines()


def shim_status(code: str) -> tuple[int, list[str]]:
    """Like shim(), for code that ends the process: (exit status, output lines)."""
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(SHIMS), ".frozen"]))
    proc = subprocess.run([micropython_binary(), "-c", code], capture_output=True,
                          env=env, timeout=60)
    return proc.returncode, proc.stdout.decode().splitlines()


# A handler that records every IRQ as "ev:type,type,..:repr of the data" and keeps
# secrets in a list, as ble_bonding_peripheral.py does.
RECORDER = """
import bluetooth
seen = []
store = []
kept = []
def shown(x):
    return bytes(x) if isinstance(x, memoryview) else x
def handler(ev, d):
    seen.append('%d:%s:%r' % (ev, ','.join(type(x).__name__ for x in d),
                              tuple(shown(x) for x in d)))
    if ev == 29:
        t, i, k = d
        n = 0
        for st, sk, sv in store:
            if st == t:
                if k is None and n == i or k is not None and sk == bytes(k):
                    return sv
                n += 1
        return None
    if ev == 30:
        t, k, v = d
        kept.append(k)
        for e in store:
            if e[0] == t and e[1] == bytes(k):
                store.remove(e)
                if v is None:
                    return True
        if v is None:
            return False
        store.append((t, bytes(k), bytes(v)))
        return True
ble = bluetooth.BLE()
"""


def test_active_loads_the_irk_through_the_handler_before_anything_else(standalone):
    """modbluetooth_nimble.c load_irk(), run from sync_cb() inside active(True), after
    NimBLE's ble_hs_sync() restored the peer IRKs once: GET_SECRET(2, i, None) until
    none, GET_SECRET(10, 0, b"irk"), a new IRK stored with SET_SECRET(10, b"irk", 16
    bytes), then the peer IRKs again. Data tuples carry ints and memoryviews (None for
    a search), and the memoryviews are dead once the handler has returned."""
    out = shim(RECORDER + """
ble.irq(handler)
ble.active(True)
print(len(store), store[0][:2], len(store[0][2]))
print(bytes(kept[0]) == b'irk')
for line in seen:
    print(line)
""")
    events = out[2:]
    assert events[0] == "29:int,int,NoneType:(2, 0, None)"
    assert events[1] == "29:int,int,memoryview:(10, 0, b'irk')"
    assert re.fullmatch(r"30:int,memoryview,memoryview:\(10, b'irk', b.+\)", events[2])
    assert events[3] == "29:int,int,NoneType:(2, 0, None)"
    assert len(events) == 4
    assert out[0] == "1 (10, b'irk') 16"
    assert out[1] == "False"  # the key's memoryview pointed into the stack's memory


def test_active_with_a_stored_irk_and_peers_reads_them_all(standalone):
    out = shim(RECORDER + """
store.append((2, b'\\x01peer01', b'P' * 80))
store.append((2, b'\\x00peer02', b'Q' * 80))
store.append((10, b'irk', b'I' * 16))
ble.irq(handler)
ble.active(True)
for line in seen:
    print(line)
""")
    assert out == [
        "29:int,int,NoneType:(2, 0, None)", "29:int,int,NoneType:(2, 1, None)",
        "29:int,int,NoneType:(2, 2, None)",
        "29:int,int,memoryview:(10, 0, b'irk')",
        "29:int,int,NoneType:(2, 0, None)", "29:int,int,NoneType:(2, 1, None)",
        "29:int,int,NoneType:(2, 2, None)"]


def test_a_record_that_is_not_a_store_value_ends_the_walk(standalone):
    """ble_secret_store_read(): a value that is not sizeof(struct ble_store_value_sec)
    (80 bytes) is "not found"; an IRK that is not 16 bytes is replaced (load_irk)."""
    out = shim(RECORDER + """
store.append((2, b'\\x01peer01', b'P' * 79))
store.append((2, b'\\x00peer02', b'Q' * 80))
store.append((10, b'irk', b'I' * 15))
ble.irq(handler)
ble.active(True)
for line in seen:
    print(line[:40])
""")
    assert out == ["29:int,int,NoneType:(2, 0, None)",
                   "29:int,int,memoryview:(10, 0, b'irk')",
                   "30:int,memoryview,memoryview:(10, b'irk'",
                   "29:int,int,NoneType:(2, 0, None)"]


def test_a_store_that_answers_every_index_never_lets_the_stack_sync(standalone):
    """ble_store_iterate() walks until ENOENT with a uint8_t index: a handler that
    ignores the index keeps NimBLE in its sync for ever and active(True) gives up
    (mp_bluetooth_init: NIMBLE_STARTUP_TIMEOUT, MP_ETIMEDOUT)."""
    out = shim("""
import bluetooth
n = []
def handler(ev, d):
    n.append(ev)
    if ev == 29 and d[0] == 2:
        return b'P' * 80
ble = bluetooth.BLE()
ble.irq(handler)
try:
    ble.active(True)
except OSError as e:
    print('OSError', e.args[0], ble.active(), len(n))
""")
    assert out == ["OSError 116 False 256"]  # ESP-IDF newlib's ETIMEDOUT


def test_a_secret_that_is_not_a_buffer_restarts_the_board(standalone):
    """mp_bluetooth_gap_on_get_secret() takes the buffer after the handler has
    returned, outside its exception frame: NimBLE's task faults (nlr_jump_fail,
    esp_restart on the ESP32)."""
    status, out = shim_status("""
import bluetooth
ble = bluetooth.BLE()
ble.irq(lambda ev, d: True)
ble.active(True)
print('not reached')
""")
    assert status == 3  # the virtual board's reset
    assert out == ["NLR jump failed: _IRQ_GET_SECRET returned a bool, not a buffer"]


def test_a_handler_set_after_active_misses_the_store(standalone):
    out = shim(RECORDER + """
store.append((10, b'irk', b'I' * 16))
ble.active(True)
ble.irq(handler)
print(len(seen))
""")
    assert out == ["0"]


def test_an_exception_in_the_handler_disables_it(standalone):
    """modbluetooth.c invoke_irq_handler_run_protected(): the exception is printed and
    the handler replaced by None until irq() is called again."""
    out = shim("""
import bluetooth
calls = []
def handler(ev, d):
    calls.append(ev)
    raise ValueError('boom')
ble = bluetooth.BLE()
ble.irq(handler)
ble.active(True)
print('calls', calls)
ble.active(True)
print('calls', calls)
""")
    assert out[0] == "Unhandled exception in IRQ callback handler"
    assert "ValueError: boom" in out
    assert out[-2:] == ["calls [29]", "calls [29]"]


def test_config_reads_back_only_what_the_binding_reads(standalone):
    """modbluetooth.c bluetooth_ble_config(): with sync events (ports/esp32
    mpconfigport.h) only gap_name, mac and mtu can be read; rxbuf does not exist at
    all; addr_mode, bond, mitm, io and le_secure are write-only."""
    out = shim("""
import bluetooth
ble = bluetooth.BLE()
def attempt(f):
    try:
        r = f()
        print('ok', repr(r))
    except Exception as e:
        print(type(e).__name__, e.args[0] if e.args else '')
attempt(lambda: ble.config('gap_name'))
attempt(lambda: ble.config('mtu'))
attempt(lambda: ble.config('mac'))
attempt(lambda: ble.config(bond=True, le_secure=True, mitm=False, io=3))
ble.active(True)
attempt(lambda: ble.config('mtu'))
attempt(lambda: type(ble.config('mac')[1]).__name__)
for key in ('rxbuf', 'bond', 'mitm', 'io', 'le_secure', 'addr_mode', 'name'):
    attempt(lambda: ble.config(key))
attempt(lambda: ble.config(rxbuf=512))
attempt(lambda: ble.config(mtu=527))
attempt(lambda: ble.config('mtu'))
attempt(lambda: ble.config(mtu=528))
attempt(lambda: ble.config(mtu=22))
attempt(lambda: ble.config(gap_name='x' * 32))
attempt(lambda: ble.config(gap_name='insole'))
attempt(lambda: ble.config('gap_name'))
attempt(lambda: ble.config(io='none'))
attempt(lambda: ble.config('mtu', mtu=100))
attempt(lambda: ble.config())
""")
    assert out == [
        "ok b'MPY ESP32'",
        f"OSError {ENODEV}",  # mp_bluetooth_get_preferred_mtu: not active
        f"OSError {ENODEV}",  # mp_bluetooth_get_current_address: not active
        "ok None",  # the pairing settings only set ble_hs_cfg
        "ok 256",  # MicroPython's preferred MTU (MP_BLUETOOTH_DEFAULT_ATTR_LEN + 3...)
        "ok 'bytes'",
        *(["ValueError unknown config param"] * 7),
        "ValueError unknown config param",
        "ok None",
        "ok 527",
        f"OSError {EINVAL}",  # ble_att_set_preferred_mtu: 23..527
        f"OSError {EINVAL}",
        f"OSError {EINVAL}",  # the GAP name holds 31 bytes (ESP-IDF default)
        "ok None",
        "ok b'insole'",
        "TypeError can't convert str to int",
        "TypeError can't specify pos and kw args",
        "TypeError must query one param",
    ]


def test_gatts_calls_take_buffers_and_answer_as_the_binding_does(standalone):
    """modbluetooth.c: gatts_write returns the length written and wants a buffer;
    gatts_read ignores the binding's error (an unknown handle reads b""); gatts_notify
    checks its data before the connection; mp_bluetooth_gatts_db_resize() empties the
    value; the stack answers ENODEV while off (modbluetooth_nimble.c)."""
    out = shim("""
import bluetooth
ble = bluetooth.BLE()
def attempt(f):
    try:
        print('ok', repr(f()))
    except Exception as e:
        print(type(e).__name__, e.args[0] if e.args else '')
svc = (bluetooth.UUID(0x180F), ((bluetooth.UUID(0x2A19), 0x12),))
attempt(lambda: ble.gap_advertise(100000, b'\\x02\\x01\\x06'))
attempt(lambda: ble.gatts_register_services((svc,)))
attempt(lambda: ble.gatts_read(3))
ble.active(True)
((h,),) = ble.gatts_register_services((svc,))
attempt(lambda: ble.gatts_write(h, b'abc'))
attempt(lambda: ble.gatts_write(h, 5))
attempt(lambda: ble.gatts_write(h + 50, b'x'))
attempt(lambda: ble.gatts_read(h + 50))
attempt(lambda: ble.gatts_read(h))
attempt(lambda: ble.gatts_set_buffer(h, 40))
attempt(lambda: ble.gatts_read(h))
attempt(lambda: ble.gatts_notify(7, h, 123))
attempt(lambda: ble.gatts_notify(7, h, b'x'))
attempt(lambda: ble.gap_advertise(100000, b'\\x00' * 32))
attempt(lambda: ble.gap_advertise(100000, b'\\x02\\x01\\x06'))
attempt(lambda: ble.gatts_register_services((svc,)))
""")
    assert out == [
        f"OSError {ENODEV}",
        f"OSError {ENODEV}",
        "ok b''",
        "ok 3",
        "TypeError object with buffer protocol required",
        f"OSError {EINVAL}",
        "ok b''",
        "ok b'abc'",
        "ok None",
        "ok b''",
        "TypeError object with buffer protocol required",
        "OSError 128",  # MP_ENOTCONN: ESP-IDF's newlib errno
        f"OSError {EINVAL}",  # ble_gap_adv_set_data: more than 31 bytes
        "ok None",
        f"OSError {EBUSY}",  # ble_gatts_reset() while advertising
    ]


# ---------------------------------------------------------------- over the radio


async def _session(check):
    radio = VirtualRadio()
    trace = np.full((200, 3), 1000, dtype=np.int32)
    vi = VirtualInsole(trace, radio=radio, firmware_dir=MINI, paused=True)
    await vi.start()
    try:
        central = Central(await radio.central())
        await central.connect(vi)
        await check(vi, central)
    finally:
        await vi.stop()
        await radio.close()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _until(pred, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def test_after_a_raise_the_firmware_hears_nothing_more():
    """modbluetooth.c: "Disable the BLE IRQ handler" - the central still connects,
    writes and leaves, the firmware sees none of it."""

    async def check(vi, central):
        await vi.wait_log(r"^IRQ 1 ")
        await central.write(RX, b"raise")
        await vi.wait_log(r"^Unhandled exception in IRQ callback handler$")
        mark = len(vi.log)
        await central.write(RX, b"len")
        await central.disconnect()
        await vi.run_for(0.5)
        assert not [line for _, line in vi.log[mark:] if line.startswith(("IRQ", "rx"))]
        assert vi.advertising is False  # nobody restarts advertising

    run(_session(check))


def test_reads_raise_read_request_and_its_answer_decides():
    """_IRQ_GATTS_READ_REQUEST (4) is raised on the ESP32 (modbluetooth_nimble.c
    characteristic_access_cb -> mp_bluetooth_gatts_on_read_request): a non-zero int
    from the handler is the ATT error the central gets, None lets the read go on; the
    value read is the one after the handler ran."""
    from bumble.core import ProtocolError

    async def check(vi, central):
        tx = central.characteristic(TX).handle
        await central.write(RX, b"update:3")
        assert await central.read(TX) == bytes(range(3))
        await vi.wait_log(rf"^IRQ 4 \d+ {tx} int$")
        await central.write(RX, b"deny:5")  # insufficient authentication
        with pytest.raises(ProtocolError) as err:
            await central.read(TX)
        assert err.value.error_code == 5
        await central.write(RX, b"deny:0")
        await central.write(RX, b"fresh")  # the handler writes a new value on each read
        assert await central.read(TX) == b"fresh1"
        assert await central.read(TX) == b"fresh2"
        # gatts_notify() without data: NimBLE reads the value through the same
        # callback, for no connection (ble_att_svr_read_handle, BLE_HS_CONN_HANDLE_NONE)
        got = await central.subscribe(TX)
        mark = len(vi.log)
        await central.write(RX, b"stored")
        await vi.wait_log(r"^stored ok$", start=mark)
        assert any(line == f"IRQ 4 65535 {tx} int" for _, line in vi.log[mark:])
        await _until(lambda: got)
        assert got[-1][1] == b"fresh3"
        await central.write(RX, b"deny:3")
        await central.write(RX, b"stored")
        await vi.wait_log(r"^stored errno -9$")  # BLE_HS_EAPP, passed through negated

    run(_session(check))


def test_irq_data_is_ints_and_memoryviews():
    """modbluetooth.c invoke_irq_handler_run(): numbers become small ints (encryption
    update's flags too, mp_bluetooth_gatts_on_encryption_update), addresses and keys
    memoryviews, with the binding's arity per event."""

    async def check(vi, central):
        await central.pair()
        m = await vi.wait_log(r"^IRQ 28 (.*)$")
        assert re.fullmatch(r"\d+ 1 0 [01] 16 int", m.group(1)), m.group(1)
        await vi.wait_log(r"^shape 30 ")  # NimBLE stores the keys, then reports encryption
        shapes = [line for _, line in vi.log if line.startswith("shape ")]
        assert "shape 1 int,int,memoryview" in shapes
        assert "shape 28 int,int,int,int,int" in shapes
        assert "shape 30 int,memoryview,memoryview" in shapes

    run(_session(check))


def test_answering_true_to_every_delete_leaves_nimble_spinning():
    """ble_store_util_delete_all() deletes until the store says there is nothing
    left; a central that pairs again makes NimBLE drop its old bond first (the
    binding's BLE_GAP_EVENT_REPEAT_PAIRING), so a handler that answers True to a
    delete of nothing hangs the stack. The virtual board stops there."""

    async def check(vi, central):
        await central.pair()
        await vi.wait_stored()
        await central.write(RX, b"sloppy")
        await central.disconnect()
        await central.connect(vi)
        try:
            await central.pair()  # again, on a new link: the old bond goes first
        except (asyncio.CancelledError, Exception):  # the link dies with the board
            pass
        await vi._wait_for(asyncio.Event(), 10, "the board stopping")

    with pytest.raises(VBoardError, match=r"exited \(status 4\)") as err:
        run(_session(check))
    assert "BLE stack stuck: ble_store_util_delete_all never ends" in str(err.value)


def test_values_follow_the_binding_gatts_db():
    """mp_bluetooth_gatts_db_write() grows a value's buffer to the longest local
    write, so a central's write is then cut there, not at 20 bytes; a notification
    for a handle the central does not know still goes out (ble_gattc_notify_custom
    does not look the handle up when it has data)."""

    async def check(vi, central):
        await central.request_mtu(100)
        await central.write(RX, b"grow:30")
        await vi.wait_log(r"^grown$")
        await central.write(RX, b"y" * 30)
        await vi.wait_log(r"^rx 30$")
        await central.write(RX, b"stray")
        await vi.wait_log(r"^stray ok$")

    run(_session(check))

