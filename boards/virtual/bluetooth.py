# `bluetooth` for the virtual board: the peripheral half of MicroPython's low-level
# BLE API as the NimBLE binding on an ESP32 behaves, bridged to a real BLE stack
# (bumble) in the host process (host_tools/vboard/).
#
# Sources followed (micropython v1.29): extmod/modbluetooth.c (argument handling,
# IRQ data tuples, the handler-disable rule, config keys), extmod/nimble/
# modbluetooth_nimble.c (errors, load_irk(), the secret store, the gatts db),
# ports/esp32/mpconfigport.h (MICROPY_PY_BLUETOOTH_USE_SYNC_EVENTS: no ring buffer,
# IRQs run in the stack's task and their results go back to NimBLE), and NimBLE
# itself (apache/mynewt-nimble: ble_hs.c, ble_store.c, ble_att*.c, ble_gap.c).
#
# Modelled:
# - An exception in the IRQ handler is printed and disables the handler until irq()
#   is called again (modbluetooth.c invoke_irq_handler_run_protected).
# - active(True) runs NimBLE's sync: the peer IRKs are read from the handler's store
#   (ble_hs_sync -> ble_hs_misc_restore_irks: _IRQ_GET_SECRET(2, i, None) until
#   none), then load_irk() asks for the device's own IRK (_IRQ_GET_SECRET(10, 0,
#   b"irk")) and stores a new one (_IRQ_SET_SECRET) when there is none, then the peer
#   IRKs again. A handler set after active(True) misses all of it: no peer is
#   resolved, so a bonded phone with a private address cannot encrypt again.
# - IRQ data tuples as invoke_irq_handler_run() builds them: ints, address/key/value
#   memoryviews that are only valid while the handler runs, None for a missing key
#   or value. _IRQ_GATTS_READ_REQUEST is raised for every read of a characteristic
#   or descriptor and its result decides (non-zero: that ATT error).
# - The handler's results go back to NimBLE: a secret that is not a buffer faults
#   the stack's task (the ESP32 restarts), a secret of the wrong length counts as
#   missing, _IRQ_SET_SECRET's truth is the store's answer.
# - config(): only gap_name, mac and mtu read back; the written keys and their
#   checks are the binding's (no rxbuf with sync events).
# - The gatts db of modbluetooth.c (values grow with local writes, set_buffer empties
#   a value, reads in append mode consume it), errnos of the ESP32 (newlib) build.
# - Default ATT MTU 23; notifications longer than MTU-3 are cut (NimBLE
#   ble_att_truncate_to_mtu); gatts_notify() sends whether or not the central
#   subscribed; gatts_write(..., send_update=True) notifies/indicates subscribers.
# - OSError(ENOMEM) when the simulated buffer pool is out (the host switches it on:
#   VirtualInsole.set_notify_buffers()); NimBLE's real mbuf pool is not modelled.
# - Passkey pairing (modbluetooth.c mp_bluetooth_gap_on_passkey_action and
#   bluetooth_ble_gap_passkey; modbluetooth_nimble.c BLE_GAP_EVENT_PASSKEY_ACTION and
#   mp_bluetooth_gap_passkey; NimBLE ble_sm.c ble_sm_inject_io): when the host's
#   pairing needs the insole's part (io DISPLAY_ONLY: action 3, DISPLAY) the handler
#   gets _IRQ_PASSKEY_ACTION (conn, action, number: 0 unless numeric comparison) and
#   must answer with gap_passkey(conn, action, passkey), now or later; until it does
#   the pairing waits (NimBLE's SMP timer ends it after 30 s). gap_passkey() raises
#   what ble_sm_inject_io returns: EINVAL for an action the binding does not know, a
#   different action than the one asked for, or a passkey above 999999; ENOENT with
#   no pairing on that connection; EALREADY when it was answered already.
import json
import os
import struct
import sys

from _vboard import (
    HOST_CONN_UPDATE,
    HOST_CONNECT,
    HOST_DISCONNECT,
    HOST_ENCRYPTION,
    HOST_GET_SECRET,
    HOST_INDICATE_DONE,
    HOST_MTU,
    HOST_SET_SECRET,
    HOST_WRITE,
    MSG_ADVERTISE,
    MSG_CONFIG,
    MSG_DISCONNECT,
    MSG_INDICATE,
    MSG_NOTIFY,
    MSG_REFUSED,
    MSG_REGISTER,
    MSG_SECRET,
    MSG_VALUE,
    mp_int,
    vboard,
)

