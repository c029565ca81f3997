# Device settings in a JSON file on flash, and the file handling that every state
# file of the firmware shares (the settings here, the BLE bonds in bonds.py).
#
# Writing: write_atomic() writes PATH.tmp completely, then os.rename()s it over
# PATH, so a power cut leaves either the old or the new file. (Should a file
# system refuse to rename over an existing file, the old one is removed first;
# loading then finds the complete .tmp.)
#
# Reading: boot must never fail because of what is on flash. A state file is
# stat()ed first (a directory or an oversized file is never opened), read as at
# most `limit` bytes, decoded and parsed inside one broad try: MicroPython's json
# raises ValueError, MemoryError or OverflowError, CPython's RecursionError for
# deep nesting, and text-mode reads of non-UTF-8 raise UnicodeError, so only
# bytes are read. Anything unusable counts as absent, and the file is renamed to
# PATH.bad: the next boot starts clean and a person can look at it. The owner of
# the file logs one line about it.
import json
import os

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


from control_wire import name_ok

# protocol.py's constants, private here (no name, no lookup on the insole;
# tests/test_firmware_units.py checks every copy against protocol.py's)
_MAINS_EU = const(50)
_MAINS_US = const(60)
_NAME_MAX = const(12)
_RATE_MAX = const(400)
_RATE_MIN = const(50)
_STRIDE_MAX = const(300)
_STRIDE_MIN = const(30)

# zero: the unloaded ADC levels (heel, arch, forefoot) from the last zero-calibrate,
# or None before the first one. passkey: the six digits a central must enter to
# bond (docs/SECURITY.md), made once at first boot by ensure_passkey(); None until then.
# mains_hz: the local mains frequency, whose hum the detector's pre-filter cancels.
DEFAULTS = {"side": "L", "name": "Insole", "rate_hz": 100, "stride_cm": 140, "zero": None,
            "passkey": None, "mains_hz": 50}
# DEFAULTS' keys in a fixed order
_FIELDS = const(("side", "name", "rate_hz", "stride_cm", "zero", "passkey", "mains_hz"))
_U16_MAX = const(65535)
_PASSKEY_MAX = const(999999)  # six decimal digits (NimBLE ble_sm_inject_io refuses more)
_PASSKEY_BITS = const(0xFFFFF)  # 20 random bits per draw: 1048575 >= PASSKEY_MAX
# A saved config is about 130 bytes; the rest is room for a hand-edited file.
_CONFIG_MAX = const(512)
_JSON_MAX = const(16384)  # read_json()'s cap for callers that give none

# os.stat() st_mode file types, as MicroPython's VFS reports them
# (extmod/vfs_lfsx.c and extmod/vfs_fat.c: MP_S_IFDIR or MP_S_IFREG)
_S_IFMT = const(0xF000)
_S_IFREG = const(0x8000)
_S_IFDIR = const(0x4000)
_ENOENT = const(2)


def valid(key, value):
    """True when value is acceptable for the config field key."""
    if key == "side":
        return value in ("L", "R")
    if key == "name":
        # printable ASCII only, as a Control write of a name (protocol.decode_command)
        return (isinstance(value, str) and len(value) <= _NAME_MAX
                and all(" " <= c <= "~" for c in value) and name_ok(value))
    if key == "passkey":
        return value is None or (type(value) is int and 0 <= value <= _PASSKEY_MAX)
    if key == "zero":
        if value is None:
            return True
        if not isinstance(value, list) or len(value) != 3:
            return False
        return all(type(v) is int and 0 <= v <= _U16_MAX for v in value)
    if type(value) is not int:
        return False
    if key == "rate_hz":
        return _RATE_MIN <= value <= _RATE_MAX
    if key == "stride_cm":
        return _STRIDE_MIN <= value <= _STRIDE_MAX
    if key == "mains_hz":
        return value == _MAINS_EU or value == _MAINS_US
    return False


def new_passkey(urandom=None):
    """A uniformly random passkey 1..999999 from the chip's random source: 20-bit
    draws, the ones above PASSKEY_MAX thrown away (about 1 in 21), so no digit
    pattern is likelier than another. Never 000000, which some stacks take for
    "no passkey" (bumble's SMP does)."""
    rand = urandom or os.urandom
    while True:
        b = rand(3)
        value = (b[0] | (b[1] << 8) | (b[2] << 16)) & _PASSKEY_BITS
        if 0 < value <= _PASSKEY_MAX:
            return value


def set_aside(path, fs=os):
    """Rename the damaged file (or directory) at path to path.bad; returns the new
    name, or None when it could not be moved."""
    bad = path + ".bad"
    try:
        fs.rename(path, bad)
        return bad
    except OSError:
        pass
    try:
        fs.remove(bad)  # an older .bad in the way (FAT will not rename over it)
        fs.rename(path, bad)
        return bad
    except OSError:
        return None


def write_atomic(path, text, fs=os, opener=open):
    tmp = path + ".tmp"
    try:
        f = opener(tmp, "w")
    except OSError:
        # something that is not a file (a directory) in the way: move it aside, once
        if set_aside(tmp, fs) is None:
            raise
        f = opener(tmp, "w")
    try:
        f.write(text)
    finally:
        f.close()
    try:
        fs.rename(tmp, path)
    except OSError:
        # some file systems will not rename over an existing file
        fs.remove(path)
        fs.rename(tmp, path)


def _errno(e):
    return e.args[0] if e.args and type(e.args[0]) is int else 0


