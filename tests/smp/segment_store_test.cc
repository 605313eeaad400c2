// SegmentStore against the real filesystem: each test gets a fresh directory
// under /dev/shm (tmpfs, as in production) and removes it at the end.
#include "core/segment_store.h"

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace holdfast::smp {
namespace {

namespace fs = std::filesystem;

uint64_t Page() { return static_cast<uint64_t>(sysconf(_SC_PAGESIZE)); }

int CountOpenFds() {
  int n = 0;
  for (const auto& entry : fs::directory_iterator("/proc/self/fd")) {
    (void)entry;
    ++n;
  }
  return n;
}

// Mappings of `path` in this process (a removed file shows " (deleted)").
int CountMappings(const std::string& path) {
  std::ifstream maps("/proc/self/maps");
  int n = 0;
  for (std::string line; std::getline(maps, line);) {
    if (line.ends_with(" " + path) || line.ends_with(" " + path + " (deleted)")) ++n;
  }
  return n;
}

void Fill(const Segment& segment, uint8_t seed) {
  std::span<uint8_t> bytes = segment.span();
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(seed + i * 7);
}

bool HasPattern(const Segment& segment, uint8_t seed) {
  std::span<uint8_t> bytes = segment.span();
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] != static_cast<uint8_t>(seed + i * 7)) return false;
  }
  return true;
}

class SegmentStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = "/dev/shm/holdfast_segment_test_XXXXXX";
    ASSERT_NE(mkdtemp(templ.data()), nullptr) << std::strerror(errno);
    dir_ = templ;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  SegmentStore MakeStore(std::string prefix = "hftest", bool prefault = true) {
    SegmentStoreOptions options;
    options.directory = dir_;
    options.prefix = std::move(prefix);
    options.prefault = prefault;
    Result<SegmentStore> store = SegmentStore::Create(options);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return std::move(store).value();
  }

  std::string dir_;
};

