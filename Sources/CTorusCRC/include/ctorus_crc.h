#ifndef CTORUS_CRC_H
#define CTORUS_CRC_H
#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli) of `len` bytes at `data`, continuing from `crc` (0 to start).
/// Uses ISA-L (Debian libisal-dev), which selects the fastest code for the CPU at run time.
/// Pure computation: no I/O, no global state besides constant tables.
uint32_t ctorus_crc32c(uint32_t crc, const void *data, size_t len);

/// The table implementation alone (for tests that compare both paths).
uint32_t ctorus_crc32c_portable(uint32_t crc, const void *data, size_t len);

#endif
