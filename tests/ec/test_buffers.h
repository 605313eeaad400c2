// Guard-page buffers: memory placed against a PROT_NONE page so that an
// access one byte past the end (or, for kAfterFrontGuard, more than `offset`
// bytes before the start) faults at once instead of silently corrupting a
// neighbour. Use them to show that coding routines touch exactly the bytes
// their contract names.
//
//   kAgainstRearGuard:  [guard][ .... | buffer ][guard]   ends at the guard
//   kAfterFrontGuard:   [guard][off| buffer .... ][guard] starts `offset` in
//
// The start address of a kAgainstRearGuard buffer is page end - len, so odd
// lengths give unaligned starts; kAfterFrontGuard with offset 1..63 gives any
// misalignment for any length.
//
// Thread-safety: a GuardedBuffer is a plain owner; share it like a vector.
#ifndef HOLDFAST_TESTS_EC_TEST_BUFFERS_H_
#define HOLDFAST_TESTS_EC_TEST_BUFFERS_H_

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <utility>

namespace holdfast::ec::testutil {

class GuardedBuffer {
 public:
  enum class Placement { kAgainstRearGuard, kAfterFrontGuard };

  GuardedBuffer() = default;
  explicit GuardedBuffer(size_t len, Placement placement = Placement::kAgainstRearGuard,
                         size_t offset = 0) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t body = (len + offset + page - 1) / page * page;
    map_len_ = body + 2 * page;
    void* p = mmap(nullptr, map_len_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) std::abort();
    map_ = static_cast<uint8_t*>(p);
    if (mprotect(map_, page, PROT_NONE) != 0 ||
        mprotect(map_ + page + body, page, PROT_NONE) != 0) {
      std::abort();
    }
    data_ =
        placement == Placement::kAgainstRearGuard ? map_ + page + body - len : map_ + page + offset;
    size_ = len;
  }

  ~GuardedBuffer() {
    if (map_ != nullptr) munmap(map_, map_len_);
  }

  GuardedBuffer(GuardedBuffer&& other) noexcept { *this = std::move(other); }
  GuardedBuffer& operator=(GuardedBuffer&& other) noexcept {
    std::swap(map_, other.map_);
    std::swap(map_len_, other.map_len_);
    std::swap(data_, other.data_);
    std::swap(size_, other.size_);
    return *this;
  }
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;

  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<uint8_t> span() { return {data_, size_}; }
  std::span<const uint8_t> span() const { return {data_, size_}; }

  // Faults every page in with one call. On VMs where each page fault is
  // expensive this makes multi-GiB buffers affordable; without
  // MADV_POPULATE_WRITE it is a no-op (the pages fault in on first use).
  void Prefault() {
#ifdef MADV_POPULATE_WRITE
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    if (map_ != nullptr) (void)madvise(map_ + page, map_len_ - 2 * page, MADV_POPULATE_WRITE);
#endif
  }

  void Assign(std::span<const uint8_t> bytes) {
    if (bytes.size() != size_) std::abort();
    if (size_ != 0) std::memcpy(data_, bytes.data(), size_);
  }
  void FillWith(uint8_t value) {
    if (size_ != 0) std::memset(data_, value, size_);
  }

 private:
  uint8_t* map_ = nullptr;
  size_t map_len_ = 0;
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace holdfast::ec::testutil

#endif  // HOLDFAST_TESTS_EC_TEST_BUFFERS_H_
