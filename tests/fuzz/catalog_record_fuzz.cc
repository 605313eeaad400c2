// Fuzz target: the catalog as holdfastd reads it from RocksDB at start-up.
//
// Input: (key, value) pairs (fuzz_input.h framing), as RocksDB would hand
// them to RocksDbCatalog::Load: sorted by key, one value per key. Each pair
// goes through catalog_internal::DecodeEntry (the function Load calls); if
// every pair decodes, the contents go through SnapshotManager::Recover (the
// daemon's restart) over a real segment directory holding a few segments
// whose bytes the seed manifests describe, with a catalog whose Apply runs
// the batch validation both real catalogs run.
//
// A decode or recovery error is an expected outcome (the daemon refuses to
// start, or discards what is damaged); a crash, a sanitizer report or a
// broken invariant below is a bug.
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>

#include "catalog/batch_validation.h"
#include "catalog/rocksdb_catalog.h"
#include "core/event_loop.h"
#include "core/segment_store.h"
#include "core/snapshot_manager.h"
#include "fuzz_input.h"
#include "segment_fixture.h"

namespace {

using holdfast::Result;
using holdfast::Status;
using namespace holdfast::smp;

// Load returns the decoded contents; Apply validates like the real catalogs
// and then forgets the batch (each run starts from the input again).
class DecodedCatalog final : public Catalog {
 public:
  explicit DecodedCatalog(CatalogContents contents) : contents_(std::move(contents)) {}
  Result<CatalogContents> Load() override { return contents_; }
  Status Apply(const CatalogBatch& batch) override {
    return catalog_internal::ValidateBatch(batch);
  }
  Result<uint64_t> AllocateSegmentIds(uint64_t) override {
    return Status::Internal("recovery allocates no segment ids");
  }

 private:
  CatalogContents contents_;
};

struct Fixture {
  std::string dir;
  std::unique_ptr<SegmentStore> segments;
  std::unique_ptr<EventLoop> loop;
  std::unique_ptr<WorkerPool> workers;
};

Fixture* fixture = nullptr;
// HOLDFAST_FUZZ_VERBOSE=1: print each input's outcome (for checking seeds).
bool verbose = false;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  verbose = std::getenv("HOLDFAST_FUZZ_VERBOSE") != nullptr;
  spdlog::set_level(verbose ? spdlog::level::warn : spdlog::level::off);
  fixture = new Fixture;
  char tmpl[] = "/dev/shm/holdfast-fuzz-catalog-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  fixture->dir = tmpl;
  auto store = SegmentStore::Create({.directory = fixture->dir,
                                     .prefix = holdfast::fuzz::kSegmentPrefix,
                                     .prefault = false});
  if (!store.ok()) {
    std::fprintf(stderr, "segment store: %s\n", store.status().ToString().c_str());
    std::abort();
  }
  fixture->segments = std::make_unique<SegmentStore>(std::move(store).value());
  fixture->loop = std::make_unique<EventLoop>();
  fixture->workers = std::make_unique<WorkerPool>(1);
  // The directory goes with the process (libFuzzer exits through exit()).
  std::atexit([] {
    if (fixture == nullptr) return;
    auto names = fixture->segments->List();
    if (names.ok()) {
      for (const auto& name : *names) (void)fixture->segments->Remove(name);
    }
    rmdir(fixture->dir.c_str());
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // RocksDB iterates keys in byte order, each once (the last write wins).
  std::map<std::string, std::string> entries;
  holdfast::fuzz::FieldReader reader(data, size);
  std::string_view key, value;
  while (reader.Next(&key) && reader.Next(&value)) entries[std::string(key)] = std::string(value);

  CatalogContents contents;
  for (const auto& [k, v] : entries) {
    if (Status s = catalog_internal::DecodeEntry(k, v, &contents); !s.ok()) {
      if (verbose) std::fprintf(stderr, "load: %s\n", s.ToString().c_str());
      return 0;  // Load fails: DATA_LOSS
    }
  }
  if (contents.next_segment_id == 0) std::abort();  // DecodeEntry refuses a 0 counter

  // Recovery removes segments nobody names: put the fixture's back.
  if (!holdfast::fuzz::MakeFixtureSegments(*fixture->segments).ok()) std::abort();
  DecodedCatalog catalog(std::move(contents));
  ManagerOptions options;
  options.memory_budget_bytes = 1 << 20;
  options.verify = VerifyMode::kCommit;
  SnapshotManager manager(options, &catalog, fixture->segments.get(), fixture->workers.get(),
                          fixture->loop.get());
  auto report = manager.Recover();
  if (verbose) {
    std::fprintf(stderr, "recover: %s\n",
                 report.ok() ? report->ToString().c_str() : report.status().ToString().c_str());
  }
  if (report.ok()) {
    const RecoveryReport& r = *report;
    if (r.versions_restored < 0 || r.partial_versions_kept < 0 || r.versions_discarded < 0 ||
        r.protections_restored < 0 || r.protections_discarded < 0) {
      std::abort();
    }
    (void)r.ToString();
  }
  return 0;
}