TEST_F(SegmentStoreTest, CreateOpenRemoveListRoundTrip) {
  SegmentStore store = MakeStore();
  Result<std::vector<std::string>> empty = store.List();
  ASSERT_TRUE(empty.ok()) << empty.status().ToString();
  EXPECT_TRUE(empty->empty());

  const uint64_t asked = 3 * Page() + 5;
  Result<Segment> created = store.Create(7, asked);
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  Segment& segment = *created;
  EXPECT_TRUE(segment.valid());
  EXPECT_EQ(segment.id(), 7u);
  EXPECT_EQ(segment.name(), "hftest-0000000000000007");
  EXPECT_EQ(segment.path(), dir_ + "/hftest-0000000000000007");
  EXPECT_EQ(segment.bytes(), 4 * Page());  // rounded up to a page
  EXPECT_EQ(segment.span().size(), segment.bytes());
  EXPECT_EQ(fs::file_size(segment.path()), segment.bytes());
  struct stat st;
  ASSERT_EQ(stat(segment.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  // Every page is reserved in the tmpfs, not just sized.
  EXPECT_EQ(static_cast<uint64_t>(st.st_blocks) * 512, segment.bytes());
  Fill(segment, 1);

  Result<std::vector<std::string>> names = store.List();
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, std::vector<std::string>{"hftest-0000000000000007"});

  Result<Segment> opened = store.Open(segment.name(), segment.bytes());
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ(opened->id(), 7u);
  EXPECT_EQ(opened->path(), segment.path());
  EXPECT_NE(opened->data(), segment.data());  // a second mapping
  EXPECT_TRUE(HasPattern(*opened, 1));

  ASSERT_TRUE(store.Remove(segment.name()).ok());
  EXPECT_FALSE(fs::exists(segment.path()));
  names = store.List();
  ASSERT_TRUE(names.ok());
  EXPECT_TRUE(names->empty());
  // Mappings outlive the file.
  EXPECT_TRUE(HasPattern(segment, 1));
  EXPECT_TRUE(HasPattern(*opened, 1));

  EXPECT_EQ(store.Open(segment.name(), segment.bytes()).status().code(), StatusCode::kNotFound);
  Status again = store.Remove(segment.name());
  EXPECT_EQ(again.code(), StatusCode::kNotFound);
  EXPECT_NE(again.message().find(segment.path()), std::string::npos) << again.message();
}

TEST_F(SegmentStoreTest, ListIsSortedById) {
  SegmentStore store = MakeStore();
  std::vector<Segment> segments;
  for (uint64_t id : {uint64_t{300}, uint64_t{2}, ~uint64_t{0}, uint64_t{0}, uint64_t{0x1f}}) {
    Result<Segment> s = store.Create(id, 1);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    segments.push_back(std::move(s).value());
  }
  Result<std::vector<std::string>> names = store.List();
  ASSERT_TRUE(names.ok());
  std::vector<std::string> expected = {"hftest-0000000000000000", "hftest-0000000000000002",
                                       "hftest-000000000000001f", "hftest-000000000000012c",
                                       "hftest-ffffffffffffffff"};
  EXPECT_EQ(*names, expected);
  for (const std::string& name : *names) {
    uint64_t id = 12345;
    EXPECT_TRUE(store.ParseName(name, &id));
    EXPECT_EQ(store.NameFor(id), name);
  }
}

TEST_F(SegmentStoreTest, ParseNameAcceptsOnlyExactNames) {
  SegmentStore store = MakeStore("hold");
  uint64_t id = 0;
  EXPECT_TRUE(store.ParseName("hold-00000000deadbeef", &id));
  EXPECT_EQ(id, 0xdeadbeefu);
  EXPECT_TRUE(store.ParseName("hold-ffffffffffffffff", nullptr));
  EXPECT_EQ(store.NameFor(0xdeadbeef), "hold-00000000deadbeef");

  for (const char* bad : {
           "holdfast-00000000deadbeef",  // a longer prefix that starts with ours
           "hol-00000000deadbeef",       // a shorter one
           "Hold-00000000deadbeef",      // case matters in the prefix
           "hold-00000000DEADBEEF",      // we write lowercase only
           "hold-0000000deadbeef",       // 15 digits
           "hold-000000000deadbeef",     // 17 digits
           "hold_00000000deadbeef",      // wrong separator
           "hold-00000000deadbeeg",      // not hex
           "hold-00000000deadbee ",      // trailing space
           "hold-+0000000deadbeef",      // a sign
           "hold-",                      // no id
           "hold",                       //
           "",                           //
           "hold-00000000deadbeef.tmp",  // a suffix
           "../hold-00000000deadbeef",   // a path
       }) {
    id = 42;
    EXPECT_FALSE(store.ParseName(bad, &id)) << bad;
    EXPECT_EQ(id, 42u) << bad;  // untouched on failure
  }
}

TEST_F(SegmentStoreTest, PrefixesInOneDirectoryDoNotSeeEachOther) {
  SegmentStore hold = MakeStore("hold");
  SegmentStore holdfast = MakeStore("holdfast");
  Result<Segment> a = hold.Create(1, Page());
  Result<Segment> b = holdfast.Create(1, Page());
  Result<Segment> c = holdfast.Create(2, Page());
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  // Files that only look like segments.
  for (const char* stray : {"hold-1", "hold-0000000000000003.tmp", "holdfast-zz", "other-x"}) {
    std::ofstream(dir_ + "/" + stray) << "x";
  }

  Result<std::vector<std::string>> mine = hold.List();
  Result<std::vector<std::string>> theirs = holdfast.List();
  ASSERT_TRUE(mine.ok() && theirs.ok());
  EXPECT_EQ(*mine, std::vector<std::string>{"hold-0000000000000001"});
  EXPECT_EQ(*theirs,
            (std::vector<std::string>{"holdfast-0000000000000001", "holdfast-0000000000000002"}));

  // Neither can open or remove the other's segments.
  EXPECT_EQ(hold.Open("holdfast-0000000000000001", Page()).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(hold.Remove("holdfast-0000000000000002").code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(fs::exists(dir_ + "/holdfast-0000000000000002"));
}

TEST_F(SegmentStoreTest, DataIsSharedBetweenMappingsAndOutlivesThem) {
  SegmentStore store = MakeStore();
  std::string name;
  uint64_t bytes = 0;
  {
    Result<Segment> first = store.Create(9, 5 * Page());
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    name = first->name();
    bytes = first->bytes();
    Fill(*first, 3);

    Result<Segment> second = store.Open(name, bytes);
    ASSERT_TRUE(second.ok()) << second.status().ToString();
    EXPECT_TRUE(HasPattern(*second, 3));
    // And back: writes through the second mapping reach the first.
    Fill(*second, 11);
    EXPECT_TRUE(HasPattern(*first, 11));

    // The first handle goes away; the second mapping keeps working.
    { Segment gone = std::move(first).value(); }
    EXPECT_EQ(CountMappings(dir_ + "/" + name), 1);
    EXPECT_TRUE(HasPattern(*second, 11));
    second->data()[0] = 0xAB;
  }
  EXPECT_EQ(CountMappings(dir_ + "/" + name), 0);

  // No mapping at all: the tmpfs file still holds the bytes (a daemon
  // restart reattaches this way).
  Result<Segment> again = store.Open(name, bytes);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->data()[0], 0xAB);
  again->data()[0] = static_cast<uint8_t>(11);
  EXPECT_TRUE(HasPattern(*again, 11));
}

TEST_F(SegmentStoreTest, OpenWithWrongSizeIsDataLoss) {
  SegmentStore store = MakeStore();
  Result<Segment> segment = store.Create(1, 2 * Page());
  ASSERT_TRUE(segment.ok());
  const int fds = CountOpenFds();
  for (uint64_t wrong : {uint64_t{0}, Page(), 2 * Page() - 1, 2 * Page() + 1, 3 * Page()}) {
    Result<Segment> opened = store.Open(segment->name(), wrong);
    EXPECT_EQ(opened.status().code(), StatusCode::kDataLoss) << wrong;
    EXPECT_NE(opened.status().message().find(segment->path()), std::string::npos);
  }
  EXPECT_EQ(CountOpenFds(), fds);
  EXPECT_EQ(CountMappings(segment->path()), 1);  // only the original
  EXPECT_TRUE(fs::exists(segment->path()));      // a failed Open removes nothing
}

TEST_F(SegmentStoreTest, CreateOfExistingIdIsAlreadyExistsAndKeepsTheData) {
  SegmentStore store = MakeStore();
  Result<Segment> first = store.Create(5, Page());
  ASSERT_TRUE(first.ok());
  Fill(*first, 77);

  Result<Segment> dup = store.Create(5, 2 * Page());
  EXPECT_EQ(dup.status().code(), StatusCode::kAlreadyExists);
  EXPECT_NE(dup.status().message().find(first->path()), std::string::npos)
      << dup.status().message();
  EXPECT_NE(dup.status().message().find(std::strerror(EEXIST)), std::string::npos)
      << dup.status().message();
  // The failed Create must not unwind someone else's file.
  ASSERT_TRUE(fs::exists(first->path()));
  EXPECT_EQ(fs::file_size(first->path()), Page());
  Result<Segment> reopened = store.Open(first->name(), Page());
  ASSERT_TRUE(reopened.ok());
  EXPECT_TRUE(HasPattern(*reopened, 77));
}

TEST_F(SegmentStoreTest, FullTmpfsIsResourceExhaustedAndLeavesNothing) {
  std::string mount_point = dir_ + "/tiny";
  ASSERT_EQ(mkdir(mount_point.c_str(), 0700), 0);
  if (mount("tmpfs", mount_point.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=1M,mode=0700") !=
      0) {
    GTEST_SKIP() << "cannot mount a 1 MiB tmpfs (" << std::strerror(errno)
                 << "); needs root or CAP_SYS_ADMIN";
  }
  struct Unmount {
    std::string path;
    ~Unmount() { umount2(path.c_str(), MNT_DETACH); }
  } unmount{mount_point};

  SegmentStoreOptions options;
  options.directory = mount_point;
  options.prefix = "tiny";
  Result<SegmentStore> store = SegmentStore::Create(options);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  auto free_bytes = [&] {
    struct statvfs vfs;
    EXPECT_EQ(statvfs(mount_point.c_str(), &vfs), 0);
    return static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  };

  Result<Segment> half = store->Create(1, 512 << 10);
  ASSERT_TRUE(half.ok()) << half.status().ToString();
  const uint64_t free_before = free_bytes();
  const int fds = CountOpenFds();

  Result<Segment> too_big = store->Create(2, 1 << 20);
  EXPECT_EQ(too_big.status().code(), StatusCode::kResourceExhausted) << too_big.status().ToString();
  EXPECT_NE(too_big.status().message().find(mount_point + "/tiny-0000000000000002"),
            std::string::npos)
      << too_big.status().message();
  EXPECT_NE(too_big.status().message().find(std::strerror(ENOSPC)), std::string::npos)
      << too_big.status().message();

  // Unwound: no file, no fd, no mapping, and every reserved page given back.
  EXPECT_FALSE(fs::exists(mount_point + "/tiny-0000000000000002"));
  Result<std::vector<std::string>> names = store->List();
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, std::vector<std::string>{"tiny-0000000000000001"});
  EXPECT_EQ(CountOpenFds(), fds);
  EXPECT_EQ(free_bytes(), free_before);

  // What does fit still fits.
  Result<Segment> small = store->Create(3, 256 << 10);
  EXPECT_TRUE(small.ok()) << small.status().ToString();
}

TEST_F(SegmentStoreTest, SegmentIsMoveOnly) {
  static_assert(!std::is_copy_constructible_v<Segment>);
  static_assert(!std::is_copy_assignable_v<Segment>);
  static_assert(std::is_nothrow_move_constructible_v<Segment>);
  static_assert(std::is_nothrow_move_assignable_v<Segment>);

  Segment empty;
  EXPECT_FALSE(empty.valid());
  EXPECT_EQ(empty.data(), nullptr);
  EXPECT_EQ(empty.bytes(), 0u);

  SegmentStore store = MakeStore();
  Result<Segment> a = store.Create(1, Page());
  Result<Segment> b = store.Create(2, Page());
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string a_path = a->path();
  const std::string b_path = b->path();
  uint8_t* a_data = a->data();
  Fill(*a, 5);

  Segment moved(std::move(*a));
  EXPECT_TRUE(moved.valid());
  EXPECT_EQ(moved.data(), a_data);
  EXPECT_EQ(moved.id(), 1u);
  EXPECT_EQ(moved.path(), a_path);
  EXPECT_TRUE(HasPattern(moved, 5));
  EXPECT_FALSE(a->valid());  // NOLINT(bugprone-use-after-move): checks the moved-from state
  EXPECT_EQ(a->data(), nullptr);
  EXPECT_EQ(a->bytes(), 0u);
  EXPECT_TRUE(a->name().empty());
  EXPECT_EQ(CountMappings(a_path), 1);

  // Assigning over a live segment unmaps it.
  EXPECT_EQ(CountMappings(b_path), 1);
  *b = std::move(moved);
  EXPECT_EQ(CountMappings(b_path), 0);
  EXPECT_EQ(CountMappings(a_path), 1);
  EXPECT_EQ(b->path(), a_path);
  EXPECT_TRUE(HasPattern(*b, 5));
  EXPECT_FALSE(moved.valid());  // NOLINT(bugprone-use-after-move)

  // Into an empty handle, and destroyed through it.
  Segment last;
  last = std::move(*b);
  EXPECT_EQ(last.data(), a_data);
  last = Segment();
  EXPECT_FALSE(last.valid());
  EXPECT_EQ(CountMappings(a_path), 0);
  EXPECT_TRUE(fs::exists(a_path));  // unmapping never removes the file
}

TEST_F(SegmentStoreTest, NoDescriptorsOrMappingsLeak) {
  SegmentStore store = MakeStore();
  const int fds = CountOpenFds();
  for (int round = 0; round < 20; ++round) {
    Result<Segment> s = store.Create(static_cast<uint64_t>(round), Page() * (round % 3 + 1));
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    EXPECT_FALSE(store.Create(static_cast<uint64_t>(round), Page()).ok());
    Result<Segment> o = store.Open(s->name(), s->bytes());
    ASSERT_TRUE(o.ok());
    EXPECT_FALSE(store.Open(s->name(), s->bytes() + 1).ok());
    EXPECT_FALSE(store.Open(store.NameFor(1000 + round), Page()).ok());
    EXPECT_TRUE(store.List().ok());
    if (round % 2 == 0) {
      EXPECT_TRUE(store.Remove(s->name()).ok());
    }
  }
  EXPECT_EQ(CountOpenFds(), fds);
  for (uint64_t id = 0; id < 20; ++id) {
    EXPECT_EQ(CountMappings(dir_ + "/" + store.NameFor(id)), 0) << id;
  }
}

TEST_F(SegmentStoreTest, StoreOptionsAreValidated) {
  SegmentStoreOptions options;
  options.directory = dir_;
  for (const char* bad :
       {"", "a-b", "a.b", "a b", "../x", "é", "abcdefghijklmnopqrstuvwxyz0123456"}) {
    options.prefix = bad;
    Result<SegmentStore> store = SegmentStore::Create(options);
    EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  for (const char* good : {"a", "_", "Holdfast_2", "abcdefghijklmnopqrstuvwxyz012345"}) {
    options.prefix = good;
    EXPECT_TRUE(SegmentStore::Create(options).ok()) << good;
  }

  options.prefix = "ok";
  options.directory = dir_ + "/missing";
  Result<SegmentStore> missing = SegmentStore::Create(options);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(options.directory), std::string::npos);

  options.directory = dir_ + "/file";
  std::ofstream(options.directory) << "x";
  EXPECT_EQ(SegmentStore::Create(options).status().code(), StatusCode::kInvalidArgument);

  options.directory = "";
  EXPECT_EQ(SegmentStore::Create(options).status().code(), StatusCode::kInvalidArgument);

  options.directory = dir_;
  options.mode = 010000;
  EXPECT_EQ(SegmentStore::Create(options).status().code(), StatusCode::kInvalidArgument);

  // A trailing slash does not leak into paths.
  options.mode = 0600;
  options.directory = dir_ + "//";
  Result<SegmentStore> slashed = SegmentStore::Create(options);
  ASSERT_TRUE(slashed.ok());
  Result<Segment> s = slashed->Create(1, 1);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->path(), dir_ + "/ok-0000000000000001");
}

TEST_F(SegmentStoreTest, BadArgumentsAreInvalid) {
  SegmentStore store = MakeStore();
  EXPECT_EQ(store.Create(1, 0).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Create(1, ~uint64_t{0}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Create(1, (uint64_t{1} << 62) + 1).status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(dir_ + "/hftest-0000000000000001"));
  for (const char* bad : {"../etc/passwd", "hftest-1", "", "/dev/shm/hftest-0000000000000001"}) {
    EXPECT_EQ(store.Open(bad, Page()).status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(store.Remove(bad).code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST_F(SegmentStoreTest, ModeIsExactDespiteUmask) {
  SegmentStoreOptions options;
  options.directory = dir_;
  options.prefix = "moded";
  options.mode = 0660;
  Result<SegmentStore> store = SegmentStore::Create(options);
  ASSERT_TRUE(store.ok());
  mode_t old_umask = umask(077);
  Result<Segment> s = store->Create(1, Page());
  umask(old_umask);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  struct stat st;
  ASSERT_EQ(stat(s->path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
}

TEST_F(SegmentStoreTest, WorksWithoutPrefault) {
  SegmentStore store = MakeStore("lazy", /*prefault=*/false);
  Result<Segment> s = store.Create(1, 16 * Page());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  Fill(*s, 9);
  Result<Segment> o = store.Open(s->name(), s->bytes());
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(HasPattern(*o, 9));
}

TEST_F(SegmentStoreTest, OpenOfEmptyFileYieldsAnUnmappedHandle) {
  SegmentStore store = MakeStore();
  std::string name = store.NameFor(4);
  std::ofstream(dir_ + "/" + name).flush();
  Result<Segment> s = store.Open(name, 0);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_TRUE(s->valid());
  EXPECT_EQ(s->data(), nullptr);
  EXPECT_EQ(s->bytes(), 0u);
  EXPECT_EQ(s->id(), 4u);
  EXPECT_EQ(store.Open(name, Page()).status().code(), StatusCode::kDataLoss);
}

TEST_F(SegmentStoreTest, OpenRefusesSymlinksAndDirectories) {
  SegmentStore store = MakeStore();
  std::string target = dir_ + "/target";
  std::ofstream(target) << std::string(Page(), 'x');
  std::string link = store.NameFor(1);
  ASSERT_EQ(symlink(target.c_str(), (dir_ + "/" + link).c_str()), 0);
  EXPECT_EQ(store.Open(link, Page()).status().code(), StatusCode::kDataLoss);

  std::string subdir = store.NameFor(2);
  ASSERT_EQ(mkdir((dir_ + "/" + subdir).c_str(), 0700), 0);
  EXPECT_FALSE(store.Open(subdir, Page()).ok());
}

// /proc/self/mountinfo of a node with /dev/shm (4 KiB pages under shmem_enabled
// `never`) and the huge-page tmpfs of deploy/dev-shm-holdfast.mount on top.
constexpr char kMountinfo[] =
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "36 22 0:32 / /dev/shm rw,nosuid,nodev shared:5 - tmpfs tmpfs rw,size=24683620k\n"
    "99 36 0:50 / /dev/shm/holdfast rw,nosuid,nodev,noexec,relatime - tmpfs holdfast "
    "rw,size=22215260k,mode=2770,huge=within_size\n"
    "100 36 0:51 / /dev/shm/with\\040space rw shared:9 - tmpfs x rw,huge=always\n"
    "101 36 0:52 / /dev/shm/advised rw - tmpfs x rw,huge=advise\n";
constexpr char kNever[] = "always within_size advise [never] deny force\n";

TEST(ShmPagesTest, TheHugePageTmpfsGivesHugePages) {
  const ShmPages p = DescribeShmPages("/dev/shm/holdfast", kMountinfo, kNever);
  EXPECT_TRUE(p.huge) << p.how;
  EXPECT_EQ(p.how, "2 MiB pages: tmpfs /dev/shm/holdfast huge=within_size");
  // A directory below it, and a mount point with an escaped space.
  EXPECT_TRUE(DescribeShmPages("/dev/shm/holdfast/sub", kMountinfo, kNever).huge);
  EXPECT_TRUE(DescribeShmPages("/dev/shm/with space", kMountinfo, kNever).huge);
}

TEST(ShmPagesTest, PlainDevShmAndOtherFileSystemsGiveSmallPagesAndSayWhy) {
  const ShmPages shm = DescribeShmPages("/dev/shm/other", kMountinfo, kNever);
  EXPECT_FALSE(shm.huge);
  EXPECT_NE(shm.how.find("4 KiB pages: tmpfs /dev/shm huge=never"), std::string::npos) << shm.how;
  EXPECT_NE(shm.how.find("dev-shm-holdfast.mount"), std::string::npos) << shm.how;
  // A name that only starts like the mount point is not under it.
  EXPECT_FALSE(DescribeShmPages("/dev/shm/holdfastX", kMountinfo, kNever).huge);
  // huge=advise needs madvise, which segments do not get.
  EXPECT_FALSE(DescribeShmPages("/dev/shm/advised", kMountinfo, kNever).huge);
  const ShmPages disk = DescribeShmPages("/var/lib/x", kMountinfo, kNever);
  EXPECT_FALSE(disk.huge);
  EXPECT_NE(disk.how.find("is on ext4, not a tmpfs"), std::string::npos) << disk.how;
  EXPECT_FALSE(DescribeShmPages("/x", "", "").huge);  // nothing readable: no claim of huge
}

TEST(ShmPagesTest, ShmemEnabledForceAndDenyOverrideTheMount) {
  constexpr char kForce[] = "always within_size advise never deny [force]";
  constexpr char kDeny[] = "always within_size advise never [deny] force";
  EXPECT_TRUE(DescribeShmPages("/dev/shm/x", kMountinfo, kForce).huge);
  EXPECT_FALSE(DescribeShmPages("/dev/shm/holdfast", kMountinfo, kDeny).huge);
}

TEST(ShmPagesTest, ThisMachineAnswers) {
  const ShmPages p = DescribeShmPages("/dev/shm");
  EXPECT_FALSE(p.how.empty());
  std::printf("/dev/shm here: %s\n", p.how.c_str());
}

}  // namespace
}  // namespace holdfast::smp
