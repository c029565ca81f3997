# `bluetooth` for the virtual board: the peripheral half of MicroPython's low-level
# BLE API, behaving like the NimBLE binding on an ESP32, bridged to a real BLE stack
# (bumble) in the host process (host_tools/vboard.py).
#
# ESP32 behaviour kept here:
# - IRQ codes and data tuples as on the ESP32; addresses arrive as memoryviews.
# - gatts_register_services() returns the value handles the central really sees.
# - Default ATT MTU 23; notifications longer than MTU-3 are truncated.
# - gatts_notify() sends whether or not the central subscribed;
#   gatts_write(..., send_update=True) notifies/indicates subscribers only.
# - A central's write is cut to the value's buffer (20 bytes unless
#   gatts_set_buffer() made it larger), as NimBLE does.
# - gatts_notify()/gatts_indicate() raise OSError(ENOTCONN) for an unknown
#   connection and OSError(ENOMEM) when the simulated buffers are out (the host
#   switches this on: VirtualInsole.set_notify_buffers()).
# - No _IRQ_GATTS_READ_REQUEST (the ESP32 port does not raise it) and no CCCD writes.
# - Pairing keys live where NimBLE keeps them: with the firmware, through
#   _IRQ_SET_SECRET / _IRQ_GET_SECRET (sec_type 2, key = the peer's name in the host
#   stack, value = the host stack's keys as JSON: opaque to the firmware).
import errno
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
    vboard,
)

FLAG_READ = 0x0002
FLAG_WRITE_NO_RESPONSE = 0x0004
FLAG_WRITE = 0x0008
FLAG_NOTIFY = 0x0010
FLAG_INDICATE = 0x0020

_IRQ_CENTRAL_CONNECT = 1
_IRQ_CENTRAL_DISCONNECT = 2
_IRQ_GATTS_WRITE = 3
_IRQ_GATTS_INDICATE_DONE = 20
_IRQ_MTU_EXCHANGED = 21
_IRQ_CONNECTION_UPDATE = 27
_IRQ_ENCRYPTION_UPDATE = 28
_IRQ_GET_SECRET = 29
_IRQ_SET_SECRET = 30

_DEFAULT_MTU = 23
_DEFAULT_ATTR_LEN = 20
_MAX_ATTR_LEN = 512


class UUID:
    """bluetooth.UUID: from an int (16-bit), a 128-bit string, or 2/4/16 LE bytes."""

    def __init__(self, value):
        if isinstance(value, UUID):
            self._le = value._le
        elif isinstance(value, int):
            if not 0 <= value <= 0xFFFFFFFF:
                raise ValueError("invalid UUID")
            self._le = struct.pack("<H" if value <= 0xFFFF else "<I", value)
        elif isinstance(value, str):
            h = value.replace("-", "")
            if len(h) != 32:
                raise ValueError("invalid UUID")
            self._le = bytes(reversed(bytes(int(h[i : i + 2], 16) for i in range(0, 32, 2))))
        else:
            b = bytes(value)
            if len(b) not in (2, 4, 16):
                raise ValueError("invalid UUID")
            self._le = b

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
        """Canonical text: 0x180f for 16/32-bit, dashed hex for 128-bit."""
        if len(self._le) == 16:
            h = "".join("%02x" % b for b in reversed(self._le))
            return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])
        v = 0
        for b in reversed(self._le):
            v = (v << 8) | b
        return "0x%04x" % v

    def __repr__(self):
        t = self.text()
        return "UUID(%s)" % (t if len(self._le) != 16 else "'" + t + "'")


