#include "catalog/rocksdb_catalog.h"

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <cstdint>
#include <limits>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <utility>

#include "catalog/batch_validation.h"

namespace holdfast::smp {

namespace {

using catalog_internal::Printable;

constexpr std::string_view kJobPrefix = "j/";
constexpr std::string_view kManifestPrefix = "m/";
constexpr std::string_view kVersionPrefix = "v/";
constexpr std::string_view kProtectionPrefix = "p/";
constexpr std::string_view kNextSegmentKey = "s/next";
constexpr uint64_t kStepBias = uint64_t{1} << 63;

// ---- key encoding ---------------------------------------------------------

void AppendBigEndian(std::string* out, uint64_t value, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint64_t ReadBigEndian(std::string_view in) {
  uint64_t value = 0;
  for (char c : in) value = (value << 8) | static_cast<unsigned char>(c);
  return value;
}

std::string EncodeU64(uint64_t value) {
  std::string out;
  AppendBigEndian(&out, value, 8);
  return out;
}

// Adding 2^63 (mod 2^64) maps int64 order onto unsigned byte order.
uint64_t BiasStep(int64_t step) { return static_cast<uint64_t>(step) + kStepBias; }
int64_t UnbiasStep(uint64_t biased) { return static_cast<int64_t>(biased - kStepBias); }

std::string JobKey(std::string_view job_id) {
  std::string key(kJobPrefix);
  key += job_id;
  return key;
}

// `prefix` job_id "\0": every key of one job under `prefix`. The NUL keeps
// job "a" from matching job "ab".
std::string JobScope(std::string_view prefix, std::string_view job_id) {
  std::string key(prefix);
  key += job_id;
  key.push_back('\0');
  return key;
}

// `prefix` job_id "\0" step(8): every key of one version under `prefix`.
std::string StepScope(std::string_view prefix, std::string_view job_id, int64_t step) {
  std::string key = JobScope(prefix, job_id);
  AppendBigEndian(&key, BiasStep(step), 8);
  return key;
}

std::string ManifestKeyOf(std::string_view job_id, int64_t step, int32_t rank) {
  std::string key = StepScope(kManifestPrefix, job_id, step);
  AppendBigEndian(&key, static_cast<uint32_t>(rank), 4);
  return key;
}

std::string VersionKeyOf(std::string_view job_id, int64_t step) {
  return StepScope(kVersionPrefix, job_id, step);
}

std::string ProtectionKeyOf(std::string_view job_id, int64_t step) {
  return StepScope(kProtectionPrefix, job_id, step);
}

std::string_view View(const rocksdb::Slice& s) { return {s.data(), s.size()}; }

// ---- errors ---------------------------------------------------------------

// RocksDB reports a held LOCK file as an IOError: "While lock file: ...:
// Resource temporarily unavailable" when another process holds it, "lock hold
// by current process" when this one does.
bool IsLockError(const rocksdb::Status& s) {
  if (!s.IsIOError()) return false;
  const std::string text = s.ToString();
  return text.find("lock file") != std::string::npos ||
         text.find("lock hold by current process") != std::string::npos;
}

Status FromRocksDb(const rocksdb::Status& s, std::string_view context) {
  if (s.ok()) return Status::Ok();
  const std::string what = std::string(context) + ": " + s.ToString();
  if (s.IsCorruption()) return Status::DataLoss(what);
  if (s.IsBusy() || IsLockError(s)) {
    return Status::Unavailable(what + " (another holdfastd may be using the data directory)");
  }
  return Status::Internal(what);
}

Status BadKey(std::string_view key, std::string_view why) {
  return Status::DataLoss("catalog key \"" + Printable(key) + "\": " + std::string(why));
}

// ---- key parsing (Load) ---------------------------------------------------

// A "m/", "v/" or "p/" key split into its parts. `tail` is what follows the step.
struct ScopedKey {
  std::string_view job_id;
  int64_t step = 0;
  std::string_view tail;
};

// Splits `key` (which starts with a two-byte prefix) into job id, step and a
// tail of exactly `tail_bytes`; false when it does not have that shape.
bool SplitScopedKey(std::string_view key, size_t tail_bytes, ScopedKey* out) {
  const std::string_view body = key.substr(2);
  const size_t nul = body.find('\0');
  if (nul == std::string_view::npos || body.size() - nul - 1 != 8 + tail_bytes) return false;
  out->job_id = body.substr(0, nul);
  out->step = UnbiasStep(ReadBigEndian(body.substr(nul + 1, 8)));
  out->tail = body.substr(nul + 1 + 8);
  return true;
}

template <typename Record>
Status ParseRecord(std::string_view key, std::string_view value, Record* record) {
  if (!record->ParseFromArray(value.data(), static_cast<int>(value.size()))) {
    return BadKey(key, "value is not a valid " + record->GetTypeName() + " (" +
                           std::to_string(value.size()) + " bytes)");
  }
  return Status::Ok();
}

}  // namespace

namespace catalog_internal {

// Records are checked against their keys: a mismatch means the database was
// damaged or written by something else.
Status DecodeEntry(std::string_view key, std::string_view value, CatalogContents* out) {
  if (key.starts_with(kJobPrefix)) {
    const std::string_view job_id = key.substr(kJobPrefix.size());
    v1::JobRecord job;
    HOLDFAST_RETURN_IF_ERROR(ParseRecord(key, value, &job));
    if (job.job_id() != job_id)
      return BadKey(key, "record is for job \"" + Printable(job.job_id()) + "\"");
    out->jobs.push_back(std::move(job));
    return Status::Ok();
  }
  if (key.starts_with(kManifestPrefix)) {
    ScopedKey parts;
    if (!SplitScopedKey(key, 4, &parts)) return BadKey(key, "malformed manifest key");
    const auto rank = static_cast<int32_t>(ReadBigEndian(parts.tail));
    v1::RankManifestRecord manifest;
    HOLDFAST_RETURN_IF_ERROR(ParseRecord(key, value, &manifest));
    if (manifest.job_id() != parts.job_id || manifest.step() != parts.step ||
        manifest.rank() != rank) {
      return BadKey(key, "record is for job \"" + Printable(manifest.job_id()) + "\" step " +
                             std::to_string(manifest.step()) + " rank " +
                             std::to_string(manifest.rank()));
    }
    out->manifests.push_back(std::move(manifest));
    return Status::Ok();
  }
  if (key.starts_with(kVersionPrefix)) {
    ScopedKey parts;
    if (!SplitScopedKey(key, 0, &parts)) return BadKey(key, "malformed version key");
    v1::VersionRecord version;
    HOLDFAST_RETURN_IF_ERROR(ParseRecord(key, value, &version));
    if (version.job_id() != parts.job_id || version.step() != parts.step) {
      return BadKey(key, "record is for job \"" + Printable(version.job_id()) + "\" step " +
                             std::to_string(version.step()));
    }
    out->versions.push_back(std::move(version));
    return Status::Ok();
  }
  if (key.starts_with(kProtectionPrefix)) {
    ScopedKey parts;
    if (!SplitScopedKey(key, 0, &parts)) return BadKey(key, "malformed protection key");
    v1::ProtectionRecord protection;
    HOLDFAST_RETURN_IF_ERROR(ParseRecord(key, value, &protection));
    if (protection.job_id() != parts.job_id || protection.step() != parts.step) {
      return BadKey(key, "record is for job \"" + Printable(protection.job_id()) + "\" step " +
                             std::to_string(protection.step()));
    }
    out->protections.push_back(std::move(protection));
    return Status::Ok();
  }
  if (key == kNextSegmentKey) {
    if (value.size() != 8) return BadKey(key, "value is not 8 bytes");
    out->next_segment_id = ReadBigEndian(value);
    if (out->next_segment_id == 0) return BadKey(key, "segment counter is 0");
    return Status::Ok();
  }
  return BadKey(key, "unknown key");
}

}  // namespace catalog_internal

namespace {

// ---- the catalog ----------------------------------------------------------

// Thread-safety: Apply and AllocateSegmentIds serialize on write_mu_ (each
// reads before it writes); Load reads an implicit snapshot without the lock.
class RocksDbCatalog final : public Catalog {
 public:
  RocksDbCatalog(std::string path, std::unique_ptr<rocksdb::DB> db, uint64_t next_segment_id)
      : path_(std::move(path)), db_(std::move(db)), next_segment_id_(next_segment_id) {
    write_options_.sync = false;  // the WAL is enough: see catalog.h on durability
    write_options_.disableWAL = false;
  }