# Messages of this shim only (the others are listed in _vboard.py).
MSG_KEYS = 89  # Y <16s own IRK or nothing> then 80-byte peer records: the sync's store reads
MSG_READ = 81  # Q <BB denied, ATT error> value: the answer to HOST_READ
HOST_READ = 113  # q <HH conn, handle>: a central reads; raise _IRQ_GATTS_READ_REQUEST
HOST_IRQ = 106  # j json [event, data]: deliver this IRQ as it is (fuzz tests)
HOST_FATAL = 102  # f text: the stack is stuck for good; print it and stop
HOST_SYNC = 121  # y: answer MSG_SYNCED once the events before it have been raised
MSG_SYNCED = 90  # Z <IB IRQs the handler got, handler still set>
HOST_PASSKEY = 107  # k <HBI conn, action, number>: the pairing waits for the insole's part
MSG_PASSKEY = 87  # W <HBI conn, action, passkey>: what gap_passkey() injected

FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010
FLAG_INDICATE = 0x0020

_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTS_WRITE = 3
_IRQ_GATTS_READ_REQUEST = 4
_IRQ_GATTS_INDICATE_DONE = 20
_IRQ_MTU_EXCHANGED = 21
_IRQ_CONNECTION_UPDATE = 27
_IRQ_ENCRYPTION_UPDATE = 28
_IRQ_GET_SECRET = 29
_IRQ_SET_SECRET = 30
_IRQ_PASSKEY_ACTION = 31
_PASSKEY_ACTIONS = (2, 3, 4)  # MP_BLUETOOTH_PASSKEY_ACTION_INPUT, _DISPLAY, _NUMERIC_COMPARISON
_PASSKEY_MAX = 999999

# errno values of the ESP32 build (MICROPY_USE_INTERNAL_ERRNO 0: newlib's errno.h)
_ENOENT = 2
_E2BIG = 7
_ENOMEM = 12
_EBUSY = 16
_ENODEV = 19  # ERRNO_BLUETOOTH_NOT_ACTIVE (modbluetooth_nimble.c)
_EINVAL = 22
_EALREADY = 120
_ETIMEDOUT = 116
_ENOTCONN = 128
_BLE_HS_EAPP = 9  # not in ble_hs_err_to_errno_table: raised as OSError(-9)
_HCI_INVALID_PARAMS = 0x212  # BLE_HS_ERR_HCI_BASE + 0x12, raised negated

_DEFAULT_MTU = 23
_PREFERRED_MTU = 256  # ESP-IDF's CONFIG_BT_NIMBLE_ATT_PREFERRED_MTU default
_MTU_MAX = 527  # BLE_ATT_MTU_MAX (ble_att_set_preferred_mtu)
_DEFAULT_ATTR_LEN = 20  # MP_BLUETOOTH_DEFAULT_ATTR_LEN
_NAME_MAX = 31  # ESP-IDF's CONFIG_BT_NIMBLE_GAP_DEVICE_NAME_MAX_LEN default
_ADV_MAX = 31  # BLE_HCI_MAX_ADV_DATA_LEN (legacy advertising)
_MAX_SERVICES = 8  # MP_BLUETOOTH_NIMBLE_MAX_SERVICES
_MAX_CONNECTIONS = 4  # ports/esp32/boards/sdkconfig.ble
_SEC_OUR_IRK = 10  # SECRET_TYPE_OUR_IRK (modbluetooth_nimble.c)
_SEC_PEER = 2  # BLE_STORE_OBJ_TYPE_PEER_SEC
_SEC_RECORD = 80  # sizeof(struct ble_store_value_sec) on the ESP32
_IRK_LEN = 16
_STORE_INDEX_WRAP = 256  # struct ble_store_key_sec.idx is a uint8_t
_DEAD_BYTE = 0xEE  # what a memoryview shows after the handler returned


def _buffer(obj):
    """The bytes of obj as mp_get_buffer_raise() takes them, or TypeError."""
    try:
        return bytes(memoryview(obj))
    except TypeError:
        raise TypeError("object with buffer protocol required")


def _int_maybe(obj):
    """mp_obj_get_int_maybe() as the read request's result: 0 when not an int."""
    if obj is True or obj is False:
        return int(obj)
    if isinstance(obj, int):
        return obj
    return 0


