# InsoleBLE's boot (ble_insole.py): its state, the IRQ handler, the GATT table and the
# advertising response (docs/PROTOCOL.md), set up once at boot; and its rare main-loop
# work: a new advertised name (boot, SET_NAME) and forgetting every bond (the wearer's
# gesture). Imported for each and dropped after (lazy.py), so none of it stays in RAM.
#
# Access rules (docs/SECURITY.md): the insole service needs a link encrypted with
# an authenticated key; NimBLE turns the flags into ATT permissions, and a CCCD
# inherits its characteristic's (ble_gatts.c ble_gatts_register_clt_cfg_dsc).
# Running Speed and Cadence, Device Information and Battery are open to every
# central.
try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


import binascii
from array import array

import protocol as P

# protocol.py's constants, private here (no name, no lookup on the insole;
# tests/test_firmware_units.py checks every copy against protocol.py's)

_FLAG_READ = const(0x0002)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)
_FLAG_READ_AUTHENTICATED = const(0x0400)
_FLAG_WRITE_AUTHENTICATED = const(0x2000)

# ble_insole.py's (the same check): link slots, the passkey's range, InsoleBLE._v
_MAX_LINKS = const(4)
_PASSKEY_MAX = const(999999)
_V_ADV_DUE = const(0)
_V_ADV_FAILING = const(1)
_V_FAILURES_SEEN = const(2)
_V_PASSKEY = const(3)
_V_PRIMARY = const(4)
_V_N = const(6)
_SLOT_ENCRYPTED = const(1)

_ADV_FLAGS = const(0x01)
_ADV_UUID16 = const(0x03)
_ADV_NAME = const(0x09)

_IO_DISPLAY_ONLY = const(0)  # a fixed passkey "shown" on the label: passkey entry
_ADV_UUID128 = const(0x07)
_ADV_APPEARANCE = const(0x19)
_APPEARANCE_ON_SHOE = const(0x0443)  # Running Walking Sensor: On-Shoe

# Custom 128-bit UUIDs: base f1fe0000-e1fa-4b38-8a41-0e11dc80f5eb, 16 bits varied
# (docs/PROTOCOL.md; host_tools/ble/protocol.py has them too)
_UUID_SERVICE = const("f1fe0001-e1fa-4b38-8a41-0e11dc80f5eb")
_UUID_STEP_EVENT = const("f1fe0002-e1fa-4b38-8a41-0e11dc80f5eb")
_UUID_STATUS = const("f1fe0003-e1fa-4b38-8a41-0e11dc80f5eb")
_UUID_CONTROL = const("f1fe0004-e1fa-4b38-8a41-0e11dc80f5eb")
_UUID_RAW = const("f1fe0005-e1fa-4b38-8a41-0e11dc80f5eb")
_RSC_FEATURES = const(0x0007)  # stride length, total distance, walking/running status
_RSC_LOCATION_IN_SHOE = const(2)


def _services(UUID):
    rd, nt = _FLAG_READ, _FLAG_NOTIFY
    auth = _FLAG_READ_AUTHENTICATED  # also makes the CCCD need an authenticated link
    insole = (
        UUID(_UUID_SERVICE),
        (
            (UUID(_UUID_STEP_EVENT), nt | auth),
            (UUID(_UUID_STATUS), rd | nt | auth),
            (UUID(_UUID_CONTROL), _FLAG_WRITE | _FLAG_WRITE_AUTHENTICATED | nt),
            (UUID(_UUID_RAW), nt | auth),
        ),
    )
    rsc = (UUID(0x1814), ((UUID(0x2A53), nt), (UUID(0x2A54), rd), (UUID(0x2A5D), rd)))
    info = (
        UUID(0x180A),
        ((UUID(0x2A29), rd), (UUID(0x2A24), rd), (UUID(0x2A27), rd), (UUID(0x2A26), rd)),
    )
    battery = (UUID(0x180F), ((UUID(0x2A19), rd | nt),))
    return (insole, rsc, info, battery)


def _ad_field(kind, data):
    """One advertising data structure: length, type, data."""
    return bytes((len(data) + 1, kind)) + data


def _uuid128_le(text):
    b = binascii.unhexlify(text.replace("-", ""))
    return bytes(b[i] for i in range(len(b) - 1, -1, -1))


def _scan_response():
    # the insole service's UUID and the appearance
    return _ad_field(_ADV_UUID128, _uuid128_le(_UUID_SERVICE)) + _ad_field(
        _ADV_APPEARANCE, bytes((_APPEARANCE_ON_SHOE & 0xFF, _APPEARANCE_ON_SHOE >> 8)))


