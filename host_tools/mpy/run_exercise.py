# Runs firmware/exercise.py under the micropython binary over a binary trace.
# argv: TRACE.bin RATE_HZ MODE TARGET_X10 TOL_PCT PATTERN. The file holds
# little-endian uint16 triples (heel, arch, forefoot). Prints one line per Step
# Event packet: sample index, then the 20 packet bytes in hex.
import sys
from array import array

import exercise

_CHUNK = 3 * 512
_BITS = (1, 2, 4, 8, 16, 32, 64)


def main():
    path = sys.argv[1]
    rate = int(sys.argv[2])
    counter = exercise.create(int(sys.argv[3]), rate, int(sys.argv[4]), int(sys.argv[5]),
                              int(sys.argv[6]))
    buf = array("H", bytes(2 * _CHUNK))
    pkt = bytearray(20)
    write = sys.stdout.write
    index = 0
    seq = 0
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf) // 2
            if not n:
                break
            for i in range(0, n - n % 3, 3):
                ev = counter.feed(buf[i], buf[i + 1], buf[i + 2])
                if ev:
                    for bit in _BITS:
                        if ev & bit:
                            counter.pack(bit, pkt, seq)
                            seq += 1
                            write("%d,%s\n" % (index, "".join("%02x" % b for b in pkt)))
                index += 1


main()
