# Cost of the exercise counters under the micropython binary: microseconds per
# sample for each mode and the RAM the four counters take. Run: make bench-exercise
# (numbers from the unix port on the computer running it, not from an ESP32).
import gc
import time

import exercise

_N = 20000


def per_sample_us(mode):
    c = exercise.create(mode, 100)
    t0 = time.ticks_us()
    for i in range(_N):
        x = (i * 37) % 200  # a slowly moving load, so the counters do real work
        c.feed(20000 + x * 10, 5000, 18000 - x * 10)
    return time.ticks_diff(time.ticks_us(), t0) / _N


gc.collect()
before = gc.mem_alloc()
counters = [exercise.create(m, 100) for m in (1, 2, 3, 4)]
gc.collect()
print("RAM for the four counters: %d bytes" % (gc.mem_alloc() - before))
del counters
for mode, name in ((1, "heel raises"), (2, "toe scrunch"), (3, "balance"), (4, "slow walk")):
    print("%-12s %5.2f us/sample" % (name, per_sample_us(mode)))