def register(ble, UUID, board_name):
    """Pairing rules and the services on the active stack; returns the handles
    the insole writes and notifies (event, status, control, raw, rsc, battery) and
    the advertising scan response."""
    # sets NimBLE's ble_hs_cfg.sm_bonding/sm_sc/sm_mitm/sm_io_cap
    # (modbluetooth_nimble.c mp_bluetooth_set_*), used by every later pairing
    ble.config(bond=True, le_secure=True, mitm=True, io=_IO_DISPLAY_ONLY)
    (
        (h_event, h_status, h_control, h_raw),
        (h_rsc, h_feature, h_location),
        (h_maker, h_model, h_board, h_fw),
        (h_battery,),
    ) = ble.gatts_register_services(_services(UUID))
    ble.gatts_write(h_feature, bytes((_RSC_FEATURES & 0xFF, _RSC_FEATURES >> 8)))
    ble.gatts_write(h_location, bytes((_RSC_LOCATION_IN_SHOE,)))
    for h, text in ((h_maker, "Open Insole"), (h_model, "Insole"), (h_board, board_name),
                    (h_fw, P.VERSION)):
        ble.gatts_write(h, text.encode())
    return h_event, h_status, h_control, h_raw, h_rsc, h_battery, _scan_response()


def setup(bl, ble, UUID, log, board_name, bonds, passkey, window):
    """InsoleBLE.__init__ (boot): its state, the IRQ handler, the stack on, then the
    pairing rules and the GATT table."""
    bl._v = v = array("i", [0] * _V_N)
    bl._ble = ble
    bl._log = log
    bl._bonds = bonds  # bonds.Bonds, or None: nothing survives a reboot
    v[_V_PASSKEY] = passkey if type(passkey) is int and 0 <= passkey <= _PASSKEY_MAX \
        else -1
    bl.window = window
    # one slot per connection the stack can hold
    bl.link_conn = [-1] * _MAX_LINKS  # connection handle, -1 when free
    bl.link_auth = [False] * _MAX_LINKS  # encrypted with an authenticated key
    # per slot: _SLOT_ENCRYPTED (encrypted, with any key), _SLOT_PASSKEY_GIVEN (this
    # pairing got the passkey), _SLOT_TOLD_REPAIR (the re-pair line was logged)
    bl._slot_flags = bytearray(_MAX_LINKS)
    # changes each time the slot's link becomes authenticated: a new event stream
    bl.link_gen = [0] * _MAX_LINKS
    bl._peer = [None] * _MAX_LINKS  # store key of the central's identity address
    v[_V_PRIMARY] = -1  # slot of the newest authenticated link
    bl.ready = 0  # bit per slot: connected with an authenticated key
    bl.nomem = 0  # ENOMEM refusals seen
    bl.irq_errors = 0  # exceptions caught in the IRQ handler (saturates)
    # moves at every IRQ (wraps): the main loop serves the radio only when it
    # moved, or when it has something of its own to send
    bl.changes = 0
    # v[_V_REFUSED_WRITES]: Control writes of links without an authenticated key
    bl.failed_pairings = 0  # since boot (saturates)
    v[_V_FAILURES_SEEN] = 0  # ... of which the window has been told
    bl._commands = []  # (data, conn, slot) waiting for the sampling loop
    bl._held = []  # (sec_type, key, value) of a pairing not yet authenticated
    bl._undo = []  # (slot, sec_type, key, old value) deleted by a pairing
    bl._adv = None
    v[_V_ADV_DUE] = False  # advertising must (re)start: the main loop retries
    v[_V_ADV_FAILING] = False
    bl.h_event = bl.h_status = bl.h_control = bl.h_raw = -1
    bl.h_rsc = bl.h_battery = -1
    ble.irq(bl._irq)  # before active(True): see the top of ble_insole.py
    ble.active(True)  # the ESP32 gives up after 2 s (OSError): app.py's WDT resets
    (bl.h_event, bl.h_status, bl.h_control, bl.h_raw, bl.h_rsc,
     bl.h_battery, bl._resp) = register(ble, UUID, board_name)


def set_name(bl, name):
    """Advertise as name from the next advertising on (boot, SET_NAME)."""
    v = bl._v
    again = bl._adv is not None and not v[_V_ADV_DUE]
    # advertising data structures (length, type, data): flags (LE general
    # discoverable, no BR/EDR), the name, the RSC service's 16-bit UUID 0x1814
    raw = name.encode()
    bl._adv = (bytes((2, _ADV_FLAGS, 0x06, len(raw) + 1, _ADV_NAME)) + raw
               + bytes((3, _ADV_UUID16, 0x14, 0x18)))
    bl._ble.config(gap_name=name)
    if again:
        bl.advertise()  # advertising already: the new name goes out now


def forget_all(bl):
    """Drop every bond, end the links that used one, open the pairing window (the
    wearer's gesture, main loop)."""
    bl._held = []
    bl._undo = []
    if bl._bonds is not None:
        bl._bonds.forget_all()
    for i in range(_MAX_LINKS):
        c = bl.link_conn[i]
        if c >= 0 and bl._slot_flags[i] & _SLOT_ENCRYPTED:
            try:
                bl._ble.gap_disconnect(c)
            except OSError:
                pass
    bl._log("pair", "all bonds forgotten")
    bl.open_window("forget")
