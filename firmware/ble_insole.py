# The insole's GATT server on MicroPython's low-level bluetooth API.
#
# One connection at a time (advertising stops when a central connects and starts
# again when it leaves). The IRQ handler only records what happened: Control
# writes are queued and carried out by the sampling loop between samples, so a
# flash write never runs inside the BLE stack's callback. The bluetooth module is
# passed in (ble object and UUID class) so that only app.py imports it.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


import binascii
import json

import protocol as P
from config import read_json, write_atomic

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
_MAX_SECRETS = const(16)
_DEFAULT_MTU = const(23)

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


class BondStore:
    """Pairing keys kept in a JSON file, so a bonded phone reconnects after a reboot."""

    def __init__(self, path):
        self.path = path

    def load(self):
        data = read_json(self.path)
        out = []
        if isinstance(data, list):
            for item in data:
                try:
                    out.append((int(item[0]), binascii.unhexlify(item[1]),
                                binascii.unhexlify(item[2])))
                except (ValueError, TypeError, IndexError):
                    pass
        return out

    def save(self, secrets):
        rows = [[t, binascii.hexlify(k).decode(), binascii.hexlify(v).decode()]
                for t, k, v in secrets]
        try:
            write_atomic(self.path, json.dumps(rows))
        except OSError:
            pass


class InsoleBLE:
    def __init__(self, ble, UUID, log, board_name, bonds=None):
        self._ble = ble
        self._log = log
        self._bonds = bonds
        self._secrets = bonds.load() if bonds is not None else []
        self.conn = -1  # connection handle, -1 when nobody is connected
        self.encrypted = False
        self.mtu = _DEFAULT_MTU
        self.links = 0  # connections so far: lets the app notice a new one
        self.nomem = 0  # ENOMEM refusals seen
        self._commands = []  # (data, encrypted) waiting for the sampling loop
        self._adv = None
        self._resp = _ad(_ADV_UUID128, _uuid128_le(P.UUID_SERVICE)) + _ad(
            _ADV_APPEARANCE, bytes((_APPEARANCE_ON_SHOE & 0xFF, _APPEARANCE_ON_SHOE >> 8))
        )
        ble.active(True)
        ble.config(bond=True, le_secure=True, mitm=False, io=_IO_NO_INPUT_OUTPUT)
        ble.irq(self._irq)
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
            value = text.encode()
            if len(value) > 20:
                ble.gatts_set_buffer(h, len(value))
            ble.gatts_write(h, value)

    @property
    def connected(self):
        return self.conn >= 0

    def set_name(self, name):
        """Advertise as name from the next advertising on."""
        self._adv = (_ad(_ADV_FLAGS, b"\x06") + _ad(_ADV_NAME, name.encode())
                     + _ad(_ADV_UUID16, b"\x14\x18"))
        self._ble.config(gap_name=name)

    def advertise(self):
        self._ble.gap_advertise(_ADV_INTERVAL_US, adv_data=self._adv, resp_data=self._resp)

    def _irq(self, event, data):
        if event == _IRQ_CENTRAL_CONNECT:
            self.conn = data[0]
            self.encrypted = False
            self.mtu = _DEFAULT_MTU
            self.links = (self.links + 1) & 0xFFFF
            self._log("ble", "connect %d" % self.conn)
        elif event == _IRQ_CENTRAL_DISCONNECT:
            if data[0] == self.conn:
                self.conn = -1
                self.encrypted = False
            self._log("ble", "disconnect %d" % data[0])
            self.advertise()
        elif event == _IRQ_GATTS_WRITE:
            conn, handle = data[0], data[1]
            if handle == self.h_control and conn == self.conn:
                value = self._ble.gatts_read(handle)
                if len(self._commands) < _MAX_COMMANDS:
                    self._commands.append((bytes(value), self.encrypted))
                else:
                    self.reply(bytes((value[0] if value else 0, P.ERR_BUSY)))
        elif event == _IRQ_ENCRYPTION_UPDATE:
            if data[0] == self.conn:
                self.encrypted = bool(data[1])
                self._log("ble", "encrypted %d bonded %d" % (data[1], data[3]))
        elif event == _IRQ_MTU_EXCHANGED:
            if data[0] == self.conn:
                self.mtu = data[1]
        elif event == _IRQ_CONNECTION_UPDATE:
            self._log("ble", "interval %d" % data[1])
        elif event == _IRQ_GET_SECRET:
            return self._get_secret(data[0], data[1], data[2])
        elif event == _IRQ_SET_SECRET:
            return self._set_secret(data[0], data[1], data[2])

    def _get_secret(self, sec_type, index, key):
        i = 0
        for t, k, v in self._secrets:
            if t != sec_type:
                continue
            if key is None:
                if i == index:
                    return v
                i += 1
            elif k == bytes(key):
                return v
        return None

    def _set_secret(self, sec_type, key, value):
        key = bytes(key)
        self._secrets = [s for s in self._secrets if not (s[0] == sec_type and s[1] == key)]
        if value is not None:
            self._secrets.append((sec_type, key, bytes(value)))
            if len(self._secrets) > _MAX_SECRETS:
                self._secrets.pop(0)
        if self._bonds is not None:
            self._bonds.save(self._secrets)
        return True

    def next_command(self):
        """(data, encrypted) of the oldest queued Control write, or None."""
        if self._commands:
            return self._commands.pop(0)
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
                if self.nomem < 0xFFFF:
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
