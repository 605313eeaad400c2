#include "lifecycle/purge.h"

#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "catalog/rocksdb_catalog.h"
#include "core/segment_store.h"

namespace holdfast::smp {
namespace {

namespace fs = std::filesystem;

// True when something accepts connections on the Unix socket at `path`.
bool SocketAnswers(const std::string& path) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof(addr.sun_path)) return false;
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const bool answers = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return answers;
}

}  // namespace

std::string PurgeReport::ToString() const {
  return fmt::format("removed {} segment file{} ({:.2f} GiB){}{}", segments_removed,
                     segments_removed == 1 ? "" : "s",
                     static_cast<double>(bytes_freed) / double(uint64_t{1} << 30),
                     catalog_removed ? ", the catalog" : "",
                     incarnation_removed ? ", the incarnation id" : "");
}

Result<PurgeReport> Purge(const DaemonConfig& config) {
  if (SocketAnswers(config.socket_path)) {
    return Status::FailedPrecondition("holdfastd is running (it answers on " +
                                      config.socket_path +
                                      "); stop it first, e.g. systemctl stop holdfastd");
  }
  const std::string catalog_path = config.data_dir + "/catalog";
  const std::string incarnation_path = config.data_dir + "/incarnation";
  std::error_code ec;
  PurgeReport report;

  // Holding the catalog proves no daemon uses it, and keeps one from
  // starting (it would recover from segments being removed).
  std::unique_ptr<Catalog> catalog;
  const bool had_catalog = fs::exists(catalog_path, ec);
  if (had_catalog) {
    auto opened = OpenRocksDbCatalog(catalog_path);
    if (!opened.ok()) {
      if (opened.status().code() == StatusCode::kUnavailable) {
        return Status::FailedPrecondition("a holdfastd is using " + catalog_path +
                                          "; stop it first (" + opened.status().message() + ")");
      }
      // A corrupt catalog is one more reason to purge; go on.
    } else {
      catalog = std::move(opened).value();
    }
  }

  struct stat st;
  if (stat(config.shm_dir.c_str(), &st) == 0) {
    auto store = SegmentStore::Create({.directory = config.shm_dir, .prefix = config.shm_prefix});
    if (!store.ok()) return store.status().WithContext("purge");
    auto names = store->List();
    if (!names.ok()) return names.status().WithContext("purge");
    for (const std::string& name : *names) {
      const std::string path = config.shm_dir + "/" + name;
      const uint64_t bytes = stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
      HOLDFAST_RETURN_IF_ERROR(store->Remove(name).WithContext("purge"));
      ++report.segments_removed;
      report.bytes_freed += bytes;
    }
  } else if (errno != ENOENT) {
    return Status::Unavailable("purge: " + config.shm_dir + ": " + std::strerror(errno));
  }

  catalog.reset();  // closes it; now remove its files
  if (had_catalog) {
    fs::remove_all(catalog_path, ec);
    if (ec) return Status::Unavailable("purge: cannot remove " + catalog_path + ": " + ec.message());
    report.catalog_removed = true;
  }
  if (fs::remove(incarnation_path, ec)) report.incarnation_removed = true;
  if (ec) {
    return Status::Unavailable("purge: cannot remove " + incarnation_path + ": " + ec.message());
  }
  return report;
}

}  // namespace holdfast::smp
