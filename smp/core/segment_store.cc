#include "core/segment_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cstdio>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

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

namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(std::string_view field) {
  auto octal = [](char c) { return c >= '0' && c <= '7'; };
  std::string out;
  for (size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() && octal(field[i + 1]) && octal(field[i + 2]) &&
        octal(field[i + 3])) {
      out += static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 +
                               (field[i + 3] - '0'));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

// The non-empty pieces of `line` between `sep`s.
std::vector<std::string_view> Fields(std::string_view line, char sep = ' ') {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && line[i] == sep) ++i;
    const size_t start = i;
    while (i < line.size() && line[i] != sep) ++i;
    if (i > start) out.push_back(line.substr(start, i - start));
  }
  return out;
}

// The bracketed word of a sysfs choice ("always [never] deny"), or "".
std::string_view Selected(std::string_view choices) {
  const size_t open = choices.find('[');
  const size_t close = choices.find(']', open);
  if (open == std::string_view::npos || close == std::string_view::npos) return {};
  return choices.substr(open + 1, close - open - 1);
}

std::string ReadSmallFile(const char* path) {
  std::string out;
  if (FILE* f = std::fopen(path, "re")) {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) out.append(buf, n);
    std::fclose(f);
  }
  return out;
}

}  // namespace

ShmPages DescribeShmPages(const std::string& directory, std::string_view mountinfo,
                          std::string_view shmem_enabled) {
  // The mount whose point is the longest prefix of the directory (the last
  // one listed wins among equal points: it is mounted on top).
  std::string point, fstype, options;
  size_t line_start = 0;
  while (line_start < mountinfo.size()) {
    size_t end = mountinfo.find('\n', line_start);
    if (end == std::string_view::npos) end = mountinfo.size();
    const std::vector<std::string_view> f = Fields(mountinfo.substr(line_start, end - line_start));
    line_start = end + 1;
    // id parent major:minor root point options [optional...] - fstype source super-options
    const auto dash = std::find(f.begin(), f.end(), std::string_view("-"));
    if (f.size() < 6 || dash == f.end() || f.end() - dash < 4) continue;
    const std::string mp = Unescape(f[4]);
    const bool under = directory == mp || mp == "/" ||
                       (directory.size() > mp.size() && directory.compare(0, mp.size(), mp) == 0 &&
                        directory[mp.size()] == '/');
    if (under && mp.size() >= point.size()) {
      point = mp;
      fstype = std::string(dash[1]);
      options = std::string(dash[3]);
    }
  }
  const std::string_view mode = Selected(shmem_enabled);
  ShmPages out;
  if (fstype != "tmpfs") {
    out.how = "4 KiB pages: " + directory + " is on " +
              (fstype.empty() ? std::string("an unknown file system") : fstype) + ", not a tmpfs";
    return out;
  }
  std::string huge = "never";
  for (const std::string_view opt : Fields(options, ',')) {
    if (opt.substr(0, 5) == "huge=") huge = std::string(opt.substr(5));
  }
  const std::string mount = "tmpfs " + point + " huge=" + huge;
  if (mode == "deny") {
    out.how = "4 KiB pages: shmem_enabled is `deny` (" + mount + ")";
  } else if (mode == "force" || huge == "always" || huge == "within_size") {
    out.huge = true;
    out.how = "2 MiB pages: " + mount + (mode == "force" ? ", shmem_enabled force" : "");
  } else {
    out.how = "4 KiB pages: " + mount +
              " (a tmpfs with huge=within_size there maps them in 2 MiB pages: "
              "deploy/dev-shm-holdfast.mount)";
  }
  return out;
}

ShmPages DescribeShmPages(const std::string& directory) {
  char resolved[PATH_MAX];
  const std::string dir = realpath(directory.c_str(), resolved) != nullptr ? resolved : directory;
  return DescribeShmPages(dir, ReadSmallFile("/proc/self/mountinfo"),
                          ReadSmallFile("/sys/kernel/mm/transparent_hugepage/shmem_enabled"));
}

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