class _BLE:
    def __init__(self):
        self._active = False
        self._handler = None
        self._values = {}  # value handle -> bytes
        self._bufsize = {}  # value handle -> (capacity, append)
        self._conns = {}  # conn handle -> ATT MTU
        self._config = {
            "gap_name": b"MPY ESP32",
            "mtu": 256,
            "rxbuf": 256,
            "addr_mode": 0,
            "bond": False,
            "mitm": False,
            "io": 3,
            "le_secure": False,
        }
        self._nbuf = 0  # simulated notification buffers (0 = unlimited)
        self._refill_us = 0
        self._tokens = 0
        self._refilled = 0
        self._fail = 0  # next notifications to fail with ENOMEM
        self.sent = 0  # notifications handed to the stack
        vboard.ble = self

    # ---- radio state ---------------------------------------------------------
    def active(self, change=None):
        if change is not None:
            self._active = bool(change)
            if not self._active:
                self._conns = {}
        return self._active

    def config(self, *args, **kwargs):
        if args:
            if len(args) != 1 or kwargs:
                raise TypeError("config() takes one name, or keywords")
            key = args[0]
            if key == "mac":
                return vboard.mac
            if key not in self._config:
                raise ValueError("unknown config param")
            return self._config[key]
        for key, value in kwargs.items():
            if key not in self._config:
                raise ValueError("unknown config param")
            if key == "gap_name":
                value = value.encode() if isinstance(value, str) else bytes(value)
            elif key == "mtu" and not 23 <= value <= 517:
                raise ValueError("mtu must be 23..517")
            self._config[key] = value
        shown = {}
        for key, value in kwargs.items():
            v = self._config[key]
            shown[key] = v.decode() if isinstance(v, bytes) else v
        vboard.send_json(MSG_CONFIG, shown)

    def irq(self, handler):
        self._handler = handler

    def _require_active(self):
        if not self._active:
            raise OSError(errno.EPERM)

    # ---- GAP -----------------------------------------------------------------
    def gap_advertise(self, interval_us, adv_data=None, *, resp_data=None, connectable=True):
        self._require_active()
        msg = {"interval_us": interval_us, "connectable": bool(connectable)}
        if adv_data is not None:
            msg["adv"] = bytes(adv_data).hex()
        if resp_data is not None:
            msg["resp"] = bytes(resp_data).hex()
        vboard.send_json(MSG_ADVERTISE, msg)

    def gap_disconnect(self, conn_handle):
        self._require_active()
        if conn_handle not in self._conns:
            return False
        vboard.send(MSG_DISCONNECT, struct.pack("<H", conn_handle))
        return True

    def gap_scan(self, *args, **kwargs):
        raise OSError(errno.EOPNOTSUPP)

    def gap_connect(self, *args, **kwargs):
        raise OSError(errno.EOPNOTSUPP)

    # ---- GATT server ---------------------------------------------------------
    def gatts_register_services(self, services_definition):
        self._require_active()
        spec = []
        for service in services_definition:
            chars = []
            for ch in service[1]:
                descs = []
                if len(ch) > 2:
                    for d in ch[2]:
                        descs.append([UUID(d[0]).text(), d[1]])
                chars.append([UUID(ch[0]).text(), ch[1], descs])
            spec.append([UUID(service[0]).text(), chars])
        if vboard.sock is None:
            handles = self._local_handles(spec)
        else:
            handles = vboard.request(MSG_REGISTER, spec)
        self._values = {}
        self._bufsize = {}
        out = []
        for svc in handles:
            for h in svc:
                self._values[h] = b""
                self._bufsize[h] = (_DEFAULT_ATTR_LEN, False)
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

    def _check_handle(self, value_handle):
        if value_handle not in self._values:
            raise OSError(errno.EINVAL)

    def gatts_read(self, value_handle):
        self._check_handle(value_handle)
        return self._values[value_handle]

    def gatts_write(self, value_handle, data, send_update=False):
        self._check_handle(value_handle)
        data = bytes(data)
        self._values[value_handle] = data
        vboard.send(
            MSG_VALUE, data, struct.pack("<HB", value_handle, 1 if send_update else 0)
        )

    def gatts_set_buffer(self, value_handle, length, append=False):
        self._check_handle(value_handle)
        self._bufsize[value_handle] = (min(length, _MAX_ATTR_LEN), bool(append))

    def _take_buffer(self):
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
        self._tokens -= 1

    def _refuse(self):
        vboard.send(MSG_REFUSED, b"")
        raise OSError(errno.ENOMEM)

    def _send_value(self, kind, conn_handle, value_handle, data):
        self._require_active()
        mtu = self._conns.get(conn_handle)
        if mtu is None:
            raise OSError(errno.ENOTCONN)
        self._check_handle(value_handle)
        if data is None:
            data = self._values[value_handle]
        self._take_buffer()
        data = bytes(data)
        if len(data) > mtu - 3:
            data = data[: mtu - 3]
        vboard.send(kind, data, struct.pack("<HH", conn_handle, value_handle))
        self.sent += 1

    def gatts_notify(self, conn_handle, value_handle, data=None):
        self._send_value(MSG_NOTIFY, conn_handle, value_handle, data)

    def gatts_indicate(self, conn_handle, value_handle, data=None):
        self._send_value(MSG_INDICATE, conn_handle, value_handle, data)

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
        if kind == HOST_CONNECT or kind == HOST_DISCONNECT:
            conn, addr_type = struct.unpack_from("<HB", body)
            addr = memoryview(body[3:9])
            if kind == HOST_CONNECT:
                self._conns[conn] = _DEFAULT_MTU
                self._irq(_IRQ_CENTRAL_CONNECT, (conn, addr_type, addr))
            else:
                self._conns.pop(conn, None)
                self._irq(_IRQ_CENTRAL_DISCONNECT, (conn, addr_type, addr))
        elif kind == HOST_WRITE:
            conn, handle = struct.unpack_from("<HH", body)
            if handle not in self._values:
                return
            size, append = self._bufsize[handle]
            data = body[4:]
            if append:
                data = self._values[handle] + data
            self._values[handle] = data[:size]
            self._irq(_IRQ_GATTS_WRITE, (conn, handle))
        elif kind == HOST_MTU:
            conn, mtu = struct.unpack_from("<HH", body)
            if conn in self._conns:
                self._conns[conn] = mtu
            self._irq(_IRQ_MTU_EXCHANGED, (conn, mtu))
        elif kind == HOST_CONN_UPDATE:
            self._irq(_IRQ_CONNECTION_UPDATE, struct.unpack_from("<HHHHB", body))
        elif kind == HOST_ENCRYPTION:
            conn, enc, auth, bonded, key_size = struct.unpack_from("<HBBBB", body)
            self._irq(
                _IRQ_ENCRYPTION_UPDATE, (conn, bool(enc), bool(auth), bool(bonded), key_size)
            )
        elif kind == HOST_INDICATE_DONE:
            self._irq(_IRQ_GATTS_INDICATE_DONE, struct.unpack_from("<HHB", body))
        elif kind == HOST_GET_SECRET:
            sec_type, index, has_key = struct.unpack_from("<BBB", body)
            key = memoryview(body[3:]) if has_key else None
            value = self._irq(_IRQ_GET_SECRET, (sec_type, index, key))
            if value is None:
                vboard.send(MSG_SECRET, b"\x00")
            else:
                vboard.send(MSG_SECRET, bytes(value), b"\x01")
        elif kind == HOST_SET_SECRET:
            sec_type, key_len, has_value = struct.unpack_from("<BHB", body)
            key = memoryview(body[4 : 4 + key_len])
            value = memoryview(body[4 + key_len :]) if has_value else None
            self._irq(_IRQ_SET_SECRET, (sec_type, key, value))

    def _irq(self, event, data):
        if self._handler is None:
            return None
        try:
            return self._handler(event, data)
        except Exception as e:  # as on the ESP32: report and keep going
            print("Uncaught exception in IRQ callback handler")
            sys.print_exception(e)
            return None


_ble = None


def BLE():
    global _ble
    if _ble is None:
        _ble = _BLE()
    return _ble

