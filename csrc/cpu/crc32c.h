// CRC32C (Castagnoli), the checksum of every chunk and of the header. Hardware instruction where the CPU has
// it (SSE4.2), a slicing-by-8 table elsewhere; both give the same value.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nz {
uint32_t crc32c(const uint8_t* data, size_t n, uint32_t crc = 0);
}
