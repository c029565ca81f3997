# The insole's GATT table and the advertising response (docs/PROTOCOL.md), set up
# once at boot by InsoleBLE (ble_insole.py): imported for that and dropped after
# (lazy.py), so none of it stays in RAM.
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

import protocol as P

# protocol.py's constants, private here (no name, no lookup on the insole;
# tests/test_firmware_units.py checks every copy against protocol.py's)

_FLAG_READ = const(0x0002)
_FLAG_WRITE = const(0x0008)
_FLAG_NOTIFY = const(0x0010)
_FLAG_READ_AUTHENTICATED = const(0x0400)
_FLAG_WRITE_AUTHENTICATED = const(0x2000)

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
