# Device settings in a JSON file on flash, written atomically.
#
# save() writes PATH.tmp completely, then os.rename()s it over PATH, so a power
# cut leaves either the old or the new file. (Should a file system refuse to
# rename over an existing file, the old one is removed first; load() then finds
# the complete .tmp.) load() never fails: a missing or unreadable file gives the
# defaults, an invalid field its default, each with a logged error.
import json
import os

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):  # type: ignore[misc]  # the stub's signature is generic
        return x


from protocol import NAME_MAX, RATE_MAX, RATE_MIN, STRIDE_MAX, STRIDE_MIN, name_ok

# zero: the unloaded ADC levels (heel, arch, forefoot) from the last zero-calibrate,
# or None before the first one.
DEFAULTS = {"side": "L", "name": "Insole", "rate_hz": 100, "stride_cm": 140, "zero": None}
_U16_MAX = const(65535)


def valid(key, value):
    """True when value is acceptable for the config field key."""
    if key == "side":
        return value in ("L", "R")
    if key == "name":
        return isinstance(value, str) and len(value) <= NAME_MAX and name_ok(value)
    if key == "zero":
        if value is None:
            return True
        if not isinstance(value, list) or len(value) != 3:
            return False
        return all(type(v) is int and 0 <= v <= _U16_MAX for v in value)
    if type(value) is not int:
        return False
    if key == "rate_hz":
        return RATE_MIN <= value <= RATE_MAX
    if key == "stride_cm":
        return STRIDE_MIN <= value <= STRIDE_MAX
    return False


def write_atomic(path, text, fs=os, opener=open):
    tmp = path + ".tmp"
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


def read_json(path, opener=open):
    """The parsed file, or None when it is missing or not complete JSON."""
    try:
        f = opener(path, "r")
    except OSError:
        return None
    try:
        text = f.read()
    except OSError:
        return None
    finally:
        f.close()
    try:
        return json.loads(text)
    except ValueError:
        return None


class ConfigStore:
    def __init__(self, path, log, fs=os, opener=open):
        self.path = path
        self._log = log
        self._fs = fs
        self._open = opener

    def load(self):
        """A complete, valid config dict (defaults where the file is missing or bad)."""
        data = read_json(self.path, self._open)
        if data is None:
            # interrupted between removing the old file and renaming the new one
            data = read_json(self.path + ".tmp", self._open)
        if data is None:
            if self._exists(self.path):
                self._log("cfg", "unreadable, defaults")
            return dict(DEFAULTS)
        if not isinstance(data, dict):
            self._log("cfg", "not an object, defaults")
            return dict(DEFAULTS)
        cfg = dict(DEFAULTS)
        for key in DEFAULTS:
            if key in data:
                if valid(key, data[key]):
                    cfg[key] = data[key]
                else:
                    self._log("cfg", "bad %s, default" % key)
        return cfg

    def save(self, cfg):
        """Write cfg; True on success. On failure the file keeps the old config."""
        for key in DEFAULTS:
            if not valid(key, cfg.get(key)):
                return False
        text = json.dumps({k: cfg[k] for k in DEFAULTS})
        try:
            write_atomic(self.path, text, self._fs, self._open)
        except OSError as e:
            self._log("cfg", "save failed %s" % e)
            return False
        return True

    def _exists(self, path):
        try:
            self._fs.stat(path)
            return True
        except OSError:
            return False