  ~RocksDbCatalog() override {
    // Flushes the memtable; the WAL already holds every write, so a failure
    // here loses nothing and there is no one left to report it to.
    db_->Close().PermitUncheckedError();
  }

  RocksDbCatalog(const RocksDbCatalog&) = delete;
  RocksDbCatalog& operator=(const RocksDbCatalog&) = delete;

  Result<CatalogContents> Load() override {
    CatalogContents out;
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      HOLDFAST_RETURN_IF_ERROR(
          catalog_internal::DecodeEntry(View(it->key()), View(it->value()), &out));
    }
    HOLDFAST_RETURN_IF_ERROR(FromRocksDb(it->status(), "reading catalog " + path_));
    return out;
  }

  Status Apply(const CatalogBatch& batch) override {
    HOLDFAST_RETURN_IF_ERROR(catalog_internal::ValidateBatch(batch));
    if (batch.empty()) return Status::Ok();

    std::lock_guard<std::mutex> lock(write_mu_);
    rocksdb::WriteBatch wb;
    // Keys this batch puts: a deletion later in the same batch must cover
    // them too, not only what is already in the database.
    std::set<std::string, std::less<>> put_keys;
    const auto put = [&](std::string key, const google::protobuf::MessageLite& record) -> Status {
      std::string value;
      if (!record.SerializeToString(&value)) {
        return Status::InvalidArgument("cannot serialize " + record.GetTypeName() + " for key \"" +
                                       Printable(key) + "\"");
      }
      HOLDFAST_RETURN_IF_ERROR(FromRocksDb(wb.Put(key, value), "building catalog batch"));
      put_keys.insert(std::move(key));
      return Status::Ok();
    };
    for (const v1::JobRecord& job : batch.put_jobs) {
      HOLDFAST_RETURN_IF_ERROR(put(JobKey(job.job_id()), job));
    }
    for (const v1::RankManifestRecord& m : batch.put_manifests) {
      HOLDFAST_RETURN_IF_ERROR(put(ManifestKeyOf(m.job_id(), m.step(), m.rank()), m));
    }
    for (const v1::VersionRecord& v : batch.put_versions) {
      HOLDFAST_RETURN_IF_ERROR(put(VersionKeyOf(v.job_id(), v.step()), v));
    }
    for (const v1::ProtectionRecord& p : batch.put_protections) {
      HOLDFAST_RETURN_IF_ERROR(put(ProtectionKeyOf(p.job_id(), p.step()), p));
    }

    // Under write_mu_, so that no other write slips in between the scan for
    // keys to delete and the write.
    HOLDFAST_RETURN_IF_ERROR(AddDeletions(batch, put_keys, &wb));
    return FromRocksDb(db_->Write(write_options_, &wb), "writing catalog " + path_);
  }

