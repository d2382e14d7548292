#include "hostmem.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace nz {

uint64_t advise_huge_pages(void* p, uint64_t n) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uint64_t kHuge = uint64_t(1) << 21;
  const uint64_t a = reinterpret_cast<uintptr_t>(p);
  const uint64_t lo = (a + kHuge - 1) & ~(kHuge - 1), hi = (a + n) & ~(kHuge - 1);
  if (hi <= lo) return 0;
  // Already-touched pages stay as they are; only faults from now on use huge pages. Pages of the range are
  // all inside the caller's buffer, so no neighbouring allocation is affected.
  if (madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE) != 0) return 0;
  return hi - lo;
#else
  (void)p;
  (void)n;
  return 0;
#endif
}

}  // namespace nz
