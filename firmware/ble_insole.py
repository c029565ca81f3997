# The insole's GATT server on MicroPython's low-level bluetooth API.
#
# Up to MAX_LINKS centrals at once (CONFIG_BT_NIMBLE_MAX_CONNECTIONS=4 in
# MicroPython's ports/esp32/boards/sdkconfig.ble): advertising goes on while a slot
# is free, so a stranger who stays connected cannot lock the owner out. The
# bluetooth module is passed in (ble object and UUID class) so that only app.py
# imports it.
#
# Security (docs/SECURITY.md): LE Secure Connections with MITM protection and the
# insole's fixed six-digit passkey (io=DISPLAY_ONLY: NimBLE raises
# _IRQ_PASSKEY_ACTION with action DISPLAY and the handler answers gap_passkey()).
# Running Speed and Cadence, Device Information and Battery are open to every
# central (watches and apps that never pair); the insole service (step events,
# Status, Control, raw stream) is for links encrypted with an authenticated key
# only. The stack enforces it through the characteristic flags (ble_gatt.py, the
# table registered at boot: NimBLE turns them into ATT permissions, and a CCCD
# inherits its characteristic's: ble_gatts.c ble_gatts_register_clt_cfg_dsc), and
# the firmware checks again itself: it tracks
# the `authenticated` field of _IRQ_ENCRYPTION_UPDATE per link, refuses protected
# reads in _IRQ_GATTS_READ_REQUEST, drops Control writes of other links and sends
# protected notifications to authenticated links only.
#
# New bonds: only while the pairing window (pairing.py) is open; outside it the
# passkey is never handed to the stack and the central is disconnected. The keys a
# pairing stores (_IRQ_SET_SECRET, which NimBLE writes before it reports the
# encryption: ble_sm_process_result) are held back until its _IRQ_ENCRYPTION_UPDATE
# says the key is authenticated; keys of a "just works" pairing are dropped and an
# old bond the pairing deleted (NimBLE's repeat-pairing rule,
# modbluetooth_nimble.c BLE_GAP_EVENT_REPEAT_PAIRING) is put back, so a stranger who
# copies a bonded central's address cannot erase its bond either.
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
except ImportError:  # CPython: it evaluates the class's annotations, MicroPython never
    from typing import Any

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


import lazy

# protocol.py's constants, private here (no name, no lookup on the insole;
# tests/test_firmware_units.py checks every copy against protocol.py's)
_ERR_BUSY = const(0x08)

_IRQ_CENTRAL_CONNECT = const(1)
_IRQ_CENTRAL_DISCONNECT = const(2)
_IRQ_GATTS_WRITE = const(3)
_IRQ_GATTS_READ_REQUEST = const(4)
_IRQ_CONNECTION_UPDATE = const(27)
_IRQ_ENCRYPTION_UPDATE = const(28)
_IRQ_GET_SECRET = const(29)
_IRQ_SET_SECRET = const(30)
_IRQ_PASSKEY_ACTION = const(31)

_PASSKEY_ACTION_INPUT = const(2)
_PASSKEY_ACTION_DISPLAY = const(3)
_PASSKEY_ACTION_NUMCMP = const(4)
_SEC_OUR = const(1)  # BLE_STORE_OBJ_TYPE_OUR_SEC
_SEC_PEER = const(2)  # BLE_STORE_OBJ_TYPE_PEER_SEC
_ATT_INSUFFICIENT_AUTHEN = const(0x05)
_NO_CONN = const(0xFFFF)  # a read with no connection (gatts_notify without data)
_ENOMEM = const(12)
_ADV_INTERVAL_US = const(100000)
_MAX_COMMANDS = const(4)
_U16 = const(0xFFFF)
_COUNT_MAX = const(0x1FFFFFFF)
_PASSKEY_MAX = const(999999)

_MAX_LINKS = const(4)  # CONFIG_BT_NIMBLE_MAX_CONNECTIONS (ports/esp32/boards/sdkconfig.ble)

# notify() results
_SENT = const(0)
_NO_LINK = const(1)
_NO_MEMORY = const(2)  # OSError(ENOMEM): the stack is out of buffers, retry later
_FAILED = const(3)


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


