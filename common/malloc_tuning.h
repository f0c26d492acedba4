// glibc malloc settings for processes that allocate and free frames by the thousand every second.
//
// By default glibc hands blocks above a moving threshold to mmap and gives the top of each heap
// back to the kernel as soon as it is free, so such a process keeps mapping, faulting in and
// unmapping the same memory (about a tenth of the aggregator's CPU under load, by perf).
// TuneMallocForThroughput keeps up to 64 MiB of free heap per arena, grows heaps 16 MiB at a time
// and mmaps only blocks of 4 MiB or more. Call it once at the start of main, before any thread.
#ifndef FLEETWES_COMMON_MALLOC_TUNING_H_
#define FLEETWES_COMMON_MALLOC_TUNING_H_

#ifdef __GLIBC__
#include <malloc.h>
#endif

namespace fleetwes {

inline void TuneMallocForThroughput() {
#ifdef __GLIBC__
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_TOP_PAD, 16 << 20);
#endif
}

}  // namespace fleetwes

#endif  // FLEETWES_COMMON_MALLOC_TUNING_H_