  Result<uint64_t> AllocateSegmentIds(uint64_t count) override {
    if (count == 0) return Status::InvalidArgument("cannot allocate 0 segment ids");
    std::lock_guard<std::mutex> lock(write_mu_);
    const uint64_t first = next_segment_id_;
    if (count > std::numeric_limits<uint64_t>::max() - first) {
      return Status::ResourceExhausted("segment ids exhausted");
    }
    // Persisted before the ids are handed out, so that a restart never hands
    // them out again.
    HOLDFAST_RETURN_IF_ERROR(
        FromRocksDb(db_->Put(write_options_, kNextSegmentKey, EncodeU64(first + count)),
                    "writing catalog " + path_));
    next_segment_id_ = first + count;
    return first;
  }

 private:
  // Adds to `wb` a deletion of every key the deletions of `batch` cover,
  // whether it is in the database or among `put_keys` (put by this batch).
  // Caller holds write_mu_.
  Status AddDeletions(const CatalogBatch& batch, const std::set<std::string, std::less<>>& put_keys,
                      rocksdb::WriteBatch* wb) {
    if (batch.delete_versions.empty() && batch.delete_parts.empty() &&
        batch.delete_protections.empty() && batch.delete_jobs.empty()) {
      return Status::Ok();
    }
    const auto del = [&](const rocksdb::Slice& key) {
      return FromRocksDb(wb->Delete(key), "building catalog batch");
    };
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    const auto delete_scope = [&](const std::string& scope) -> Status {
      for (it->Seek(scope); it->Valid() && View(it->key()).starts_with(scope); it->Next()) {
        HOLDFAST_RETURN_IF_ERROR(del(it->key()));
      }
      HOLDFAST_RETURN_IF_ERROR(FromRocksDb(it->status(), "reading catalog " + path_));
      for (auto k = put_keys.lower_bound(scope); k != put_keys.end() && k->starts_with(scope);
           ++k) {
        HOLDFAST_RETURN_IF_ERROR(del(*k));
      }
      return Status::Ok();
    };
    for (const VersionKey& v : batch.delete_versions) {
      HOLDFAST_RETURN_IF_ERROR(del(VersionKeyOf(v.job_id, v.step)));
      HOLDFAST_RETURN_IF_ERROR(delete_scope(StepScope(kManifestPrefix, v.job_id, v.step)));
    }
    for (const PartKey& p : batch.delete_parts) {
      HOLDFAST_RETURN_IF_ERROR(del(ManifestKeyOf(p.job_id, p.step, p.rank)));
    }
    for (const VersionKey& p : batch.delete_protections) {
      HOLDFAST_RETURN_IF_ERROR(del(ProtectionKeyOf(p.job_id, p.step)));
    }
    for (const std::string& job_id : batch.delete_jobs) {
      HOLDFAST_RETURN_IF_ERROR(del(JobKey(job_id)));
      HOLDFAST_RETURN_IF_ERROR(delete_scope(JobScope(kManifestPrefix, job_id)));
      HOLDFAST_RETURN_IF_ERROR(delete_scope(JobScope(kVersionPrefix, job_id)));
      HOLDFAST_RETURN_IF_ERROR(delete_scope(JobScope(kProtectionPrefix, job_id)));
    }
    return Status::Ok();
  }

