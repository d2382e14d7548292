// Little-endian field access without alignment assumptions (the format is little-endian; so are the x86-64 and
// aarch64 hosts this builds for, which static_assert below keeps honest).
#pragma once

#include <cstdint>
#include <cstring>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "nzdist assumes a little-endian host");

namespace nz {
inline void put_u16(uint8_t* p, uint64_t off, uint16_t v) { std::memcpy(p + off, &v, 2); }
inline void put_u32(uint8_t* p, uint64_t off, uint32_t v) { std::memcpy(p + off, &v, 4); }
inline void put_u64(uint8_t* p, uint64_t off, uint64_t v) { std::memcpy(p + off, &v, 8); }
inline uint16_t get_u16(const uint8_t* p, uint64_t off) {
  uint16_t v;
  std::memcpy(&v, p + off, 2);
  return v;
}
inline uint32_t get_u32(const uint8_t* p, uint64_t off) {
  uint32_t v;
  std::memcpy(&v, p + off, 4);
  return v;
}
inline uint64_t get_u64(const uint8_t* p, uint64_t off) {
  uint64_t v;
  std::memcpy(&v, p + off, 8);
  return v;
}
}  // namespace nz
