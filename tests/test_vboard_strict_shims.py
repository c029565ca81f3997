"""The virtual board's machine and time shims refuse what MicroPython v1.29 on an
ESP32 refuses, and answer what it answers (each point names the MicroPython source
it follows). Standalone runs of the real micropython binary, no host bridge."""

from __future__ import annotations

import numpy as np
import pytest

from host_tools.vboard.process import SHIMS
from tests.mpy import run_micropython

# every snippet prints "label outcome" lines: outcome is the exception's type name
# or "ok" followed by the value
_TRY = (
    "def t(label, f):\n"
    "    try:\n"
    "        r = f()\n"
    "    except Exception as e:\n"
    "        print(label, type(e).__name__)\n"
    "        return\n"
    "    print(label, 'ok', r)\n"
)


@pytest.fixture()
def trace(tmp_path, monkeypatch):
    rows = (np.arange(300 * 3, dtype="<u2").reshape(-1, 3) * 37) | 0x8000
    path = tmp_path / "t.bin"
    path.write_bytes(rows.tobytes())
    monkeypatch.setenv("VBOARD_TRACE", str(path))
    monkeypatch.setenv("VBOARD_RATE", "100")
    for var in ("VBOARD_SOCK", "VBOARD_TICKS0", "VBOARD_LIMIT", "VBOARD_SPEED",
                "VBOARD_BATTERY_MV", "VBOARD_ADC_EFUSE", "VBOARD_RESET_CAUSE",
                "VBOARD_IRQ_SEED"):
        monkeypatch.delenv(var, raising=False)
    return rows


def outcomes(code: str) -> dict[str, str]:
    out = run_micropython(_TRY + code, path=[str(SHIMS)])
    got = {}
    for line in out.splitlines():
        label, _, rest = line.partition(" ")
        got[label] = rest
    return got


def test_adc_constructor_takes_atten_as_keyword_only(trace):
    # ports/esp32/machine_adc.c madc_init_helper: atten is MP_ARG_KW_ONLY, 0..3
    got = outcomes(
        "from machine import ADC, Pin\n"
        "t('positional', lambda: ADC(Pin(36), 3))\n"
        "t('keyword', lambda: repr(ADC(Pin(36), atten=ADC.ATTN_11DB)))\n"
        "t('keyword0', lambda: repr(ADC(Pin(39), atten=ADC.ATTN_0DB)))\n"
        "t('default_is_11db', lambda: repr(ADC(Pin(39))))\n"
        "t('atten4', lambda: ADC(Pin(36), atten=4))\n"
        "t('atten_float', lambda: ADC(Pin(36), atten=3.0))\n"
        "t('unknown_kw', lambda: ADC(Pin(36), width=12))\n"
        "t('init_positional', lambda: ADC(Pin(36)).init(3))\n"
        "t('init_kw', lambda: ADC(Pin(36)).init(atten=2))\n"
    )
    assert got["positional"] == "TypeError"
    assert got["keyword"] == "ok ADC(Pin(36), atten=3)"
    assert got["keyword0"] == "ok ADC(Pin(39), atten=0)"
    assert got["default_is_11db"] == "ok ADC(Pin(39), atten=3)"  # a new ADC() resets it
    assert got["atten4"] == "ValueError"
    assert got["atten_float"] == "TypeError"
    assert got["unknown_kw"] == "TypeError"
    assert got["init_positional"] == "TypeError"
    assert got["init_kw"] == "ok None"


def test_adc_pins_are_the_esp32_adc_gpios(trace):
    # machine_pin.c machine_pin_find: a Pin or a GPIO number; machine_adc.c madc_obj:
    # ADC1 on GPIO32-39, ADC2 on 0, 2, 4, 12-15, 25-27; one object per pin
    got = outcomes(
        "from machine import ADC, Pin\n"
        "t('int_pin', lambda: repr(ADC(34)))\n"
        "t('same_object', lambda: ADC(36) is ADC(Pin(36)))\n"
        "t('adc2', lambda: repr(ADC(Pin(4))))\n"
        "t('gpio1', lambda: ADC(1))\n"
        "t('gpio24', lambda: ADC(24))\n"
        "t('gpio40', lambda: ADC(40))\n"
        "t('name', lambda: ADC('heel'))\n"
        "t('float', lambda: ADC(36.0))\n"
    )
    assert got["int_pin"] == "ok ADC(Pin(34), atten=3)"
    assert got["same_object"] == "ok True"
    assert got["adc2"] == "ok ADC(Pin(4), atten=3)"
    for label in ("gpio1", "gpio24", "gpio40", "name", "float"):
        assert got[label] == "ValueError", label