def _qstr(obj):
    if not isinstance(obj, str):
        raise TypeError("can't convert '%s' object to str implicitly" % type(obj).__name__)
    return obj


class UUID:
    """bluetooth.UUID as modbluetooth.c bluetooth_uuid_make_new() builds it: an int up
    to 0xFFFF, a 2/4/16-byte buffer taken as it is, or hex text (dashes ignored)."""

    def __init__(self, value):
        if isinstance(value, UUID):
            value = bytes(value)
        if isinstance(value, int):
            value = mp_int(value)
            if value > 0xFFFF:
                raise ValueError("invalid UUID")
            self._le = bytes((value & 0xFF, (value >> 8) & 0xFF))
            return
        raw = _buffer(value)
        if len(raw) in (2, 4, 16):
            self._le = raw
            return
        digits = []
        for c in raw.decode():
            if c == "-":
                continue
            if c not in "0123456789abcdefABCDEF":
                raise ValueError("invalid char in UUID")
            digits.append(c)
        if len(digits) > 32:
            raise ValueError("UUID too long")
        if len(digits) < 32:
            raise ValueError("UUID too short")
        h = "".join(digits)
        self._le = bytes(int(h[i : i + 2], 16) for i in range(30, -2, -2))

    def __iter__(self):
        # bytes(uuid) gives the little-endian bytes, as on MicroPython
        return iter(self._le)

    def __len__(self):
        return len(self._le)

    def __eq__(self, other):
        return isinstance(other, UUID) and other._le == self._le

    def __hash__(self):
        return hash(self._le)

    def text(self):
        """The host bridge's name for it: 0x180f for 16/32-bit, dashed hex for 128."""
        if len(self._le) == 16:
            h = "".join("%02x" % b for b in reversed(self._le))
            return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])
        v = 0
        for b in reversed(self._le):
            v = (v << 8) | b
        return "0x%04x" % v

    def __repr__(self):
        # bluetooth_uuid_print()
        n = len(self._le)
        out = "UUID(" + ("0x" if n <= 4 else "'")
        for i in range(n):
            if i in (4, 6, 8, 10) and n == 16:
                out += "-"
            out += "%02x" % self._le[n - 1 - i]
        return out + ("'" if n == 16 else "") + ")"


class _Value:
    """One gatts db entry (modbluetooth.c mp_bluetooth_gatts_db_*)."""

    def __init__(self):
        self.data = b""
        self.alloc = _DEFAULT_ATTR_LEN
        self.append = False


