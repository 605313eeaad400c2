#include "core/segment_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <system_error>
#include <utility>

namespace holdfast::smp {
namespace {

constexpr size_t kMaxPrefixLength = 32;
constexpr size_t kIdDigits = 16;

// The errno text, thread-safe (strerror is not).
std::string ErrnoText(int err) { return std::system_category().message(err); }

// "<what> <path>: <errno text>", with a code that says what the caller can do
// about it.
Status ErrnoStatus(int err, std::string_view what, const std::string& path) {
  std::string msg(what);
  msg += ' ';
  msg += path;
  msg += ": ";
  msg += ErrnoText(err);
  switch (err) {
    case ENOENT:
      return Status::NotFound(std::move(msg));
    case EEXIST:
      return Status::AlreadyExists(std::move(msg));
    case EACCES:
    case EPERM:
      return Status(StatusCode::kPermissionDenied, std::move(msg));
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
    case EMFILE:
    case ENFILE:
    case EFBIG:
      return Status::ResourceExhausted(std::move(msg));
    default:
      return Status::Internal(std::move(msg));
  }
}

Status CheckPrefix(const std::string& prefix) {
  bool ok = !prefix.empty() && prefix.size() <= kMaxPrefixLength &&
            std::all_of(prefix.begin(), prefix.end(), [](char c) {
              return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '_';
            });
  if (!ok) {
    return Status::InvalidArgument("segment prefix \"" + prefix +
                                   "\" must be 1 to 32 characters of [A-Za-z0-9_]");
  }
  return Status::Ok();
}

uint64_t PageSize() {
  static const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  return page;
}

// What Create has acquired so far; the destructor gives it back in reverse
// order unless Release() handed it to a Segment.
class PendingSegment {
 public:
  explicit PendingSegment(std::string path) : path_(std::move(path)) {}
  ~PendingSegment() {
    if (data_ != nullptr) munmap(data_, bytes_);
    if (fd_ >= 0) close(fd_);
    if (created_) unlink(path_.c_str());
  }
  PendingSegment(const PendingSegment&) = delete;
  PendingSegment& operator=(const PendingSegment&) = delete;

  void Created(int fd) {
    fd_ = fd;
    created_ = true;
  }
  void Opened(int fd) { fd_ = fd; }
  void Mapped(void* data, uint64_t bytes) {
    data_ = data;
    bytes_ = bytes;
  }
  // The mapping keeps the file referenced; the descriptor is not needed.
  void CloseFd() {
    close(fd_);
    fd_ = -1;
  }
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }

  // Hands the mapping to the caller; nothing is undone afterwards.
  uint8_t* Release() {
    created_ = false;
    return static_cast<uint8_t*>(std::exchange(data_, nullptr));
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool created_ = false;
  void* data_ = nullptr;
  uint64_t bytes_ = 0;
};

// Maps `bytes` of pending.fd() shared and writable, prefaulting if asked.
Status MapShared(PendingSegment& pending, uint64_t bytes, bool prefault) {
  void* data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, pending.fd(), 0);
  if (data == MAP_FAILED) return ErrnoStatus(errno, "mmap", pending.path());
  pending.Mapped(data, bytes);
  if (prefault) {
    // One call fills the page tables, instead of a fault per page on the
    // first write. Kernels before 5.14 do not know the advice (EINVAL): the
    // pages are then faulted in on first touch, which is only slower.
    int rc;
    do {
      rc = madvise(data, bytes, MADV_POPULATE_WRITE);
    } while (rc != 0 && (errno == EINTR || errno == EAGAIN));
    if (rc != 0 && errno != EINVAL) return ErrnoStatus(errno, "prefault", pending.path());
  }
  pending.CloseFd();
  return Status::Ok();
}

}  // namespace

// ---- Segment ---------------------------------------------------------------

Segment::Segment(uint64_t id, std::string name, std::string path, uint8_t* data, uint64_t bytes)
    : id_(id), name_(std::move(name)), path_(std::move(path)), data_(data), bytes_(bytes) {}

Segment::~Segment() { Reset(); }

Segment::Segment(Segment&& other) noexcept
    : id_(std::exchange(other.id_, 0)),
      name_(std::exchange(other.name_, {})),
      path_(std::exchange(other.path_, {})),
      data_(std::exchange(other.data_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)) {}

