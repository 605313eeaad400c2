// Shared-memory segments owned by holdfastd: files in a tmpfs directory
// (/dev/shm by default), named "<prefix>-<id as 16 hex digits>".
//
// A segment outlives the daemon process (that is the point: a restarted
// holdfastd reattaches the segments its catalog names) and dies with the
// machine. Its size is reserved in the tmpfs when it is created (fallocate),
// so a full tmpfs is an error at creation, never a SIGBUS while writing.
//
// Mappings are the expensive part on our machines (first touch of a new
// mapping costs ~0.5-3 s per GiB in page faults, vs 0.07 s for a memcpy), so
// a Segment keeps its mapping for its whole life and the daemon reuses
// segments rather than creating new ones (see snapshot_manager.h).
//
// Thread-safety: SegmentStore methods are safe to call concurrently; a
// Segment is a move-only handle, not synchronized.
#ifndef HOLDFAST_SMP_CORE_SEGMENT_STORE_H_
#define HOLDFAST_SMP_CORE_SEGMENT_STORE_H_

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "holdfast/ec/status.h"

namespace holdfast::smp {

// A mapped segment. Unmaps (but never removes the file) on destruction.
class Segment {
 public:
  Segment() = default;
  ~Segment();
  Segment(Segment&& other) noexcept;
  Segment& operator=(Segment&& other) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;

  bool valid() const { return data_ != nullptr || (bytes_ == 0 && !name_.empty()); }
  const std::string& name() const { return name_; }  // file name, no directory
  const std::string& path() const { return path_; }  // full path, for clients
  uint64_t id() const { return id_; }
  uint64_t bytes() const { return bytes_; }
  std::span<uint8_t> span() const { return {data_, bytes_}; }
  uint8_t* data() const { return data_; }

 private:
  friend class SegmentStore;
  Segment(uint64_t id, std::string name, std::string path, uint8_t* data, uint64_t bytes);
  void Reset();

  uint64_t id_ = 0;
  std::string name_;
  std::string path_;
  uint8_t* data_ = nullptr;
  uint64_t bytes_ = 0;
};

struct SegmentStoreOptions {
  std::string directory = "/dev/shm";  // must be on tmpfs for memory semantics
  std::string prefix = "holdfast";     // [A-Za-z0-9_]{1,32}; one per daemon
  uint32_t mode = 0600;                // file mode of new segments
  bool prefault = true;                // populate page tables at map time
};

// Which pages the kernel backs the segments of a directory with. Huge (2 MiB)
// when the directory is on a tmpfs mounted with huge=always or
// huge=within_size (segments are fallocated to their size, so within_size
// applies), or when shmem_enabled is `force`; 4 KiB otherwise, which is what
// /dev/shm gives under the usual shmem_enabled `never`. A 4 KiB segment costs
// 262,144 page faults per GiB in every process that maps it anew
// (docs/operations.md, "Huge pages for the segments").
struct ShmPages {
  bool huge = false;
  std::string how;  // e.g. "2 MiB pages: tmpfs /dev/shm/holdfast huge=within_size"
};
// `mountinfo` is the text of /proc/self/mountinfo, `shmem_enabled` that of
// /sys/kernel/mm/transparent_hugepage/shmem_enabled ("always [never] ...").
ShmPages DescribeShmPages(const std::string& directory, std::string_view mountinfo,
                          std::string_view shmem_enabled);
// The same, reading this process's files.
ShmPages DescribeShmPages(const std::string& directory);

class SegmentStore {
 public:
  static Result<SegmentStore> Create(const SegmentStoreOptions& options);

  // "<prefix>-<id:016x>"
  std::string NameFor(uint64_t id) const;

  // Creates and maps a new segment of `bytes` (> 0, rounded up to a page).
  // ALREADY_EXISTS if the name is taken; RESOURCE_EXHAUSTED if the tmpfs has
  // no room.
  Result<Segment> Create(uint64_t id, uint64_t bytes) const;

  // Maps an existing segment by name. NOT_FOUND if missing; DATA_LOSS if its
  // size is not `expected_bytes`.
  Result<Segment> Open(const std::string& name, uint64_t expected_bytes) const;

  // Removes the file (a mapping stays valid until unmapped). NOT_FOUND if
  // missing.
  Status Remove(const std::string& name) const;

  // Names of every segment with this store's prefix, sorted.
  Result<std::vector<std::string>> List() const;

  // Parses "<prefix>-<id>" for this prefix; false for any other name.
  bool ParseName(const std::string& name, uint64_t* id) const;

  const SegmentStoreOptions& options() const { return options_; }

 private:
  explicit SegmentStore(SegmentStoreOptions options) : options_(std::move(options)) {}
  SegmentStoreOptions options_;
};

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_CORE_SEGMENT_STORE_H_