# InsoleBLE's integer state: one array (self._v) in place of 6 attributes, whose
# names MicroPython would intern for good; each method binds it to a local
_SLOT_ENCRYPTED = const(1)  # InsoleBLE._slot_flags bits
_SLOT_NOT_ENCRYPTED = const(0xFE)
_SLOT_PASSKEY_GIVEN = const(2)
_SLOT_TOLD_REPAIR = const(4)
_V_ADV_DUE = const(0)
_V_ADV_FAILING = const(1)
_V_FAILURES_SEEN = const(2)
_V_PASSKEY = const(3)
_V_PRIMARY = const(4)
_V_REFUSED_WRITES = const(5)
_V_N = const(6)


class InsoleBLE:
    # The radio's state, set up by ble_gatt.setup() (boot-only code, dropped after:
    # its comments say what each is). Annotations compile to nothing on MicroPython.
    link_conn: list
    link_auth: list
    link_gen: list
    window: Any
    ready: int
    nomem: int
    irq_errors: int
    changes: int
    failed_pairings: int
    h_event: int
    h_status: int
    h_control: int
    h_raw: int
    h_rsc: int
    h_battery: int
    _v: Any  # an array("i")
    _slot_flags: bytearray
    _ble: Any
    _log: Any
    _bonds: Any
    _peer: list
    _commands: list
    _held: list
    _undo: list
    _adv: Any
    _resp: Any

    def __init__(self, ble, UUID, log, board_name, bonds=None, passkey=None, window=None):
        """passkey: the six digits centrals must enter (None: nobody can bond);
        window: a pairing.PairingWindow (app.py opens it once the insole runs), or
        None: no new bond is ever taken. Boot-only code (ble_gatt.py) sets it up."""
        lazy.run("ble_gatt", "setup", self, ble, UUID, log, board_name, bonds, passkey,
                 window)

    # ---- the primary link: the newest authenticated central ------------------
    @property
    def conn(self):
        """Connection handle of the primary link, -1 when there is none."""
        v = self._v
        i = v[_V_PRIMARY]
        return self.link_conn[i] if i >= 0 else -1

    @property
    def encrypted(self):
        """The primary link is encrypted with an authenticated key (it always is:
        only such a link becomes the primary)."""
        v = self._v
        i = v[_V_PRIMARY]
        return i >= 0 and self.link_auth[i]

    def link_ready(self, slot):
        """True when slot holds a link with an authenticated key."""
        return self.link_conn[slot] >= 0 and self.link_auth[slot]

    def _pick_primary(self):
        # the authenticated link that became so most recently (highest generation)
        v = self._v
        best = -1
        for i in range(_MAX_LINKS):
            if self.link_ready(i) and (best < 0 or self.link_gen[i] > self.link_gen[best]):
                best = i
        v[_V_PRIMARY] = best

    # ---- advertising ---------------------------------------------------------
    def advertise(self):
        """Start advertising; True when the stack took it. When it did not (ENOMEM
        with every connection slot taken, say), flush() tries again while a slot is
        free."""
        v = self._v
        if self._adv is None:
            return False  # no name yet: ble_gatt.set_name() comes first
        v[_V_ADV_DUE] = True
        if -1 not in self.link_conn:
            return False  # the stack would refuse: no connection left to offer
        try:
            self._ble.gap_advertise(_ADV_INTERVAL_US, adv_data=self._adv, resp_data=self._resp)
        except OSError as e:
            if not v[_V_ADV_FAILING]:  # one line per outage, not one per retry
                v[_V_ADV_FAILING] = True
                self._log("ble", "advertise %s" % e)
            return False
        v[_V_ADV_DUE] = False
        v[_V_ADV_FAILING] = False
        return True

    def flush(self):
        """The main loop's part of the IRQs (call it often; allocates nothing while
        nothing is pending): writes changed bonds to flash, tells the pairing window
        about failed pairings and the time, restarts advertising while a
        connection slot is free."""
        v = self._v
        bonds = self._bonds
        if bonds is not None and bonds.dirty:
            bonds.flush()
        window = self.window
        if window is not None:
            while v[_V_FAILURES_SEEN] != self.failed_pairings:
                v[_V_FAILURES_SEEN] = (v[_V_FAILURES_SEEN] + 1) & _COUNT_MAX
                window.failed()
            window.update()
        if v[_V_ADV_DUE]:
            self.advertise()

    # ---- the wearer's gestures (main loop) ------------------------------------
    def open_window(self, why):
        if self.window is not None:
            self.window.start(why)

    # ---- the IRQ handler ----------------------------------------------------
    def _irq(self, event, data):
        self.changes = (self.changes + 1) & _COUNT_MAX
        try:
            if type(data) is not tuple:
                return None
            n = len(data)
            if event == _IRQ_CENTRAL_CONNECT:
                if n == 3:
                    self._connected(_u16(data[0]), data[1], data[2])
            elif event == _IRQ_CENTRAL_DISCONNECT:
                if n == 3:
                    self._disconnected(_u16(data[0]))
            elif event == _IRQ_GATTS_WRITE:
                slot = self._slot(_u16(data[0])) if n == 2 and data[1] == self.h_control \
                    else -1
                if slot >= 0:  # a Control write of a link: queued for the sampling loop
                    value = self._ble.gatts_read(self.h_control)
                    if not self.link_auth[slot]:
                        # the stack refuses such writes already
                        # (_FLAG_WRITE_AUTHENTICATED); one that gets past it changes
                        # nothing and gets no answer
                        if self._v[_V_REFUSED_WRITES] < _COUNT_MAX:
                            self._v[_V_REFUSED_WRITES] += 1
                        self._log("ble", "control write of conn %d refused: not "
                                  "authenticated" % self.link_conn[slot])
                    elif len(self._commands) < _MAX_COMMANDS:
                        self._commands.append((bytes(value), self.link_conn[slot], slot))
                    else:
                        self.notify_link(slot, self.h_control,
                                         bytes((value[0] if value else 0, _ERR_BUSY)))
            elif event == _IRQ_GATTS_READ_REQUEST:
                if n == 2:
                    # Status is for authenticated links; the rest is open, and a read with
                    # no connection is the insole's own
                    conn = _u16(data[0])
                    if data[1] == self.h_status and conn != _NO_CONN:
                        slot = self._slot(conn)
                        if slot < 0 or not self.link_auth[slot]:
                            return _ATT_INSUFFICIENT_AUTHEN
                    return 0
            elif event == _IRQ_ENCRYPTION_UPDATE:
                if n == 5:
                    self._encryption(self._slot(_u16(data[0])), _small(data[1]) > 0,
                                     _small(data[2]) > 0, _small(data[3]) > 0, _small(data[4]))
            elif event == _IRQ_PASSKEY_ACTION:
                if n == 3:
                    conn = _u16(data[0])
                    action = _small(data[1])
                    v = self._v
                    slot = self._slot(conn)
                    ble = self._ble
                    if action == _PASSKEY_ACTION_DISPLAY and slot >= 0 and v[_V_PASSKEY] >= 0 \
                            and self.window is not None and self.window.open:
                        try:
                            # modbluetooth_nimble.c mp_bluetooth_gap_passkey ->
                            # ble_sm_inject_io; the outcome is logged with the encryption
                            ble.gap_passkey(conn, action, v[_V_PASSKEY])
                            self._slot_flags[slot] |= _SLOT_PASSKEY_GIVEN
                            return None
                        except OSError as e:
                            self._log("pair", "passkey %s" % e)
                    elif action == _PASSKEY_ACTION_NUMCMP:
                        try:
                            ble.gap_passkey(conn, action, 0)  # no screen to compare: refused
                        except OSError:
                            pass
                    self._log("pair", "pairing of conn %d refused: window %s" % (
                        conn, "open" if self.window is not None and self.window.open
                        else "closed"))
                    try:
                        ble.gap_disconnect(conn)
                    except OSError:
                        pass
            elif event == _IRQ_CONNECTION_UPDATE:
                if n == 5:
                    self._log("ble", "interval %d" % _small(data[1]))
            elif event == _IRQ_GET_SECRET:
                if n == 3:
                    return self._get_secret(data[0], data[1], data[2])
            elif event == _IRQ_SET_SECRET:
                return n == 3 and self._set_secret(data[0], data[1], data[2])
            return None
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

    def _slot(self, conn):
        """The slot of connection handle conn, or -1."""
        if conn < 0:
            return -1
        for i in range(_MAX_LINKS):
            if self.link_conn[i] == conn:
                return i
        return -1

    def _connected(self, conn, addr_type, addr):
        if conn < 0:
            return
        slot = self._slot(conn)
        if slot < 0:  # a free slot
            for i in range(_MAX_LINKS):
                if self.link_conn[i] < 0:
                    slot = i
                    break
        if slot < 0:
            return  # more links than the stack holds: cannot happen
        self.link_conn[slot] = conn
        self.link_auth[slot] = False
        self.ready &= ~(1 << slot)
        self._slot_flags[slot] = 0
        # NimBLE's store key (a ble_addr_t: type, then the address LSB first) for the
        # address _IRQ_CENTRAL_CONNECT gives (most significant byte first)
        a = _bytes(addr)
        self._peer[slot] = None if a is None or len(a) != 6 or _small(addr_type) < 0 \
            else bytes((addr_type & 1, a[5], a[4], a[3], a[2], a[1], a[0]))
        self._log("ble", "connect %d" % conn)
        self.advertise()  # a connection ends advertising: on again while a slot is free

    def _disconnected(self, conn):
        v = self._v
        slot = self._slot(conn)
        if conn < 0:
            return
        self._log("ble", "disconnect %d" % conn)
        if slot < 0:
            return
        self._restore(slot)  # a pairing cut short keeps the bond it was replacing
        self.link_conn[slot] = -1
        self.link_auth[slot] = False
        self.ready &= ~(1 << slot)
        self._slot_flags[slot] &= _SLOT_NOT_ENCRYPTED
        self._peer[slot] = None
        if slot == v[_V_PRIMARY]:
            self._pick_primary()
        self.advertise()

    def _encryption(self, slot, encrypted, authenticated, bonded, key_size):
        vs = self._v
        if slot < 0:
            return
        auth = encrypted and authenticated
        if self._held:
            # the end of a pairing: its keys were stored just before this IRQ
            if auth and self._slot_flags[slot] & _SLOT_PASSKEY_GIVEN:
                for t, k, v in self._held:
                    self._keep(t, k, v)
                self._held = []
                self._restore(slot, False)  # what it replaced is gone for good
            else:
                self._held = []
                self._restore(slot)
                self._log("pair", "bond of conn %d refused: %s" % (
                    self.link_conn[slot],
                    "not authenticated (pair with the passkey)" if encrypted else "failed"))
        elif not encrypted:
            self._restore(slot)
        if not encrypted:
            n = self.failed_pairings
            if n < _COUNT_MAX:
                self.failed_pairings = n + 1
        flags = self._slot_flags[slot] & _SLOT_TOLD_REPAIR  # passkey and encryption anew
        self._slot_flags[slot] = flags | _SLOT_ENCRYPTED if encrypted else flags
        was = self.link_auth[slot]
        self.link_auth[slot] = auth
        if auth:
            self.ready |= 1 << slot
        else:
            self.ready &= ~(1 << slot)
        self._log("ble", "encrypted %d bonded %d auth %d" % (encrypted, bonded, auth))
        if encrypted and not auth and bonded and not self._slot_flags[slot] & _SLOT_TOLD_REPAIR:
            self._slot_flags[slot] |= _SLOT_TOLD_REPAIR
            self._log("pair", "conn %d: its bond has no passkey (made before passkey "
                      "pairing): re-pair once with the passkey" % self.link_conn[slot])
        if auth and not was:
            self.link_gen[slot] = (self.link_gen[slot] + 1) & _COUNT_MAX
            vs[_V_PRIMARY] = slot
        elif was and not auth and slot == vs[_V_PRIMARY]:
            self._pick_primary()

    def _keep(self, sec_type, key, value):
        if self._bonds is not None:
            self._bonds.set(sec_type, key, value)

    def _restore(self, slot, put_back=True):
        """Put back what a pairing on slot deleted (put_back False: forget it)."""
        # loops, not comprehensions, here and below: each comprehension is code of
        # its own in RAM
        back = []
        rest = []
        for u in self._undo:
            if u[0] == slot:
                back.append(u)
            else:
                rest.append(u)
        if not back:
            return
        self._undo = rest
        if put_back:
            for _, t, k, v in back:
                self._keep(t, k, v)

    def _held_without(self, sec_type, key):
        """The held keys but the one of (sec_type, key)."""
        rest = []
        for h in self._held:
            if h[0] != sec_type or h[1] != key:
                rest.append(h)
        return rest

    def _get_secret(self, sec_type, index, key):
        bonds = self._bonds
        if bonds is None or _small(sec_type) < 0 or _small(index) < 0:
            return None
        if key is not None:
            key = _bytes(key)
            if key is None:
                return None
            for t, k, v in self._held:  # a pairing reads back what it just wrote
                if t == sec_type and k == key:
                    return v
        value = bonds.get(sec_type, index, key)
        return value if isinstance(value, bytes) else None

    def _set_secret(self, sec_type, key, value):
        # The answer goes back to NimBLE: False on a write makes it unpair the oldest
        # peer and retry; True on deleting something that is not there makes it
        # delete again, for ever (ble_store_util_delete_all). So a delete says
        # whether there was something to delete, and a write is always taken (held
        # back until the pairing proves authenticated).
        bonds = self._bonds
        key = _bytes(key)
        if bonds is None or key is None or _small(sec_type) < 0:
            return False
        peer_key = sec_type == _SEC_OUR or sec_type == _SEC_PEER
        if value is None:
            old = bonds.get(sec_type, 0, key)
            rest = self._held_without(sec_type, key)
            if len(rest) != len(self._held):
                self._held = rest
                if old is None:
                    return True
            if old is None:
                return False
            slot = -1  # the link of the peer whose key this is
            for i in range(_MAX_LINKS if peer_key else 0):
                if self.link_conn[i] >= 0 and self._peer[i] == key:
                    slot = i
                    break
            if slot >= 0:
                self._undo.append((slot, sec_type, key, old))
            return bool(bonds.set(sec_type, key, None))
        value = _bytes(value)
        if value is None:
            return False
        if peer_key:
            self._held = self._held_without(sec_type, key)
            self._held.append((sec_type, key, value))
            return True
        return bool(bonds.set(sec_type, key, value))

    # ---- the main loop's side -----------------------------------------------
    def next_link_command(self):
        """(data, slot) of the oldest queued Control write of a link that is still
        there and authenticated, or None."""
        while self._commands:
            data, conn, slot = self._commands.pop(0)
            if conn == self.link_conn[slot] and self.link_auth[slot]:
                return (data, slot)
        return None

    def notify_link(self, slot, handle, data):
        """Send one notification to the link in slot now, if it is authenticated
        (the only links that get the insole's own characteristics); returns SENT,
        NO_LINK, NO_MEMORY or FAILED."""
        conn = self.link_conn[slot]
        if conn < 0 or not self.link_auth[slot]:
            return _NO_LINK
        try:
            self._ble.gatts_notify(conn, handle, data)
        except OSError as e:
            if e.args[0] == _ENOMEM:
                if self.nomem < _U16:
                    self.nomem += 1
                return _NO_MEMORY
            self._log("ble", "notify %s" % e)
            return _FAILED
        return _SENT

    def reply_link(self, slot, data):
        return self.notify_link(slot, self.h_control, data)

    def publish(self, handle, data):
        """Update a readable value and tell the centrals (best effort: a missed
        status or RSC update is replaced by the next one). Status goes to the
        authenticated links only; RSC and battery to every subscribed central."""
        ble = self._ble
        try:
            if handle == self.h_status:
                ble.gatts_write(handle, data)
                for i in range(_MAX_LINKS):
                    if self.link_conn[i] >= 0 and self.link_auth[i]:
                        self.notify_link(i, handle, data)
            else:
                ble.gatts_write(handle, data, True)
        except OSError as e:
            self._log("ble", "write %s" % e)