Segment& Segment::operator=(Segment&& other) noexcept {
  if (this != &other) {
    Reset();
    id_ = std::exchange(other.id_, 0);
    name_ = std::exchange(other.name_, {});
    path_ = std::exchange(other.path_, {});
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

void Segment::Reset() {
  // munmap fails only for arguments we never pass.
  if (data_ != nullptr) munmap(data_, bytes_);
  id_ = 0;
  name_.clear();
  path_.clear();
  data_ = nullptr;
  bytes_ = 0;
}

// ---- SegmentStore ----------------------------------------------------------

Result<SegmentStore> SegmentStore::Create(const SegmentStoreOptions& options) {
  HOLDFAST_RETURN_IF_ERROR(CheckPrefix(options.prefix));
  if (options.directory.empty()) {
    return Status::InvalidArgument("segment directory is empty");
  }
  if ((options.mode & ~uint32_t{07777}) != 0) {
    return Status::InvalidArgument("segment file mode " + std::to_string(options.mode) +
                                   " has bits outside 07777");
  }
  struct stat st;
  if (stat(options.directory.c_str(), &st) != 0) {
    return ErrnoStatus(errno, "segment directory", options.directory);
  }
  if (!S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument("segment directory " + options.directory +
                                   " is not a directory");
  }
  SegmentStoreOptions normalized = options;
  while (normalized.directory.size() > 1 && normalized.directory.back() == '/') {
    normalized.directory.pop_back();
  }
  return SegmentStore(std::move(normalized));
}

std::string SegmentStore::NameFor(uint64_t id) const {
  char hex[kIdDigits + 1];
  std::snprintf(hex, sizeof(hex), "%016" PRIx64, id);
  std::string name = options_.prefix;
  name += '-';
  name += hex;
  return name;
}

bool SegmentStore::ParseName(const std::string& name, uint64_t* id) const {
  const std::string& prefix = options_.prefix;
  if (name.size() != prefix.size() + 1 + kIdDigits) return false;
  if (name.compare(0, prefix.size(), prefix) != 0 || name[prefix.size()] != '-') return false;
  uint64_t value = 0;
  for (size_t i = prefix.size() + 1; i < name.size(); ++i) {
    char c = name[i];
    uint64_t digit;
    if (c >= '0' && c <= '9') {
      digit = static_cast<uint64_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<uint64_t>(c - 'a' + 10);
    } else {
      return false;  // NameFor writes lowercase only
    }
    value = (value << 4) | digit;
  }
  if (id != nullptr) *id = value;
  return true;
}

Result<Segment> SegmentStore::Create(uint64_t id, uint64_t bytes) const {
  const uint64_t page = PageSize();
  // ftruncate takes a signed off_t.
  constexpr uint64_t kMaxBytes = uint64_t{1} << 62;
  if (bytes == 0 || bytes > kMaxBytes) {
    return Status::InvalidArgument("segment size " + std::to_string(bytes) +
                                   " must be in [1, 2^62]");
  }
  const uint64_t rounded = (bytes + page - 1) / page * page;
  std::string name = NameFor(id);
  PendingSegment pending(options_.directory + "/" + name);

  int fd = open(pending.path().c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC,
                static_cast<mode_t>(options_.mode));
  if (fd < 0) return ErrnoStatus(errno, "create segment", pending.path());
  pending.Created(fd);
  // open() applied the umask; segments get exactly the configured mode.
  if (fchmod(fd, static_cast<mode_t>(options_.mode)) != 0) {
    return ErrnoStatus(errno, "chmod segment", pending.path());
  }
  if (ftruncate(fd, static_cast<off_t>(rounded)) != 0) {
    return ErrnoStatus(errno, "resize segment", pending.path());
  }
  // Reserve every page now: on tmpfs a write to an unreserved page of a full
  // filesystem is a SIGBUS, not an error we could return.
  int rc;
  do {
    rc = posix_fallocate(fd, 0, static_cast<off_t>(rounded));  // returns the error
  } while (rc == EINTR);
  if (rc != 0) {
    return ErrnoStatus(rc, "reserve " + std::to_string(rounded) + " bytes for segment",
                       pending.path());
  }
  HOLDFAST_RETURN_IF_ERROR(MapShared(pending, rounded, options_.prefault));
  uint8_t* data = pending.Release();
  return Segment(id, std::move(name), pending.path(), data, rounded);
}

Result<Segment> SegmentStore::Open(const std::string& name, uint64_t expected_bytes) const {
  uint64_t id;
  if (!ParseName(name, &id)) {
    // Also keeps names like "../x" from reaching the filesystem.
    return Status::InvalidArgument("\"" + name + "\" is not a segment name for prefix \"" +
                                   options_.prefix + "\"");
  }
  PendingSegment pending(options_.directory + "/" + name);
  // O_NOFOLLOW: the directory is usually world-writable /dev/shm.
  int fd = open(pending.path().c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ELOOP) return Status::DataLoss("segment " + pending.path() + " is a symlink");
    return ErrnoStatus(errno, "open segment", pending.path());
  }
  pending.Opened(fd);
  struct stat st;
  if (fstat(fd, &st) != 0) return ErrnoStatus(errno, "stat segment", pending.path());
  if (!S_ISREG(st.st_mode)) {
    return Status::DataLoss("segment " + pending.path() + " is not a regular file");
  }
  const auto actual = static_cast<uint64_t>(st.st_size);
  if (actual != expected_bytes) {
    return Status::DataLoss("segment " + pending.path() + " has " + std::to_string(actual) +
                            " bytes, expected " + std::to_string(expected_bytes));
  }
  if (expected_bytes == 0) {
    // Nothing to map; the handle still names the file.
    pending.CloseFd();
    return Segment(id, name, pending.path(), nullptr, 0);
  }
  HOLDFAST_RETURN_IF_ERROR(MapShared(pending, expected_bytes, options_.prefault));
  uint8_t* data = pending.Release();
  return Segment(id, name, pending.path(), data, expected_bytes);
}

Status SegmentStore::Remove(const std::string& name) const {
  if (!ParseName(name, nullptr)) {
    return Status::InvalidArgument("\"" + name + "\" is not a segment name for prefix \"" +
                                   options_.prefix + "\"");
  }
  std::string path = options_.directory + "/" + name;
  if (unlink(path.c_str()) != 0) return ErrnoStatus(errno, "remove segment", path);
  return Status::Ok();
}

Result<std::vector<std::string>> SegmentStore::List() const {
  DIR* dir = opendir(options_.directory.c_str());
  if (dir == nullptr) return ErrnoStatus(errno, "list segment directory", options_.directory);
  std::vector<std::string> names;
  int err = 0;
  while (true) {
    errno = 0;
    const dirent* entry = readdir(dir);
    if (entry == nullptr) {
      err = errno;
      break;
    }
    std::string name = entry->d_name;
    if (ParseName(name, nullptr)) names.push_back(std::move(name));
  }
  closedir(dir);
  if (err != 0) return ErrnoStatus(err, "list segment directory", options_.directory);
  // Fixed-width hex after one prefix: name order is id order.
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace holdfast::smp
