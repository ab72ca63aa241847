#define _GNU_SOURCE
#include "ctorus_sys.h"
#include <errno.h>
#include <malloc.h>
#include <sys/uio.h>

ssize_t ctorus_pread_nowait(int fd, void *buf, size_t len, uint64_t offset) {
#ifdef RWF_NOWAIT
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    return preadv2(fd, &iov, 1, (off_t)offset, RWF_NOWAIT);
#else
    errno = EOPNOTSUPP;
    return -1;
#endif
}

ssize_t ctorus_pwrite_nowait(int fd, const void *buf, size_t len, uint64_t offset) {
#ifdef RWF_NOWAIT
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    return pwritev2(fd, &iov, 1, (off_t)offset, RWF_NOWAIT);
#else
    errno = EOPNOTSUPP;
    return -1;
#endif
}

void ctorus_malloc_thresholds(int mmap_threshold, int trim_threshold) {
    mallopt(M_MMAP_THRESHOLD, mmap_threshold);
    mallopt(M_TRIM_THRESHOLD, trim_threshold);
}
