# The insole's GATT server on MicroPython's low-level bluetooth API.
#
# One connection at a time (advertising stops when a central connects and starts
# again when it leaves). The bluetooth module is passed in (ble object and UUID
# class) so that only app.py imports it.
#
# The IRQ handler runs in NimBLE's task on an ESP32, between any two lines of the
# main loop. It must never raise: the binding then disables it for good
# (extmod/modbluetooth.c, "Disable the BLE IRQ handler") and the insole hears no
# connect, write or pairing again until it reboots. So everything in it is guarded,
# data from the stack is checked before use, and it only records what happened:
# Control writes are queued for the sampling loop, bond changes stay in RAM and
# flush() (main loop) writes the bond file.
#
# The handler is registered before active(True): that call already asks it for
# the device's IRK and the bonded peers' IRKs (modbluetooth_nimble.c load_irk(),
# the order of MicroPython's ble_bonding_peripheral.py). Registered later, every
# bonded phone with a private address is a stranger after a reboot.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


import binascii

import protocol as P

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_MTU_EXCHANGED = const(21)
_IRQ_CONNECTION_UPDATE = const(27)
_IRQ_ENCRYPTION_UPDATE = const(28)
_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)

_FLAG_READ = const(0x0002)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)
_FLAG_WRITE_ENCRYPTED = const(0x1000)

_IO_NO_INPUT_OUTPUT = const(3)  # "just works" pairing: the insole has no display
_ENOMEM = const(12)
_ADV_INTERVAL_US = const(100000)
_ADV_FLAGS = const(0x01)
_ADV_UUID16 = const(0x03)
_ADV_UUID128 = const(0x07)
_ADV_NAME = const(0x09)
_ADV_APPEARANCE = const(0x19)
_APPEARANCE_ON_SHOE = const(0x0443)  # Running Walking Sensor: On-Shoe
_MAX_COMMANDS = const(4)
_DEFAULT_MTU = const(23)
_MAX_MTU = const(527)  # BLE_ATT_MTU_MAX
_U16 = const(0xFFFF)
_COUNT_MAX = const(0x1FFFFFFF)

MANUFACTURER = "Open Insole"
MODEL = "Insole"

# notify() results
SENT = const(0)
NO_LINK = const(1)
NO_MEMORY = const(2)  # OSError(ENOMEM): the stack is out of buffers, retry later
FAILED = const(3)


def _services(UUID):
    rd, nt = _FLAG_READ, _FLAG_NOTIFY
    insole = (
        UUID(P.UUID_SERVICE),
        (
            (UUID(P.UUID_STEP_EVENT), nt),
            (UUID(P.UUID_STATUS), rd | nt),
            (UUID(P.UUID_CONTROL), _FLAG_WRITE | _FLAG_WRITE_ENCRYPTED | nt),
            (UUID(P.UUID_RAW), nt),
        ),
    )
    rsc = (UUID(0x1814), ((UUID(0x2A53), nt), (UUID(0x2A54), rd), (UUID(0x2A5D), rd)))
    info = (
        UUID(0x180A),
        ((UUID(0x2A29), rd), (UUID(0x2A24), rd), (UUID(0x2A27), rd), (UUID(0x2A26), rd)),
    )
    battery = (UUID(0x180F), ((UUID(0x2A19), rd | nt),))
    return (insole, rsc, info, battery)


def _ad(kind, data):
    return bytes((len(data) + 1, kind)) + data


def _uuid128_le(text):
    b = binascii.unhexlify(text.replace("-", ""))
    return bytes(b[i] for i in range(len(b) - 1, -1, -1))


def _u16(x):
    """x when the stack could have sent it as a handle or a size, else -1."""
    return x if type(x) is int and 0 <= x <= _U16 else -1


def _small(x):
    """x when it is an int within an ESP32 small int (bools are not), else -1."""
    return x if type(x) is int and -1 < x <= _COUNT_MAX else -1


