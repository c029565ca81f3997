# A flash file system in a dict of bytearrays, with a power cut at a chosen written byte
# or at a chosen operation. Runs under CPython and under the micropython binary, so the
# journal's power-cut tests play the same on both.
#
# Writes land at once (as write() on the unix port does); a cut keeps the first bytes of
# the write it interrupts, optionally followed by junk (what a torn write may leave on a
# file system that does not revert it), and every later operation raises OSError.
# littlefs is kinder: an interrupted write is not there at all after the reboot.


class FlashFS:
    def __init__(self, files=None, dirs=(), cut_byte=-1, cut_op=-1, junk=b""):
        self.files = {}
        for name in files or {}:
            self.files[name] = bytearray(files[name])
        self.dirs = set(dirs)
        self.cut_byte = cut_byte  # bytes that may still be written (-1: no cut)
        self.cut_op = cut_op  # writing operations (open to write, write, remove) left
        self.junk = junk
        self.written = 0
        self.ops = 0
        self.dead = False
        self.fail_listdir = False
        self.short_reads = 0  # >0: readinto returns at most this many bytes
        self.eio = set()  # paths whose reads fail (a worn-out block)

    def reboot(self):
        """The same flash after a power cycle."""
        return FlashFS(self.files, self.dirs)

    def _op(self):
        if self.dead:
            raise OSError(5)
        if self.cut_op >= 0 and self.ops >= self.cut_op:
            self.dead = True
            raise OSError(5)
        self.ops += 1

    def listdir(self, path=""):
        if self.dead or self.fail_listdir:
            raise OSError(5)
        pre = path + "/" if path else ""
        out = []
        for name in list(self.files) + list(self.dirs):
            if name.startswith(pre) and "/" not in name[len(pre):]:
                out.append(name[len(pre):])
        return out

    def stat(self, path):
        if self.dead:
            raise OSError(5)
        if path in self.dirs:
            return (0x4000, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        if path not in self.files:
            raise OSError(2)
        return (0x8000, 0, 0, 0, 0, 0, len(self.files[path]), 0, 0, 0)

    def remove(self, path):
        self._op()
        if path in self.dirs:
            raise OSError(21)
        if path not in self.files:
            raise OSError(2)
        del self.files[path]

    def open(self, path, mode="r"):
        if path in self.dirs:
            if self.dead:
                raise OSError(5)
            raise OSError(21)
        if "w" in mode or "a" in mode:
            self._op()
            if "w" in mode or path not in self.files:
                self.files[path] = bytearray()
            return _File(self, path, True)
        if self.dead or path in self.eio:
            raise OSError(5)
        if path not in self.files:
            raise OSError(2)
        return _File(self, path, False)

    def total(self):
        n = 0
        for name in self.files:
            n += len(self.files[name])
        return n


class _File:
    def __init__(self, fs, path, writing):
        self.fs = fs
        self.path = path
        self.writing = writing
        self.pos = 0

    def write(self, data):
        fs = self.fs
        fs._op()
        data = bytes(data)
        buf = fs.files[self.path]
        if fs.cut_byte >= 0 and fs.written + len(data) > fs.cut_byte:
            keep = fs.cut_byte - fs.written
            buf.extend(data[:keep])
            buf.extend(fs.junk)
            fs.written = fs.cut_byte
            fs.dead = True
            raise OSError(5)
        buf.extend(data)
        fs.written += len(data)
        return len(data)

    def seek(self, pos, whence=0):
        if self.fs.dead:
            raise OSError(5)
        self.pos = pos
        return pos

    def readinto(self, buf):
        fs = self.fs
        if fs.dead:
            raise OSError(5)
        data = fs.files[self.path]
        n = min(len(buf), len(data) - self.pos)
        if fs.short_reads:
            n = min(n, fs.short_reads)
        if n <= 0:
            return 0
        for i in range(n):
            buf[i] = data[self.pos + i]
        self.pos += n
        return n

    def close(self):
        pass