def test_adc_width_read_and_read_u16_follow_the_bit_width(trace):
    # machine_adc.c: width 9..12 on the ESP32 (adc.h ADC_WIDTH_MIN/MAX), WIDTH_nBIT = n;
    # read() is the raw count, read_u16() scales it up: raw << (16-bits) | raw >> (2*bits-16)
    row0 = int(trace[0][0])
    got = outcomes(
        "from machine import ADC, Pin\n"
        "a = ADC(Pin(36))\n"
        "t('consts', lambda: (ADC.WIDTH_9BIT, ADC.WIDTH_10BIT, ADC.WIDTH_11BIT, ADC.WIDTH_12BIT))\n"
        "t('w13', lambda: a.width(13))\n"
        "t('w8', lambda: a.width(8))\n"
        "t('w_float', lambda: a.width(12.0))\n"
        "t('read12', lambda: (a.read(), a.read_u16()))\n"
        "t('w9', lambda: a.width(ADC.WIDTH_9BIT))\n"
        "t('read9', lambda: (a.read(), a.read_u16()))\n"
        "t('block_shared', lambda: ADC(Pin(39), atten=3) and a.read())\n"
    )
    assert got["consts"] == "ok (9, 10, 11, 12)"
    assert got["w13"] == got["w8"] == "ValueError"
    assert got["w_float"] == "TypeError"
    assert got["read12"] == f"ok ({row0 >> 4}, {row0})"
    raw9 = row0 >> 7
    assert got["read9"] == f"ok ({raw9}, {(raw9 << 7) | (raw9 >> 2)})"
    # a new ADC on the same block sets the block's width back to 12 bits
    assert got["block_shared"] == f"ok {row0 >> 4}"


def test_read_uv_is_whole_millivolts_by_attenuation_and_can_fail(trace, monkeypatch):
    # adc.c madcblock_read_uv_helper: the calibration gives mV, returned * 1000; with
    # no calibration eFuse the scheme is not supported: OSError(EOPNOTSUPP)
    code = (
        "from machine import ADC, Pin\n"
        "a = ADC(Pin(36))\n"
        "t('uv11', lambda: a.read_uv())\n"
        "a.atten(ADC.ATTN_0DB)\n"
        "t('uv0', lambda: a.read_uv())\n"
        "t('atten_bad', lambda: a.atten(7))\n"
    )
    got = outcomes(code)
    uv11 = int(got["uv11"].split()[1])
    uv0 = int(got["uv0"].split()[1])
    assert uv11 % 1000 == 0 and uv0 % 1000 == 0
    assert 0 < uv0 < uv11  # less attenuation, smaller full scale
    assert got["atten_bad"] == "ValueError"
    monkeypatch.setenv("VBOARD_ADC_EFUSE", "0")
    got = outcomes(code + "t('errno', lambda: a.read_uv() if 0 else None)\n"
                   "try:\n    a.read_uv()\nexcept OSError as e:\n    print('eno', e.args[0])\n")
    assert got["uv11"] == "OSError"
    assert got["eno"] == "95"  # EOPNOTSUPP


def test_pins_are_the_esp32_gpios(trace):
    # machine_pin.c: GPIO0-23, 25-27, 32-39 (machine_pin.h); 34-39 input only; value=
    # is keyword-only; one Pin object per GPIO; no named pins on a generic ESP32
    got = outcomes(
        "from machine import Pin\n"
        "t('p24', lambda: Pin(24))\n"
        "t('p40', lambda: Pin(40))\n"
        "t('named', lambda: Pin('led'))\n"
        "t('out34', lambda: Pin(34, Pin.OUT))\n"
        "t('in34', lambda: repr(Pin(34, Pin.IN)))\n"
        "t('value_kw', lambda: Pin(2, Pin.OUT, value=1).value())\n"
        "t('value_pos', lambda: Pin(2, Pin.OUT, None, 1))\n"
        "t('same', lambda: Pin(2) is Pin(2))\n"
    )
    assert got["p24"] == got["p40"] == got["named"] == got["out34"] == "ValueError"
    assert got["in34"] == "ok Pin(34)"
    assert got["value_kw"] == "ok 1"
    assert got["value_pos"] == "TypeError"
    assert got["same"] == "ok True"


