#ifndef CTORUS_SYS_H
#define CTORUS_SYS_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// pread/pwrite that never block: RWF_NOWAIT (Linux 4.14+ reads, newer kernels for buffered
/// writes). Return the bytes transferred, or -1 with errno (EAGAIN: would block; EOPNOTSUPP
/// or ENOSYS: not supported here).
ssize_t ctorus_pread_nowait(int fd, void *buf, size_t len, uint64_t offset);
ssize_t ctorus_pwrite_nowait(int fd, const void *buf, size_t len, uint64_t offset);

/// mallopt(M_MMAP_THRESHOLD, mmap_threshold) and mallopt(M_TRIM_THRESHOLD, trim_threshold).
void ctorus_malloc_thresholds(int mmap_threshold, int trim_threshold);

#endif
