#ifndef CTORUS_CRC_H
#define CTORUS_CRC_H
#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli) of `len` bytes at `data`, continuing from `crc` (0 to start).
/// Uses the SSE4.2 crc32 instruction when the CPU has it, a table otherwise.
/// Pure computation: no I/O, no global state besides a lazily built constant table.
uint32_t ctorus_crc32c(uint32_t crc, const void *data, size_t len);

/// The table implementation alone (for tests that compare both paths).
uint32_t ctorus_crc32c_portable(uint32_t crc, const void *data, size_t len);

#endif
