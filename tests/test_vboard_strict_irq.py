"""BLE IRQs reach the firmware where they reach it on an ESP32, and no more kindly.

On the ESP32, NimBLE runs in its own FreeRTOS task and calls the Python IRQ handler
once it holds the GIL (extmod/modbluetooth.c invoke_irq_handler, sync events); the
main thread gives the GIL up every 32 jumps of bytecode (py/vm.c,
MICROPY_PY_THREAD_GIL_VM_DIVISOR = 32 in ports/esp32/mpconfigport.h) and in
time.sleep_ms() (ports/esp32/mphalport.c mp_hal_delay_ms), but not in time.sleep_us(),
which spins with the GIL held (mp_hal_delay_us). So the virtual board hands host
messages to the handler at clock calls and ADC reads (a seeded pseudo-random pick, as
good as any between two lines), in sleep_ms()/sleep()/idle(), and never in sleep_us().
The handler runs with the scheduler locked: no second IRQ inside it."""

from __future__ import annotations

import re

import pytest

from tests.vboard_fakehost import MSG_ADVERTISE, FakeHost

_PRELUDE = """
import time, utime, board, bluetooth
ble = bluetooth.BLE()
got = []
depth = [0, 0]
def irq(event, data):
    if event != 1:
        return
    depth[0] += 1
    depth[1] = max(depth[1], depth[0])
    for _ in range(50):
        time.ticks_us()  # clock calls inside the handler: no IRQ nests here
    got.append(data[0])
    depth[0] -= 1
ble.irq(irq)
ble.active(True)
h = board.fsr_adcs()[0]
h.read_u16()  # trace time 0
ble.gap_advertise(100000, b"go")  # the host sends its messages now
utime.sleep_ms(300)  # wall time: they are all in the board's socket before it goes on
v0 = time.ticks_us()
"""


def _run(code: str, connects: int = 1, env: dict[str, str] | None = None) -> str:
    host = FakeHost(_PRELUDE + code, env=env)
    try:
        assert host.expect(MSG_ADVERTISE) is not None
        for conn in range(1, connects + 1):
            host.connect_central(conn)
    finally:
        out = host.finish()
    assert "Traceback" not in out, out
    return out


def _result(out: str) -> dict[str, str]:
    m = re.search(r"^result (.*)$", out, re.M)
    assert m, out
    return dict(kv.split("=") for kv in m.group(1).split())


_SPIN = """
n = 0
while not got and n < 10000:
    {step}
    n += 1
print("result calls=%d got=%s moved=%d depth=%d" % (
    n, ",".join(str(c) for c in got), time.ticks_diff(time.ticks_us(), v0), depth[1]))
"""


@pytest.mark.parametrize("step", [
    "time.ticks_us()", "time.ticks_ms()", "time.ticks_cpu()", "time.ticks_diff(7, 3)",
    "time.ticks_add(7, 3)", "h.read_u16()", "h.read()", "h.read_uv()",
])
def test_an_irq_arrives_at_a_clock_call_or_adc_read_without_moving_time(step):
    r = _result(_run(_SPIN.format(step=step)))
    assert r["got"] == "1", r  # delivered without any sleep
    assert 1 <= int(r["calls"]) < 10000
    assert r["moved"] == "0"  # delivery only: the virtual clock stood still


def test_the_pick_is_repeatable_and_follows_the_seed():
    seen = {}
    for seed in ("", "", "12345", "12345", "987654"):
        env = {"VBOARD_IRQ_SEED": seed} if seed else None
        seen.setdefault(seed, []).append(_result(_run(_SPIN.format(step="time.ticks_us()"),
                                                      env=env))["calls"])
    for runs in seen.values():
        assert len(set(runs)) == 1  # same seed, same call
    assert len({runs[0] for runs in seen.values()}) > 1  # the seed changes the pattern


def test_a_burst_of_irqs_runs_one_handler_at_a_time():
    r = _result(_run(_SPIN.replace("not got", "len(got) < 5").format(step="time.ticks_us()"),
                     connects=5))
    assert r["got"] == "1,2,3,4,5"  # all of them, in order
    assert r["depth"] == "1"  # never one handler inside another
    assert r["moved"] == "0"


_SEED_OFF = """
for _ in range(2000):
    time.ticks_us(); h.read_u16()
before = len(got)
time.sleep_ms(0)  # gives the GIL up even for 0 ms
print("result before=%d after=%d" % (before, len(got)))
"""


def test_seed_zero_turns_the_extra_delivery_off():
    r = _result(_run(_SEED_OFF, env={"VBOARD_IRQ_SEED": "0"}))
    assert r == {"before": "0", "after": "1"}


_SLEEP_US = """
for _ in range(2000):
    time.sleep_us(100)  # spins with the GIL held on the ESP32
before = len(got)
time.sleep_ms(1)
print("result before=%d after=%d" % (before, len(got)))
"""


def test_sleep_us_holds_the_irq_back_until_the_gil_is_free():
    r = _result(_run(_SLEEP_US, env={"VBOARD_IRQ_SEED": "0"}))
    assert r == {"before": "0", "after": "1"}


_IDLE = """
import machine
before = len(got)
machine.idle()
print("result before=%d after=%d" % (before, len(got)))
"""


def test_machine_idle_lets_an_irq_in():
    # ports/esp32/modmachine.c mp_machine_idle: GIL exit, taskYIELD, GIL enter
    r = _result(_run(_IDLE, env={"VBOARD_IRQ_SEED": "0"}))
    assert r == {"before": "0", "after": "1"}
