#include "parallel.h"

#include <cstdlib>

namespace nz {
namespace {
std::atomic<int> g_threads{0};
}

int default_threads() {
  int n = g_threads.load();
  if (n > 0) return n;
  if (const char* env = std::getenv("NZDIST_NUM_THREADS")) {
    int v = std::atoi(env);
    if (v > 0) return v;
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw ? int(hw) : 1;
}

void set_default_threads(int n) { g_threads.store(n > 0 ? n : 0); }

}  // namespace nz
