// Catalog in a RocksDB database directory.
//
// Key space (all keys are byte strings; numbers big-endian so that they sort):
//   "j/" job_id                           -> v1::JobRecord
//   "m/" job_id "\0" step(8) rank(4)      -> v1::RankManifestRecord
//   "v/" job_id "\0" step(8)              -> v1::VersionRecord
//   "p/" job_id "\0" step(8)              -> v1::ProtectionRecord
//   "s/next"                              -> next segment id, 8 bytes
// Steps are offset by 2^63 so negative values sort first (steps are >= 0 in
// practice). Writes use the WAL without fsync: see catalog.h on durability.
#ifndef HOLDFAST_SMP_CATALOG_ROCKSDB_CATALOG_H_
#define HOLDFAST_SMP_CATALOG_ROCKSDB_CATALOG_H_

#include <memory>
#include <string>
#include <string_view>

#include "catalog/catalog.h"

namespace holdfast::smp {

// Opens (creating if missing) the database at `path`. UNAVAILABLE when it is
// locked by another process (another holdfastd with the same data
// directory), DATA_LOSS when it is corrupt.
Result<std::unique_ptr<Catalog>> OpenRocksDbCatalog(const std::string& path);

namespace catalog_internal {
// What Load does with one (key, value) pair read from the database: parses
// the record and appends it to `out`. DATA_LOSS naming the key for an unknown
// or malformed key, a value that does not parse, or a record that does not
// match its key. Exposed for the fuzz target (tests/fuzz/catalog_record_fuzz.cc).
Status DecodeEntry(std::string_view key, std::string_view value, CatalogContents* out);
}  // namespace catalog_internal

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_CATALOG_ROCKSDB_CATALOG_H_