def _bytes(x):
    """A key or value from the stack as bytes (None when it is not a buffer)."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)  # the memoryview dies when the handler returns
    return None


class InsoleBLE:
    def __init__(self, ble, UUID, log, board_name, bonds=None):
        self._ble = ble
        self._log = log
        self._bonds = bonds  # bonds.Bonds, or None: nothing survives a reboot
        self.conn = -1  # connection handle, -1 when nobody is connected
        self.encrypted = False
        self.mtu = _DEFAULT_MTU
        self.links = 0  # connections so far: lets the app notice a new one
        self.nomem = 0  # ENOMEM refusals seen
        self.irq_errors = 0  # exceptions caught in the IRQ handler (saturates)
        self._commands = []  # (data, encrypted, conn) waiting for the sampling loop
        self._adv = None
        self._adv_due = False  # advertising must (re)start: the main loop retries
        self._adv_failing = False
        self._resp = _ad(_ADV_UUID128, _uuid128_le(P.UUID_SERVICE)) + _ad(
            _ADV_APPEARANCE, bytes((_APPEARANCE_ON_SHOE & 0xFF, _APPEARANCE_ON_SHOE >> 8))
        )
        self.h_event = self.h_status = self.h_control = self.h_raw = -1
        self.h_rsc = self.h_battery = -1
        ble.irq(self._irq)  # before active(True): see the top of this file
        ble.active(True)  # the ESP32 gives up after 2 s (OSError): app.py's WDT resets
        ble.config(bond=True, le_secure=True, mitm=False, io=_IO_NO_INPUT_OUTPUT)
        (
            (self.h_event, self.h_status, self.h_control, self.h_raw),
            (self.h_rsc, h_feature, h_location),
            (h_maker, h_model, h_board, h_fw),
            (self.h_battery,),
        ) = ble.gatts_register_services(_services(UUID))
        ble.gatts_write(h_feature, bytes((P.RSC_FEATURES & 0xFF, P.RSC_FEATURES >> 8)))
        ble.gatts_write(h_location, bytes((P.RSC_LOCATION_IN_SHOE,)))
        for h, text in ((h_maker, MANUFACTURER), (h_model, MODEL), (h_board, board_name),
                        (h_fw, P.VERSION)):
            ble.gatts_write(h, text.encode())

    @property
    def connected(self):
        return self.conn >= 0

    def set_name(self, name):
        """Advertise as name from the next advertising on."""
        self._adv = (_ad(_ADV_FLAGS, b"\x06") + _ad(_ADV_NAME, name.encode())
                     + _ad(_ADV_UUID16, b"\x14\x18"))
        self._ble.config(gap_name=name)

    def advertise(self):
        """Start advertising; True when the stack took it. When it did not (ENOMEM
        with every connection slot taken, say), flush() tries again."""
        self._adv_due = True
        try:
            self._ble.gap_advertise(_ADV_INTERVAL_US, adv_data=self._adv, resp_data=self._resp)
        except OSError as e:
            if not self._adv_failing:  # one line per outage, not one per retry
                self._adv_failing = True
                self._log("ble", "advertise %s" % e)
            return False
        self._adv_due = False
        self._adv_failing = False
        return True

    def flush(self):
        """The main loop's part of the IRQs (call it often; allocates nothing while
        nothing is pending): writes changed bonds to flash, restarts advertising
        that failed to start."""
        bonds = self._bonds
        if bonds is not None and bonds.dirty:
            bonds.flush()
        if self._adv_due and self.conn < 0:
            self.advertise()

    # ---- the IRQ handler ----------------------------------------------------
    def _irq(self, event, data):
        try:
            return self._on_irq(event, data)
        except Exception as e:  # a raise would disable the handler for good
            n = self.irq_errors
            if n < _COUNT_MAX:
                self.irq_errors = n + 1
            if n & (n + 1) == 0:  # errors 1, 2, 4, 8, ...: a storm stays a few lines
                try:
                    self._log("ble", "irq error %d: %s" % (n + 1, type(e).__name__))
                except Exception:
                    pass
            return None

    def _on_irq(self, event, data):
        if type(data) is not tuple:
            return None
        n = len(data)
        if event == _IRQ_CENTRAL_CONNECT:
            conn = _u16(data[0]) if n == 3 else -1
            if conn >= 0:
                self.encrypted = False
                self.mtu = _DEFAULT_MTU
                self.conn = conn
                self.links = (self.links + 1) & _U16
                self._adv_due = False  # a connection ends advertising
                self._log("ble", "connect %d" % conn)
        elif event == _IRQ_CENTRAL_DISCONNECT:
            conn = _u16(data[0]) if n == 3 else -1
            if conn >= 0:
                if conn == self.conn:
                    self.conn = -1
                    self.encrypted = False
                self._log("ble", "disconnect %d" % conn)
                if self.conn < 0:  # not while the central that replaced it is on
                    self.advertise()
        elif event == _IRQ_GATTS_WRITE:
            if n == 2 and data[1] == self.h_control and self.conn >= 0 \
                    and _u16(data[0]) == self.conn:
                self._queue(self._ble.gatts_read(self.h_control))
        elif event == _IRQ_ENCRYPTION_UPDATE:
            if n == 5 and _u16(data[0]) == self.conn >= 0:
                self.encrypted = _small(data[1]) > 0
                self._log("ble", "encrypted %d bonded %d" % (self.encrypted, _small(data[3]) > 0))
        elif event == _IRQ_MTU_EXCHANGED:
            if n == 2 and _u16(data[0]) == self.conn >= 0:
                mtu = _u16(data[1])
                if _DEFAULT_MTU <= mtu <= _MAX_MTU:
                    self.mtu = mtu
        elif event == _IRQ_CONNECTION_UPDATE:
            if n == 5:
                self._log("ble", "interval %d" % _small(data[1]))
        elif event == _IRQ_GET_SECRET:
            if n == 3:
                return self._get_secret(data[0], data[1], data[2])
        elif event == _IRQ_SET_SECRET:
            return n == 3 and self._set_secret(data[0], data[1], data[2])
        return None

    def _queue(self, value):
        if len(self._commands) < _MAX_COMMANDS:
            self._commands.append((bytes(value), self.encrypted, self.conn))
        else:
            self.reply(bytes((value[0] if value else 0, P.ERR_BUSY)))

    def _get_secret(self, sec_type, index, key):
        bonds = self._bonds
        if bonds is None or _small(sec_type) < 0 or _small(index) < 0:
            return None
        if key is not None:
            key = _bytes(key)
            if key is None:
                return None
        value = bonds.get(sec_type, index, key)
        return value if isinstance(value, bytes) else None

    def _set_secret(self, sec_type, key, value):
        # The answer goes back to NimBLE: False on a write makes it unpair the oldest
        # peer and retry; True on deleting something that is not there makes it
        # delete again, for ever (ble_store_util_delete_all). So a delete says
        # whether there was something to delete.
        bonds = self._bonds
        key = _bytes(key)
        if bonds is None or key is None or _small(sec_type) < 0:
            return False
        if value is None:
            if bonds.get(sec_type, 0, key) is None:
                return False
        else:
            value = _bytes(value)
            if value is None:
                return False
        return bool(bonds.set(sec_type, key, value))

    # ---- the main loop's side -----------------------------------------------
    def next_command(self):
        """(data, encrypted) of the oldest queued Control write, or None. Writes of a
        central that has left since are dropped: they are not the next one's."""
        while self._commands:
            data, encrypted, conn = self._commands.pop(0)
            if conn == self.conn:
                return (data, encrypted)
        return None

    def notify(self, handle, data):
        """Send one notification now; returns SENT, NO_LINK, NO_MEMORY or FAILED."""
        conn = self.conn
        if conn < 0:
            return NO_LINK
        try:
            self._ble.gatts_notify(conn, handle, data)
        except OSError as e:
            if e.args[0] == _ENOMEM:
                if self.nomem < _U16:
                    self.nomem += 1
                return NO_MEMORY
            self._log("ble", "notify %s" % e)
            return FAILED
        return SENT

    def reply(self, data):
        return self.notify(self.h_control, data)

    def publish(self, handle, data):
        """Update a readable value and notify subscribed centrals (best effort: a
        missed status or RSC update is replaced by the next one)."""
        try:
            self._ble.gatts_write(handle, data, True)
        except OSError as e:
            self._log("ble", "write %s" % e)
