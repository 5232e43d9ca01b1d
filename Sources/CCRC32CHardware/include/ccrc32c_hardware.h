#ifndef MAGNETAR_CCRC32C_HARDWARE_H
#define MAGNETAR_CCRC32C_HARDWARE_H

#include <stddef.h>
#include <stdint.h>

/// 1 when this CPU has a CRC-32C instruction (x86-64: SSE4.2 `crc32`), else 0.
int magnetar_crc32c_hardware_available(void);

/// Advances a CRC-32C register (reflected polynomial 0x82F63B78, no inversion here: the caller
/// starts from 0xFFFFFFFF and inverts at the end) over `count` bytes with the CPU's instruction.
/// Only call when `magnetar_crc32c_hardware_available()` returned 1.
uint32_t magnetar_crc32c_hardware_update(uint32_t state, const void *bytes, size_t count);

#endif
