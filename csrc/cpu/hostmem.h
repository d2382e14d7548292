// Host buffers the codec writes once, start to end (a decoded tensor, a payload).
#pragma once

#include <cstdint>

namespace nz {

// Ask the kernel to back the 2 MiB-aligned interior of [p, p + n) with transparent huge pages. A fresh buffer
// is otherwise faulted in one 4 KiB page at a time as the codec first writes it, and on a large tensor those
// faults cost more than the decode itself (BENCHMARKS.md, 2026-12-02). Returns the bytes advised (0 where the
// range holds no whole huge page, on non-Linux builds, or if the kernel refuses; advice is never required).
uint64_t advise_huge_pages(void* p, uint64_t n);

}  // namespace nz