class _BLE:
    def __init__(self):
        self._active = False
        self._handler = None
        self._db = {}  # value handle -> _Value (characteristics and descriptors)
        self._conns = {}  # conn handle -> ATT MTU
        self._advertising = False
        self._name = b"MPY ESP32"  # CONFIG_BT_NIMBLE_SVC_GAP_DEVICE_NAME (sdkconfig.ble)
        self._mtu = _PREFERRED_MTU
        self._addr_mode = 0 if vboard.mac[0] == 0 else 1  # sync_cb(): public if there is one
        self._nbuf = 0  # simulated notification buffers (0 = unlimited)
        self._refill_us = 0
        self._tokens = 0
        self._refilled = 0
        self._fail = 0  # next notifications to fail with ENOMEM
        self._sm = {}  # conn handle -> [passkey action asked for, answered]: a pairing
        self.sent = 0  # notifications handed to the stack
        self.raised = 0  # IRQs handed to a handler
        vboard.ble = self

    # ---- the IRQ handler ------------------------------------------------------
    def irq(self, handler):
        if handler is not None and not callable(handler):
            raise ValueError("invalid handler")
        self._handler = handler

    def _irq(self, event, data, views=()):
        """Run the handler as invoke_irq_handler_run_protected() does; the views'
        memory is the stack's and is gone once the handler returns."""
        handler = self._handler
        result = None
        if handler is not None:
            self.raised += 1
            try:
                result = handler(event, data)
            except Exception as e:
                print("Unhandled exception in IRQ callback handler")
                sys.print_exception(e)
                self._handler = None  # "Disable the BLE IRQ handler."
                result = None
        for buf in views:
            for i in range(len(buf)):
                buf[i] = _DEAD_BYTE
        return result

    def _get_secret(self, sec_type, index, key):
        """mp_bluetooth_gap_on_get_secret(): the handler's value as bytes, or None."""
        views = []
        kv = None
        if key is not None:
            kb = bytearray(key)
            views.append(kb)
            kv = memoryview(kb)
        result = self._irq(_IRQ_GET_SECRET, (sec_type, index, kv), views)
        if result is None:
            return None
        try:
            return bytes(memoryview(result))
        except TypeError:
            # mp_get_buffer_raise() after the handler, outside its nlr frame: the
            # exception has nowhere to go in the stack's task (nlr_jump_fail)
            print("NLR jump failed: _IRQ_GET_SECRET returned a %s, not a buffer"
                  % type(result).__name__)
            vboard.reset()

    def _set_secret(self, sec_type, key, value):
        """mp_bluetooth_gap_on_set_secret(): whether the handler stored it."""
        kb = bytearray(key)
        views = [kb]
        vv = None
        if value is not None:
            vb = bytearray(value)
            views.append(vb)
            vv = memoryview(vb)
        return bool(self._irq(_IRQ_SET_SECRET, (sec_type, memoryview(kb), vv), views))

    # ---- radio state ---------------------------------------------------------
    def active(self, *args):
        if len(args) > 1:
            raise TypeError("function takes at most 2 positional arguments")
        if args:
            if args[0]:
                self._start()
            else:
                self._stop()
        return self._active

    def _start(self):
        # mp_bluetooth_init(): cleans up a running stack first
        self._stop()
        # ble_hs_sync() restores the peer IRKs, then sync_cb() runs load_irk(),
        # which restores them again once it has applied an IRK. The stack is not
        # active yet while this runs (mp_bluetooth_is_active() is false).
        own = None
        peers = self._restore_irks()
        if peers is not None:
            own = self._load_irk()
            if own is not None:
                peers = self._restore_irks()
        if peers is None:
            # the store kept answering: NimBLE never syncs, active() gives up after
            # NIMBLE_STARTUP_TIMEOUT (2 s) and deinits
            raise OSError(_ETIMEDOUT)
        vboard.send(MSG_KEYS, b"".join(peers), own or b"")
        self._active = True
        self._db = {}

    def _restore_irks(self):
        # ble_store_iterate(BLE_STORE_OBJ_TYPE_PEER_SEC): reads until ENOENT; a value
        # that is not a ble_store_value_sec is ENOENT (ble_secret_store_read)
        peers = []
        index = 0
        while True:
            value = self._get_secret(_SEC_PEER, index & 0xFF, None)
            if value is None or len(value) != _SEC_RECORD:
                return peers
            peers.append(value)
            index += 1
            if index >= _STORE_INDEX_WRAP:
                return None

    def _load_irk(self):
        # load_irk(): the device's IRK, or a new random one stored through the
        # handler; None when the handler stores nothing (NimBLE's fixed default IRK)
        irk = self._get_secret(_SEC_OUR_IRK, 0, b"irk")
        if irk is not None and len(irk) == _IRK_LEN:
            return irk
        irk = os.urandom(_IRK_LEN)  # ble_hs_hci_util_rand()
        if not self._set_secret(_SEC_OUR_IRK, b"irk", irk):
            return None
        return irk

    def _stop(self):
        if not self._active:
            return
        self.gap_advertise(None)
        for conn in list(self._conns):
            vboard.send(MSG_DISCONNECT, struct.pack("<H", conn))
        self._conns = {}
        self._db = {}
        self._active = False

    def _require_active(self):
        if not self._active:
            raise OSError(_ENODEV)

    def config(self, *args, **kwargs):
        # modbluetooth.c bluetooth_ble_config()
        if not kwargs:
            if len(args) != 1:
                raise TypeError("must query one param")
            key = _qstr(args[0])
            if key == "gap_name":
                return self._name
            if key == "mac":
                # mp_bluetooth_get_current_address()
                self._require_active()
                if self._addr_mode not in (0, 1):
                    raise OSError(_EINVAL)  # an RPA's current value is not known
                return (vboard.mac[0], vboard.mac[1])
            if key == "mtu":
                self._require_active()  # mp_bluetooth_get_preferred_mtu()
                return self._mtu
            raise ValueError("unknown config param")
        if args:
            raise TypeError("can't specify pos and kw args")
        shown = {}
        try:
            for key, value in kwargs.items():
                self._set_config(key, value, shown)
        finally:
            # the keys before a bad one are set (the binding applies them in turn)
            if shown:
                vboard.send_json(MSG_CONFIG, shown)

    def _set_config(self, key, value, shown):
        if key == "gap_name":
            name = _buffer(value)
            if len(name) > _NAME_MAX:
                raise OSError(_EINVAL)  # mp_bluetooth_gap_set_device_name()
            nul = name.find(b"\x00")  # stored as a C string
            self._name = name if nul < 0 else name[:nul]
            shown[key] = self._name.decode("utf-8", "replace")
        elif key == "mtu":
            mtu = mp_int(value) & 0xFFFF  # mp_bluetooth_set_preferred_mtu(uint16_t)
            self._require_active()
            if not _DEFAULT_MTU <= mtu <= _MTU_MAX:
                raise OSError(_EINVAL)
            self._mtu = mtu
            shown[key] = mtu
        elif key == "addr_mode":
            mode = mp_int(value) & 0xFF
            self._require_active()  # mp_bluetooth_set_address_mode()
            if mode == 0 and vboard.mac[0] != 0:
                raise OSError(_EINVAL)  # no public address
            if mode <= 3:
                self._addr_mode = 1 if mode == 3 else mode  # an NRPA is "random"
        elif key in ("bond", "mitm", "le_secure"):
            shown[key] = bool(value)
        elif key == "io":
            shown[key] = mp_int(value) & 0xFF
        else:
            raise ValueError("unknown config param")

    # ---- GAP -----------------------------------------------------------------
    def gap_advertise(self, interval_us=500000, adv_data=None, *, resp_data=None,
                      connectable=True):
        if interval_us is None:
            self._advertising = False
            vboard.send_json(MSG_ADVERTISE, {"interval_us": None})
            return None
        interval_us = mp_int(interval_us)
        connectable = bool(connectable)
        adv = None if adv_data is None else _buffer(adv_data)
        resp = None if resp_data is None else _buffer(resp_data)
        # mp_bluetooth_gap_advertise_start()
        self._require_active()
        if self._advertising:
            self._advertising = False
            vboard.send_json(MSG_ADVERTISE, {"interval_us": None})
        for data in (adv, resp):
            if data is not None and len(data) > _ADV_MAX:
                raise OSError(_EINVAL)  # ble_gap_adv_set_data / _rsp_set_data
        # interval_us / BLE_HCI_ADV_ITVL in C, kept in a uint16_t; 0 means NimBLE's
        # default interval (ble_gap_adv_dflt_itvls: 30 ms for connectable)
        units = abs(interval_us) // 625
        units = (-units if interval_us < 0 else units) & 0xFFFF
        if units != 0 and not 0x20 <= units <= 0x4000:
            raise OSError(-_HCI_INVALID_PARAMS)  # the controller refuses the interval
        if connectable and len(self._conns) >= _MAX_CONNECTIONS:
            raise OSError(_ENOMEM)  # ble_gap_adv_validate: no connection left
        msg = {"interval_us": units * 625 if units else 30000,
               "connectable": connectable}
        if adv is not None:  # None keeps the data set before
            msg["adv"] = adv.hex()
        if resp is not None:
            msg["resp"] = resp.hex()
        vboard.send_json(MSG_ADVERTISE, msg)
        self._advertising = True
        return None

    def gap_disconnect(self, conn_handle):
        conn = mp_int(conn_handle) & 0xFFFF
        self._require_active()
        if conn not in self._conns:
            return False  # ble_gap_terminate: BLE_HS_ENOTCONN
        vboard.send(MSG_DISCONNECT, struct.pack("<H", conn))
        return True

    def gap_passkey(self, conn_handle, action, passkey):
        # bluetooth_ble_gap_passkey(): uint16_t conn, uint8_t action, mp_int_t passkey
        conn = mp_int(conn_handle) & 0xFFFF
        action = mp_int(action) & 0xFF
        passkey = mp_int(passkey)
        if action not in _PASSKEY_ACTIONS:
            raise OSError(_EINVAL)  # mp_bluetooth_gap_passkey: default case
        proc = self._sm.get(conn)
        if proc is None:
            raise OSError(_ENOENT)  # ble_sm_proc_find: no pairing on that link
        if proc[1]:
            raise OSError(_EALREADY)  # BLE_SM_PROC_F_IO_INJECTED
        if action != proc[0]:
            raise OSError(_EINVAL)  # "Application provided incorrect IO type"
        if action != 4 and not 0 <= passkey <= _PASSKEY_MAX:
            raise OSError(_EINVAL)  # io.passkey is a uint32_t: > 999999 refused
        proc[1] = True
        vboard.send(MSG_PASSKEY, b"", struct.pack("<HBI", conn, action,
                                                  (passkey != 0) if action == 4 else passkey))

    def gap_scan(self, *args, **kwargs):
        raise NotImplementedError("the virtual board does not scan")

    def gap_connect(self, *args, **kwargs):
        raise NotImplementedError("the virtual board is never a central")

    # ---- GATT server ---------------------------------------------------------
    def gatts_register_services(self, services_definition):
        # modbluetooth.c bluetooth_ble_gatts_register_services(); the checks of
        # bluetooth_gatts_register_service() come before the stack's
        spec = []
        for service in services_definition:
            if len(service) != 2:
                raise ValueError("tuple/list has wrong length")
            if not isinstance(service[0], UUID):
                raise ValueError("invalid service UUID")
            chars = []
            for ch in service[1]:
                if len(ch) < 2 or len(ch) > 3:
                    raise ValueError("invalid characteristic tuple")
                if not isinstance(ch[0], UUID):
                    raise ValueError("invalid characteristic UUID")
                descs = []
                if len(ch) == 3:
                    for d in ch[2]:
                        if len(d) != 2:
                            raise ValueError("tuple/list has wrong length")
                        if not isinstance(d[0], UUID):
                            raise ValueError("invalid descriptor UUID")
                        descs.append([d[0].text(), mp_int(d[1])])
                chars.append([ch[0].text(), mp_int(ch[1]), descs])
            spec.append([service[0].text(), chars])
        self._require_active()
        if self._advertising or self._conns:
            raise OSError(_EBUSY)  # ble_gatts_reset(): !ble_gatts_mutable()
        if len(spec) > _MAX_SERVICES:
            raise OSError(_E2BIG)
        if vboard.sock is None:
            handles = self._local_handles(spec)
        else:
            handles = vboard.request(MSG_REGISTER, spec)
        self._db = {}
        out = []
        for svc in handles:
            for h in svc:
                self._db[h] = _Value()
            out.append(tuple(svc))
        return tuple(out)

    def _local_handles(self, spec):
        # Without a host: number attributes the way a GATT server would.
        h = 10  # after the GAP and GATT services
        out = []
        for _, chars in spec:
            h += 1  # service declaration
            svc = []
            for _, flags, descs in chars:
                h += 2  # declaration, value
                svc.append(h)
                if flags & (FLAG_NOTIFY | FLAG_INDICATE):
                    h += 1  # CCCD
                for _ in descs:
                    h += 1
                    svc.append(h)
            out.append(svc)
        return out

    def gatts_read(self, value_handle):
        # bluetooth_ble_gatts_read() ignores the binding's error: an unknown handle
        # or a stopped stack reads as b""
        entry = self._db.get(mp_int(value_handle) & 0xFFFF) if self._active else None
        if entry is None:
            return b""
        data = entry.data
        if entry.append:
            entry.data = b""  # mp_bluetooth_gatts_db_read(): an append value is consumed
        return data

    def gatts_write(self, value_handle, data, *args):
        if len(args) > 1:
            raise TypeError("function expected at most 4 arguments, got %d" % (3 + len(args)))
        buf = _buffer(data)
        send_update = bool(args[0]) if args else False
        handle = mp_int(value_handle) & 0xFFFF
        self._require_active()
        entry = self._db.get(handle)
        if entry is None:
            raise OSError(_EINVAL)  # mp_bluetooth_gatts_db_write()
        if len(buf) > entry.alloc:
            entry.alloc = len(buf)  # the db's buffer grows to the value
        entry.data = buf
        vboard.send(MSG_VALUE, buf, struct.pack("<HB", handle, 1 if send_update else 0))
        return len(buf)

    def gatts_set_buffer(self, value_handle, length, *args):
        if len(args) > 1:
            raise TypeError("function expected at most 4 arguments, got %d" % (3 + len(args)))
        handle = mp_int(value_handle) & 0xFFFF
        length = mp_int(length)
        append = bool(args[0]) if args else False
        self._require_active()
        entry = self._db.get(handle)
        if entry is None:
            raise OSError(_EINVAL)
        if length < 0:
            raise OSError(_ENOMEM)  # a size_t that m_renew_maybe() cannot give
        # mp_bluetooth_gatts_db_resize(): the value starts empty again
        entry.alloc = length
        entry.data = b""
        entry.append = append

    def _take_buffer(self):
        # the simulated pool: a notification takes a buffer, one comes back every
        # refill_us of virtual time
        if self._fail > 0:
            self._fail -= 1
            self._refuse()
        if self._nbuf <= 0:
            return
        if self._refill_us > 0:
            gained = (vboard.now - self._refilled) // self._refill_us
            if gained > 0:
                self._tokens = min(self._nbuf, self._tokens + gained)
                self._refilled += gained * self._refill_us
        if self._tokens <= 0:
            self._refuse()

    def _refuse(self):
        vboard.send(MSG_REFUSED, b"")
        raise OSError(_ENOMEM)

    def _send_value(self, kind, args):
        # bluetooth_ble_gatts_notify_indicate(): positional only, data checked first
        if len(args) < 2 or len(args) > 3:
            raise TypeError("function expected 3 to 4 arguments, got %d" % (1 + len(args)))
        conn = mp_int(args[0]) & 0xFFFF
        handle = mp_int(args[1]) & 0xFFFF
        data = args[2] if len(args) == 3 else None
        buf = None if data is None else _buffer(data)
        self._require_active()
        self._take_buffer()  # ble_hs_mbuf_from_flat()
        if buf is None:
            # NULL mbuf: NimBLE reads the attribute through the access callback,
            # with no connection (ble_att_svr_read_handle(BLE_HS_CONN_HANDLE_NONE))
            entry = self._db.get(handle)
            if entry is None:
                raise OSError(-_BLE_HS_EAPP)
            if _int_maybe(self._irq(_IRQ_GATTS_READ_REQUEST, (0xFFFF, handle))):
                raise OSError(-_BLE_HS_EAPP)  # "application disallowed attribute read"
            buf = entry.data
        if handle == 0:
            raise OSError(_EINVAL)  # ble_att_clt_tx_notify
        mtu = self._conns.get(conn)
        if mtu is None:
            raise OSError(_ENOTCONN)  # ble_att_tx: no such connection
        if self._nbuf > 0:
            self._tokens -= 1
        if len(buf) > mtu - 3:
            buf = buf[: mtu - 3]  # ble_att_truncate_to_mtu
        vboard.send(kind, buf, struct.pack("<HH", conn, handle))
        self.sent += 1

    def gatts_notify(self, *args):
        self._send_value(MSG_NOTIFY, args)

    def gatts_indicate(self, *args):
        self._send_value(MSG_INDICATE, args)

    # ---- from the host ---------------------------------------------------------
    def _control(self, ctl):
        if "notify_buffers" in ctl:
            self._nbuf = int(ctl["notify_buffers"])
            self._tokens = self._nbuf
            self._refilled = vboard.now
        if "refill_us" in ctl:
            self._refill_us = int(ctl["refill_us"])
        if "fail_notify" in ctl:
            self._fail = int(ctl["fail_notify"])

    def _host_event(self, kind, body):
        if kind == HOST_SYNC:
            vboard.send(MSG_SYNCED, struct.pack("<IB", self.raised & 0xFFFFFFFF,
                                                self._handler is not None))
            return
        if not self._active and kind != HOST_FATAL:
            # a stopped stack raises nothing (e.g. central_gap_event_cb's check)
            if kind in (HOST_GET_SECRET, HOST_SET_SECRET):
                vboard.send(MSG_SECRET, b"\x00")
            elif kind == HOST_READ:
                vboard.send(MSG_READ, b"", b"\x01\x0e")
            return
        if kind == HOST_CONNECT or kind == HOST_DISCONNECT:
            conn, addr_type = struct.unpack_from("<HB", body)
            addr = bytearray(body[3:9])
            if kind == HOST_CONNECT:
                self._conns[conn] = _DEFAULT_MTU
                self._advertising = False  # a connection ends legacy advertising
                event = _IRQ_CENTRAL_CONNECT
            else:
                self._conns.pop(conn, None)
                self._sm.pop(conn, None)  # ble_sm_connection_broken
                event = _IRQ_CENTRAL_DISCONNECT
            self._irq(event, (conn, addr_type, memoryview(addr)), (addr,))
        elif kind == HOST_WRITE:
            conn, handle = struct.unpack_from("<HH", body)
            entry = self._db.get(handle)
            if entry is None:
                return
            # characteristic_access_cb(): written at the end of an append value,
            # cut to the db's buffer
            data = body[4:]
            if entry.append:
                data = entry.data + data
            entry.data = data[: entry.alloc]
            self._irq(_IRQ_GATTS_WRITE, (conn, handle))
        elif kind == HOST_READ:
            conn, handle = struct.unpack_from("<HH", body)
            error = _int_maybe(self._irq(_IRQ_GATTS_READ_REQUEST, (conn, handle)))
            entry = self._db.get(handle)
            if error:
                vboard.send(MSG_READ, b"", bytes((1, error & 0xFF)))
            elif entry is None:
                vboard.send(MSG_READ, b"", b"\x01\x0a")  # BLE_ATT_ERR_ATTR_NOT_FOUND
            else:
                vboard.send(MSG_READ, entry.data, b"\x00\x00")
        elif kind == HOST_MTU:
            conn, mtu = struct.unpack_from("<HH", body)
            if conn in self._conns:
                self._conns[conn] = mtu
            self._irq(_IRQ_MTU_EXCHANGED, (conn, mtu))
        elif kind == HOST_CONN_UPDATE:
            self._irq(_IRQ_CONNECTION_UPDATE, struct.unpack_from("<HHHHB", body))
        elif kind == HOST_ENCRYPTION:
            # mp_bluetooth_gatts_on_encryption_update(): the flags are small ints; a
            # pairing is over when it is reported (ble_sm_process_result)
            update = struct.unpack_from("<HBBBB", body)
            self._sm.pop(update[0], None)
            self._irq(_IRQ_ENCRYPTION_UPDATE, update)
        elif kind == HOST_PASSKEY:
            # BLE_GAP_EVENT_PASSKEY_ACTION -> mp_bluetooth_gap_on_passkey_action()
            conn, action, number = struct.unpack_from("<HBI", body)
            if conn not in self._conns:
                return
            self._sm[conn] = [action, False]
            self._irq(_IRQ_PASSKEY_ACTION, (conn, action, number))
        elif kind == HOST_INDICATE_DONE:
            self._irq(_IRQ_GATTS_INDICATE_DONE, struct.unpack_from("<HHB", body))
        elif kind == HOST_GET_SECRET:
            sec_type, index, has_key = struct.unpack_from("<BBB", body)
            value = self._get_secret(sec_type, index, body[3:] if has_key else None)
            if value is None:
                vboard.send(MSG_SECRET, b"\x00")
            else:
                vboard.send(MSG_SECRET, value, b"\x01")
        elif kind == HOST_SET_SECRET:
            sec_type, key_len, has_value = struct.unpack_from("<BHB", body)
            key = body[4 : 4 + key_len]
            value = body[4 + key_len :] if has_value else None
            stored = self._set_secret(sec_type, key, value)
            vboard.send(MSG_SECRET, b"\x01" if stored else b"\x00")
        elif kind == HOST_IRQ:
            event, data = json.loads(body.decode())
            views = []
            self._irq(event, _decode(data, views), views)
        elif kind == HOST_FATAL:
            print(body.decode())
            sys.exit(4)


def _decode(item, views):
    """A value of a HOST_IRQ message: [kind, payload] (i int, f float, n None, T/F
    bools, s str, b bytes, a bytearray, m memoryview, t tuple, l list)."""
    kind = item[0]
    if kind == "i" or kind == "f" or kind == "s":
        return item[1]
    if kind == "n":
        return None
    if kind == "T":
        return True
    if kind == "F":
        return False
    if kind == "b":
        return bytes.fromhex(item[1])
    if kind == "a":
        return bytearray(bytes.fromhex(item[1]))
    if kind == "m":
        buf = bytearray(bytes.fromhex(item[1]))
        views.append(buf)
        return memoryview(buf)
    parts = [_decode(x, views) for x in item[1]]
    return tuple(parts) if kind == "t" else parts


_ble = None


def BLE():
    global _ble
    if _ble is None:
        _ble = _BLE()
    return _ble
