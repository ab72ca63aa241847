import CTorusSys

/// glibc serves allocations of 128 KiB and more (a 1 MiB NBD read or write, its reply) with a
/// fresh `mmap` and unmaps them on free, until its adaptive threshold catches up; the heap top is
/// also trimmed back to the kernel. Each such buffer then costs page faults and zeroed pages:
/// a fifth of the CPU of 1 MiB reads served from the cache (`perf`, 1 MiB reads at QD8).
/// Fixed thresholds keep buffers up to 32 MiB (the largest NBD request) on the heap and the
/// heap's free memory for reuse (up to 256 MiB before it is given back).
public func keepBigBuffersOnTheHeap() {
    ctorus_malloc_thresholds(32 << 20, 256 << 20)
}
