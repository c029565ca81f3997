"""The virtual insole: the unchanged firmware in the ``micropython`` unix port, on a real
BLE stack (bumble) in this process.

The firmware (``firmware/main.py``) runs in the MicroPython unix port with the shims
of ``boards/virtual`` first on its path: ``machine`` (the ADC reads a recorded trace),
``time`` (a virtual clock), ``bluetooth`` (MicroPython's low-level BLE API) and
``board``. The ``bluetooth`` shim talks over a unix socket to this module, which
serves the GATT table the firmware registered from a bumble ``Device``. A central
on the same radio sees a real GATT server: ATT reads (each one an
_IRQ_GATTS_READ_REQUEST the firmware may refuse), writes, notifications, MTU exchange,
pairing (the firmware's passkey through _IRQ_PASSKEY_ACTION and gap_passkey()) and
encryption changes reach the firmware as the same IRQs an ESP32 raises, and the
characteristic flags are checked as NimBLE checks them (an authenticated key is a
MITM-protected one: the insole service needs a bond made with the passkey). The
pairing keys are kept by the firmware as NimBLE keeps them (``NimbleStore``: its
records, keys and store walks through _IRQ_SET_SECRET/_IRQ_GET_SECRET), so bonds
survive a restart on the same ``flash_dir``, also with a central that uses a
resolvable private address.

Radio: ``VirtualRadio()`` is bumble's in-process virtual radio (``LocalLink``): any
number of virtual insoles and centrals share it. ``VirtualRadio("usb:0")`` (any
bumble transport string) puts one virtual insole on a real controller instead, so
a phone can connect to it.

Time: the firmware only sees the virtual clock. It moves when the firmware sleeps,
``speed`` times faster than wall time (0 = as fast as the firmware runs). The ADC
returns the trace row for the current virtual time, counted from the first ADC
read (trace time 0). When the trace is exhausted the firmware stops sampling and
the clock stops (``finished()`` returns); ``run_until``/``run_for`` move it on.
Tests use ``paused=True`` and ``run_until`` to place events at exact trace times.

API::

    from host_tools.vboard.central import Central
    from host_tools.vboard.insole import VirtualInsole
    from host_tools.vboard.radio import VirtualRadio

    radio = VirtualRadio()                          # or VirtualRadio("usb:0")
    async with VirtualInsole("walk.csv", side="left", speed=0, radio=radio,
                             paused=True) as vi:
        central = Central(await radio.central())    # radio.central(): a bumble Device
        await central.connect(vi)                   # scan for vi.name, connect, discover
        await central.pair()                        # with vi.passkey: the insole service
        got = await central.subscribe(protocol.UUID_STEP_EVENT)  # [(trace s, bytes)]
        await vi.run_until(30.0)                    # trace seconds; returns time reached
        await central.write(protocol.UUID_CONTROL, protocol.cmd_backfill(0))
        await vi.run_to_end()                       # trace exhausted (clock stops)
        vi.trace_time, vi.log, vi.notifications    # progress and records
    await radio.close()

Without ``paused`` the clock runs by itself; ``await vi.finished()`` waits for the end
of the trace. ``connect(central_device, vi)`` is the bare version of
``Central.connect`` (returns the bumble Connection).

``VirtualInsole`` also offers ``start()``/``stop()`` (what ``async with`` does),
``run_for(seconds)``, ``pause()``, ``resume()``, ``drain()`` (the clock calls end
with it: what the firmware sent so far has reached the radio), ``set_speed(x)``,
``set_notify_buffers(count, refill_ms)`` and ``fail_notifications(n)`` (the firmware's
``gatts_notify`` then raises ``OSError(ENOMEM)`` like a busy NimBLE), ``value(uuid)``
(a characteristic's current value), ``wait_log(regex)``, ``refused`` (ENOMEM count),
``wait_stored()`` (a pairing's keys have reached the firmware), ``fire_irq(event,
data)`` (any IRQ with any data, for fuzzing), ``irqs_delivered()`` (all events sent
so far reached the handler: how many it got, and whether it is still set),
``faults`` (why NimBLE would be stuck: the board is then stopped),
``schedule_outage(at_s, seconds)`` and ``radio_outage(seconds)`` (the radio link gone
for that much trace time, as out of range: centrals are disconnected and nobody hears the
insole advertise; ``in_outage``, ``outages_left``), ``name``,
``address``, ``handles``, ``connections`` and ``device`` (the bumble peripheral).
``radio.central(private=True)`` is a central with LE privacy (an RPA from its own
IRK); ``VirtualRadio.new_private_address(dev)`` gives it a fresh one.

Modules: ``insole`` (VirtualInsole and its clock), ``process`` (the micropython
process, its trace and flash; FIRMWARE, SHIMS), ``bridge`` (the board's socket),
``wire`` (frame types, characteristic flags, VBoardError), ``gatt`` (the firmware's
GATT table), ``pairing`` (connections, pairing, link security), ``access`` (NimBLE's
permission rules), ``bonds`` (NimBLE's bond store: SecRecord, store_key),
``air`` (advertising and radio outages), ``radio`` (VirtualRadio), ``central``
(Central, find, connect, use_passkey).
"""