  const std::string path_;
  std::unique_ptr<rocksdb::DB> db_;
  rocksdb::WriteOptions write_options_;
  std::mutex write_mu_;
  uint64_t next_segment_id_;  // guarded by write_mu_
};

rocksdb::Options MakeOptions() {
  rocksdb::Options options;
  options.create_if_missing = true;
  // The catalog holds at most a few thousand small records: a small memtable,
  // few open files, no compression, a small block cache.
  options.write_buffer_size = 4 << 20;
  options.max_write_buffer_number = 2;
  options.max_open_files = 64;
  options.compression = rocksdb::kNoCompression;
  options.bottommost_compression = rocksdb::kNoCompression;
  options.keep_log_file_num = 4;
  options.max_log_file_size = 1 << 20;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(8 << 20);
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return options;
}

}  // namespace

Result<std::unique_ptr<Catalog>> OpenRocksDbCatalog(const std::string& path) {
  rocksdb::DB* raw = nullptr;
  const rocksdb::Status opened = rocksdb::DB::Open(MakeOptions(), path, &raw);
  HOLDFAST_RETURN_IF_ERROR(FromRocksDb(opened, "opening catalog " + path));
  std::unique_ptr<rocksdb::DB> db(raw);

  uint64_t next_segment_id = 1;
  std::string value;
  const rocksdb::Status got = db->Get(rocksdb::ReadOptions(), kNextSegmentKey, &value);
  if (got.ok()) {
    if (value.size() != 8) return BadKey(kNextSegmentKey, "value is not 8 bytes");
    next_segment_id = ReadBigEndian(value);
    if (next_segment_id == 0) return BadKey(kNextSegmentKey, "segment counter is 0");
  } else if (!got.IsNotFound()) {
    return FromRocksDb(got, "reading catalog " + path);
  }
  return std::unique_ptr<Catalog>(
      std::make_unique<RocksDbCatalog>(path, std::move(db), next_segment_id));
}

}  // namespace holdfast::smp
