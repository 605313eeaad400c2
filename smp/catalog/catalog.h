// The daemon's catalog: what is committed on this node, durable across a
// holdfastd crash or restart. RocksDB in production (rocksdb_catalog.h), an
// in-memory fake with fault injection in unit tests (memory_catalog.h).
//
// Records are the protobuf messages of proto/holdfast/v1/catalog.proto. Every
// change is a CatalogBatch applied as ONE atomic write: after a crash, either
// all of a batch is visible or none of it.
//
// Per job: a JobRecord; per step, the rank manifests and VersionRecord of
// what this node's ranks committed; and per step, once its EC group
// protected the version (docs/cluster.md), a ProtectionRecord: the group
// manifest and this member's parity segment. Protection records are
// independent of versions: a protected version may be retired locally while
// its protection stays, and a member without ranks of the job has only
// protection records.
//
// Durability: a batch survives a crash of the daemon process once Apply
// returns (the write is in the database's log). It need not survive the loss
// of the machine: the shared memory the catalog describes would not either.
//
// Thread-safety: implementations are safe to call from several threads, but
// the daemon calls them from its core loop only.
#ifndef HOLDFAST_SMP_CATALOG_CATALOG_H_
#define HOLDFAST_SMP_CATALOG_CATALOG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "holdfast/ec/status.h"
#include "holdfast/v1/catalog.pb.h"

namespace holdfast::smp {

struct VersionKey {
  std::string job_id;
  int64_t step = 0;
  friend bool operator==(const VersionKey&, const VersionKey&) = default;
};

// One rank's part of a version.
struct PartKey {
  std::string job_id;
  int64_t step = 0;
  int32_t rank = 0;
  friend bool operator==(const PartKey&, const PartKey&) = default;
};

// One atomic change. Applied in this order: jobs, manifests, versions,
// protections, then deletions (delete_versions, delete_parts,
// delete_protections, delete_jobs), so a batch may add and delete in one write.
struct CatalogBatch {
  std::vector<v1::JobRecord> put_jobs;
  std::vector<v1::RankManifestRecord> put_manifests;
  std::vector<v1::VersionRecord> put_versions;
  std::vector<v1::ProtectionRecord> put_protections;
  // Removes the version record AND every rank manifest of the version, not
  // its protection record.
  std::vector<VersionKey> delete_versions;
  // Removes one rank manifest (a part of a version that never completed).
  std::vector<PartKey> delete_parts;
  // Removes the protection record of (job, step) only.
  std::vector<VersionKey> delete_protections;
  std::vector<std::string> delete_jobs;  // and everything under them, protections included
  bool empty() const {
    return put_jobs.empty() && put_manifests.empty() && put_versions.empty() &&
           put_protections.empty() && delete_versions.empty() && delete_parts.empty() &&
           delete_protections.empty() && delete_jobs.empty();
  }
};

// Everything in the catalog, as loaded at start-up. Manifests without a
// version record belong to versions that never completed (torn). A
// protection record needs no version record (see above).
struct CatalogContents {
  std::vector<v1::JobRecord> jobs;
  std::vector<v1::RankManifestRecord> manifests;  // sorted by (job, step, rank)
  std::vector<v1::VersionRecord> versions;        // sorted by (job, step)
  std::vector<v1::ProtectionRecord> protections;  // sorted by (job, step)
  uint64_t next_segment_id = 1;
};

class Catalog {
 public:
  virtual ~Catalog() = default;

  // Reads the whole catalog. DATA_LOSS when a record cannot be parsed (the
  // message names the key).
  virtual Result<CatalogContents> Load() = 0;

  // Applies `batch` atomically. On error nothing of it is visible.
  virtual Status Apply(const CatalogBatch& batch) = 0;

  // Reserves `count` segment ids and returns the first. Ids are never handed
  // out twice, across restarts: segment names are made from them.
  virtual Result<uint64_t> AllocateSegmentIds(uint64_t count) = 0;
};

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_CATALOG_CATALOG_H_
