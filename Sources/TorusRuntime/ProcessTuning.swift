import CTorusSys

/// Fixes glibc's mmap and trim thresholds: buffers up to 32 MiB (the largest NBD request)
/// stay on the heap, and its free memory is kept for reuse (up to 256 MiB before it is given
/// back), instead of a fresh `mmap`, page faults and zeroed pages for every 1 MiB request
/// (docs/platform.md, "glibc malloc: big buffers").
public func keepBigBuffersOnTheHeap() {
    ctorus_malloc_thresholds(32 << 20, 256 << 20)
}
