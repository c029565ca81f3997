# Runs firmware/gait.py under the micropython binary over a binary trace.
# argv: TRACE.bin RATE_HZ [MAINS_HZ [faults]]. The file holds little-endian uint16
# triples (heel, arch, forefoot). Prints one line per event:
#   C,contact_ms,contact_seq             (heel strike)
#   S,seq,strike_ms,...,share_forefoot   (step summary, events-CSV order)
#   F,sample,faults                      (with "faults": the faults word changed)
import sys
from array import array

from gait import EV_STEP, EV_STRIKE, GaitDetector

_CHUNK = 3 * 512


def main():
    path = sys.argv[1]
    mains = int(sys.argv[3]) if len(sys.argv) > 3 else 50
    det = GaitDetector(int(sys.argv[2]), mains)
    with_faults = len(sys.argv) > 4 and sys.argv[4] == "faults"
    word = 0
    sample = 0
    buf = array("H", bytes(2 * _CHUNK))
    write = sys.stdout.write
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf) // 2
            if not n:
                break
            for i in range(0, n - n % 3, 3):
                ev = det.feed(buf[i], buf[i + 1], buf[i + 2])
                if ev:
                    if ev & EV_STEP:
                        write("S," + ",".join(str(v) for v in det.summary()) + "\n")
                    if ev & EV_STRIKE:
                        write("C,%d,%d\n" % (det.contact_ms, det.contact_seq))
                if with_faults:
                    w = det.faults
                    if w != word:
                        word = w
                        write("F,%d,%d\n" % (sample, w))
                sample += 1


main()