def test_ticks_add_refuses_half_a_period(trace):
    # extmod/modtime.c time_ticks_add: OverflowError unless -2**29 < delta < 2**29;
    # ticks arguments are small ints (2**30 is not one on a 31-bit port)
    got = outcomes(
        "import time\n"
        "H = 1 << 29\n"
        "t('max', lambda: time.ticks_add(0, H - 1))\n"
        "t('half', lambda: time.ticks_add(0, H))\n"
        "t('min', lambda: time.ticks_add(0, 1 - H))\n"
        "t('minus_half', lambda: time.ticks_add(0, -H))\n"
        "t('float_delta', lambda: time.ticks_add(0, 1.5))\n"
        "t('float_ticks', lambda: time.ticks_add(1.0, 1))\n"
        "t('big_ticks', lambda: time.ticks_add(1 << 30, 1))\n"
        "t('diff_big', lambda: time.ticks_diff(1 << 30, 0))\n"
        "t('diff_float', lambda: time.ticks_diff(0.5, 0))\n"
        "t('diff_neg', lambda: time.ticks_diff(-1, 0))\n"
        "T = time.ticks_us()\n"
        "t('round_trip', lambda: [time.ticks_diff(time.ticks_add(T, d), T) == d"
        " for d in (H - 1, 1 - H, 12345, -12345)])\n"
    )
    assert got["max"] == f"ok {2**29 - 1}"
    assert got["min"] == f"ok {2**30 - 2**29 + 1}"
    assert got["half"] == got["minus_half"] == "OverflowError"
    assert got["float_delta"] == got["float_ticks"] == got["diff_float"] == "TypeError"
    assert got["big_ticks"] == got["diff_big"] == "OverflowError"
    assert got["diff_neg"] == "ok -1"
    assert got["round_trip"] == "ok [True, True, True, True]"


def test_sleep_arguments_as_on_the_esp32(trace):
    # modtime.c: sleep_ms/sleep_us take ints (mp_obj_get_int) and do nothing for a
    # negative value; sleep() takes a float and truncates to whole ms (mp_hal_delay_ms)
    got = outcomes(
        "import time\n"
        "def took(f):\n"
        "    a = time.ticks_us(); f(); return time.ticks_diff(time.ticks_us(), a)\n"
        "t('ms_float', lambda: time.sleep_ms(1.5))\n"
        "t('us_float', lambda: time.sleep_us(2.0))\n"
        "t('ms_str', lambda: time.sleep_ms('1'))\n"
        "t('ms_neg', lambda: took(lambda: time.sleep_ms(-5)))\n"
        "t('us_neg', lambda: took(lambda: time.sleep_us(-5)))\n"
        "t('s_frac', lambda: took(lambda: time.sleep(0.0105)))\n"
        "t('s_int', lambda: took(lambda: time.sleep(1)))\n"
        "t('s_neg', lambda: time.sleep(-1))\n"
        "t('ms_huge', lambda: time.sleep_ms(1 << 31))\n"
    )
    assert got["ms_float"] == got["us_float"] == got["ms_str"] == "TypeError"
    assert got["ms_neg"] == got["us_neg"] == "ok 0"
    assert got["s_frac"] == "ok 10000"
    assert got["s_int"] == "ok 1000000"
    assert got["s_neg"] == "ValueError"  # undefined on the device (negative float to uint)
    assert got["ms_huge"] == "OverflowError"


def test_ticks_cpu_counts_cpu_cycles(trace):
    # ports/esp32/mphalport.h mp_hal_ticks_cpu: the CPU cycle counter (240 MHz)
    got = outcomes(
        "import time, machine\n"
        "a = time.ticks_cpu(); time.sleep_us(1000); b = time.ticks_cpu()\n"
        "t('cycles', lambda: time.ticks_diff(b, a))\n"
        "machine.freq(80000000)\n"
        "a = time.ticks_cpu(); time.sleep_us(1000); b = time.ticks_cpu()\n"
        "t('cycles80', lambda: time.ticks_diff(b, a))\n"
    )
    assert got["cycles"] == "ok 240000"
    assert got["cycles80"] == "ok 80000"


def test_freq_takes_whole_megahertz(trace):
    # ports/esp32/modmachine.c mp_machine_set_freq: hz // 1000000 in 20/40/80/160/240
    got = outcomes(
        "import machine\n"
        "t('f80_5', lambda: (machine.freq(80500000), machine.freq()))\n"
        "t('f100', lambda: machine.freq(100000000))\n"
        "t('f_float', lambda: machine.freq(160e6))\n"
        "t('f_two', lambda: machine.freq(1, 2))\n"
    )
    assert got["f80_5"] == "ok (None, 80000000)"
    assert got["f100"] == "ValueError"
    assert got["f_float"] == got["f_two"] == "TypeError"


