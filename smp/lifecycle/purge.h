// `holdfastd --purge`: frees, deliberately, what holdfastd keeps across
// restarts (docs/operations.md, "Freeing the memory").
#ifndef HOLDFAST_SMP_LIFECYCLE_PURGE_H_
#define HOLDFAST_SMP_LIFECYCLE_PURGE_H_

#include <cstdint>
#include <string>

#include "config/config.h"
#include "holdfast/ec/status.h"

namespace holdfast::smp {

struct PurgeReport {
  int segments_removed = 0;      // files <shm.dir>/<shm.prefix>-<16 hex>
  uint64_t bytes_freed = 0;      // their sizes
  bool catalog_removed = false;  // <data_dir>/catalog existed and is gone
  bool incarnation_removed = false;

  std::string ToString() const;
};

// Removes this daemon's segment files, its catalog (<data_dir>/catalog) and
// its incarnation id (<data_dir>/incarnation): the next start is a node with
// nothing, which in a cluster is a replacement that rebuilds what its group
// still protects. Leaves the directories themselves, other daemons' segments
// (other prefixes) and every other file alone.
//
// Refuses with FAILED_PRECONDITION, removing nothing, while a daemon answers
// on config.socket_path or holds the catalog's lock; the lock is held while
// the segments are removed, so a daemon cannot start meanwhile.
Result<PurgeReport> Purge(const DaemonConfig& config);

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_LIFECYCLE_PURGE_H_