def read_state(path, limit, shape, fs=os, opener=open):
    """Read the JSON file at path. Returns (value, None) when it holds a value of
    type shape; (None, None) when there is no such file; (None, why) when the file
    is there but cannot be used. Never raises (but for KeyboardInterrupt)."""
    try:
        st = fs.stat(path)
    except OSError as e:
        if _errno(e) == _ENOENT:
            return None, None
        return None, "stat error %d" % _errno(e)
    except Exception as e:
        return None, "%s: %s" % ("stat", type(e).__name__)
    try:
        kind = st[0] & _S_IFMT
        if kind == _S_IFDIR:
            return None, "a directory"
        if kind != _S_IFREG:
            return None, "not a file"
        if st[6] > limit:
            return None, "over %d bytes" % limit
    except Exception as e:
        return None, "%s: %s" % ("stat", type(e).__name__)
    try:
        f = opener(path, "rb")
    except OSError as e:
        return None, "open error %d" % _errno(e)
    except Exception as e:
        return None, "%s: %s" % ("open", type(e).__name__)
    try:
        try:
            raw = f.read(limit + 1)  # one byte more tells a file that grew past stat's size
        finally:
            f.close()
    except OSError as e:
        return None, "read error %d" % _errno(e)
    except Exception as e:
        return None, "%s: %s" % ("read", type(e).__name__)
    try:
        if raw is None or len(raw) > limit:
            return None, "over %d bytes" % limit
        text = raw if isinstance(raw, str) else raw.decode()
        raw = None
    except Exception:
        return None, "not UTF-8"
    try:
        value = json.loads(text)
    except Exception as e:
        return None, "not JSON: %s" % type(e).__name__
    if not isinstance(value, shape):
        return None, "not a JSON %s" % ("object" if shape is dict else "array")
    return value, None


def read_json(path, opener=open, limit=_JSON_MAX, fs=os):
    """The parsed file, or None when it is missing or cannot be used."""
    return read_state(path, limit, object, fs, opener)[0]


class StateFile:
    """One JSON state file on flash and its .tmp twin.

    load() returns what the file holds, or what a complete .tmp holds when a save
    was cut short after the old file was removed; files that cannot be used are
    renamed aside and described in problems (one text per file)."""

    def __init__(self, path, limit, fs=os, opener=open):
        self.path = path
        self.limit = limit
        self.fs = fs
        self.opener = opener
        self.problems = []
        self.from_tmp = False  # load() found the value in the .tmp
        self._source = None

    def load(self, shape):
        self.problems = []
        self.from_tmp = False
        self._source = None
        for name in (self.path, self.path + ".tmp"):
            value, why = read_state(name, self.limit, shape, self.fs, self.opener)
            if why is not None:
                self._aside(name, why)
            if value is not None:
                self._source = name
                self.from_tmp = name != self.path
                return value
        return None

    def reject(self, why):
        """The value load() returned turned out unusable: rename its file aside."""
        if self._source is not None:
            self._aside(self._source, why)
            self._source = None

    def report(self):
        """problems as one line."""
        return "; ".join(self.problems)

    def save(self, text):
        write_atomic(self.path, text, self.fs, self.opener)

    def _aside(self, name, why):
        bad = set_aside(name, self.fs)
        self.problems.append("%s (%s), %s" % (name, why, "kept as " + bad if bad else "left"))


class ConfigStore:
    def __init__(self, path, log, fs=os, opener=open):
        self.path = path
        self._log = log
        self._file = StateFile(path, _CONFIG_MAX, fs, opener)

    def load(self):
        """A complete, valid config dict: defaults where the file is missing or
        bad, and for each invalid field. Logs at most one line."""
        cfg = dict(DEFAULTS)
        try:
            data = self._file.load(dict)
            bad = []
            if data is not None:
                for key in _FIELDS:
                    if key in data:
                        if valid(key, data[key]):
                            cfg[key] = data[key]
                        else:
                            bad.append(key)
            parts = []
            if self._file.problems:
                parts.append("unreadable " + self._file.report())
            if bad:
                parts.append("bad " + " ".join(bad))
            if parts:
                self._log("cfg", "; ".join(parts) + ", defaults")
        except Exception as e:  # the flash or the heap failing under us
            self._log("cfg", "load failed (%s), defaults" % type(e).__name__)
            return dict(DEFAULTS)
        return cfg

    def ensure_passkey(self, cfg, urandom=None):
        """cfg with a passkey: the stored one, or at first boot (none stored, or one
        that is not six digits) a new random one, saved at once. Returns the new
        cfg; when the save fails the passkey still holds until the next boot, which
        makes another (logged)."""
        if cfg.get("passkey") is not None:
            return cfg
        new = dict(cfg)
        new["passkey"] = new_passkey(urandom)
        if not self.save(new):
            self._log("cfg", "passkey not saved: a new one comes at the next boot")
        return new

    def save(self, cfg):
        """Write cfg; True on success. On failure the file keeps the old config."""
        for key in DEFAULTS:
            if not valid(key, cfg.get(key)):
                return False
        text = json.dumps({k: cfg[k] for k in DEFAULTS})
        try:
            self._file.save(text)
        except OSError as e:
            self._log("cfg", "save failed %s" % e)
            return False
        return True


# what app.py runs of this module (loaded for the call, dropped after: lazy.py)
def boot_config(path, log):
    """The config at boot, with a passkey (made and saved at first boot)."""
    store = ConfigStore(path, log)
    return store.ensure_passkey(store.load())


def save_config(path, log, cfg):
    """ConfigStore.save() of the file at path."""
    return ConfigStore(path, log).save(cfg)