def test_wdt_arguments_and_no_way_to_stop_it(trace):
    # ports/esp32/machine_wdt.c: id must be 0, timeout > 0 (ms, int); WDT() again
    # reconfigures the one watchdog; there is no deinit
    got = outcomes(
        "import machine\n"
        "t('id1', lambda: machine.WDT(1))\n"
        "t('zero', lambda: machine.WDT(timeout=0))\n"
        "t('float', lambda: machine.WDT(timeout=1.5))\n"
        "w = machine.WDT(0, 300)\n"
        "t('same', lambda: machine.WDT(timeout=200) is w)\n"
        "t('deinit', lambda: hasattr(w, 'deinit'))\n"
    )
    assert got["id1"] == got["zero"] == "ValueError"
    assert got["float"] == "TypeError"
    assert got["same"] == "ok True"
    assert got["deinit"] == "ok False"
    # the second WDT() made the timeout 200 ms: 150 ms between feeds is fine, 250 ms
    # resets the board (the process ends with status 3, the shim's reset)
    with pytest.raises(AssertionError) as reset:
        run_micropython(
            "import machine, time\n"
            "w = machine.WDT(0, 300)\n"
            "machine.WDT(timeout=200)\n"
            "for _ in range(5):\n"
            "    time.sleep_ms(150); w.feed()\n"
            "print('fed')\n"
            "time.sleep_ms(250)\n"
            "print('not reached')\n", path=[str(SHIMS)])
    text = str(reset.value)
    assert "exited 3" in text and "fed" in text and "watchdog expired" in text
    assert "not reached" not in text


def test_timer_arguments_as_on_the_esp32(trace):
    # ports/esp32/machine_timer.c: ids -1 (virtual) and 0..3 (hardware), init()
    # arguments keyword-only, no hard timers, period 0 refused; a callback that raises
    # is reported and the timer runs on (py/scheduler.c mp_call_function_1_protected)
    got = outcomes(
        "import machine, time\n"
        "Timer = machine.Timer\n"
        "t('id4', lambda: Timer(4))\n"
        "t('same', lambda: Timer(0) is Timer(0))\n"
        "t('positional', lambda: Timer(0).init(Timer.PERIODIC, 10))\n"
        "t('hard', lambda: Timer(1, period=10, callback=print, hard=True))\n"
        "t('zero', lambda: Timer(1, period=0, callback=print))\n"
        "t('modes', lambda: (Timer.ONE_SHOT, Timer.PERIODIC))\n"
        "n = [0]\n"
        "def cb(tm):\n"
        "    n[0] += 1\n"
        "    raise ValueError('from the callback')\n"
        "tm = Timer(-1, mode=Timer.PERIODIC, period=20, callback=cb)\n"
        "time.sleep_ms(100)\n"
        "tm.deinit()\n"
        "t('fired', lambda: n[0])\n"
    )
    assert got["id4"] == got["hard"] == got["zero"] == "ValueError"
    assert got["same"] == "ok True"
    assert got["positional"] == "TypeError"
    assert got["modes"] == "ok (0, 1)"
    assert got["fired"] == "ok 5"


def test_reset_cause_comes_from_the_host(trace, monkeypatch):
    # modmachine.c mp_machine_reset_cause: PWRON_RESET after power-on, WDT_RESET after
    # the watchdog, HARD_RESET after machine.reset(); the host says which boot this is
    code = "import machine\nt('cause', lambda: machine.reset_cause())\n"
    assert outcomes(code)["cause"] == "ok 1"
    monkeypatch.setenv("VBOARD_RESET_CAUSE", "3")
    assert outcomes(code)["cause"] == "ok 3"


def test_virtual_board_wires_esp32_adc_pins(trace, monkeypatch):
    # the FSRs on ADC1 pins as on the DevKitC, the cell through a halving divider read
    # with read_uv() as boards/esp32_common.py does, the LED on an output GPIO
    monkeypatch.setenv("VBOARD_BATTERY_MV", "3900")
    got = outcomes(
        "import board\n"
        "t('fsr', lambda: [repr(a) for a in board.fsr_adcs()])\n"
        "t('mv', lambda: board.battery_mv())\n"
        "t('led', lambda: repr(board.status_led()))\n"
    )
    assert got["fsr"] == ("ok ['ADC(Pin(36), atten=3)', 'ADC(Pin(39), atten=3)', "
                          "'ADC(Pin(34), atten=3)']")
    assert abs(int(got["mv"].split()[1]) - 3900) <= 4
    assert got["led"] == "ok Pin(2)"
    monkeypatch.setenv("VBOARD_ADC_EFUSE", "0")
    assert outcomes("import board\nt('mv', lambda: board.battery_mv())\n")["mv"] == "OSError"
