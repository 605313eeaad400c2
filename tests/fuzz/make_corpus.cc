// Writes the seed corpora of tests/fuzz/corpus/ (except python_state: see
// make_python_corpus.py) from real records and messages:
//   catalog_record/  catalogs written by RocksDbCatalog::Apply and read back
//                    from the RocksDB directory, in fuzz_input.h framing
//   peer_request/    Peer requests as a coordinator builds them
//   config/, cluster/  deploy/*.example.yaml and variants
// Usage: make_corpus SOURCE_DIR OUT_DIR (run by tests/fuzz/run.sh --seeds).
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "catalog/rocksdb_catalog.h"
#include "fuzz_input.h"
#include "holdfast/ec/checksum.h"
#include "holdfast/v1/peer.pb.h"
#include "segment_fixture.h"

namespace fs = std::filesystem;
using namespace holdfast;
using namespace holdfast::smp;

namespace {

void Fail(const std::string& what) {
  std::fprintf(stderr, "make_corpus: %s\n", what.c_str());
  std::exit(1);
}

void Write(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  if (!out) Fail("cannot write " + path.string());
}

std::string Read(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail("cannot read " + path.string());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string SegmentName(uint64_t id) {
  char name[64];
  std::snprintf(name, sizeof(name), "%s-%016llx", fuzz::kSegmentPrefix,
                static_cast<unsigned long long>(id));
  return name;
}

// A rank part in fixture segment `id`: three items whose checksums match
// the fixture's bytes.
v1::RankManifestRecord Manifest(const std::string& job, int64_t step, int rank, uint64_t id) {
  const std::vector<uint8_t> bytes = fuzz::FixtureBytes(id);
  v1::RankManifestRecord m;
  m.set_job_id(job);
  m.set_step(step);
  m.set_rank(rank);
  m.set_segment_name(SegmentName(id));
  m.set_segment_bytes(fuzz::kSegmentBytes);
  m.set_committed_unix_micros(1'700'000'000'000'000 + step);
  const uint64_t offsets[] = {0, 4096, 6144};
  const uint64_t sizes[] = {4096, 1000, 2048};
  const char* names[] = {"model.weight", "model.bias", "__holdfast_skeleton__"};
  for (int i = 0; i < 3; ++i) {
    v1::Item* item = m.add_items();
    item->mutable_spec()->set_name(names[i]);
    item->mutable_spec()->set_dtype(i == 2 ? v1::DTYPE_BYTES : v1::DTYPE_FLOAT32);
    if (i != 2) item->mutable_spec()->add_shape(static_cast<int64_t>(sizes[i] / 4));
    item->mutable_spec()->set_nbytes(sizes[i]);
    item->set_offset(offsets[i]);
    item->set_checksum(ec::Checksum({bytes.data() + offsets[i], sizes[i]}));
  }
  return m;
}

v1::JobRecord Job(const std::string& id, std::vector<int> ranks, int world) {
  v1::JobRecord job;
  job.set_job_id(id);
  job.set_world_size(world);
  for (int r : ranks) job.add_local_ranks(r);
  return job;
}

v1::VersionRecord Version(const std::string& job, int64_t step) {
  v1::VersionRecord v;
  v.set_job_id(job);
  v.set_step(step);
  v.set_completed_unix_micros(1'700'000'000'000'000 + step);
  return v;
}

// A 2+1 protection record of `job` `step`, this member at position 1 with
// parity in fixture segment `parity_id` (0: none).
v1::ProtectionRecord Protection(const std::string& job, int64_t step, uint64_t parity_id) {
  v1::ProtectionRecord p;
  p.set_job_id(job);
  p.set_step(step);
  p.set_round_id(0x1234abcd);
  p.set_group(0);
  p.set_position(1);
  p.set_k(2);
  p.set_m(1);
  p.set_alignment(4096);
  p.set_world_size(2);
  for (int i = 0; i < 3; ++i) {
    auto* member = p.add_members();
    member->set_node_id("n0" + std::to_string(i));
    member->set_data_bytes(i < 2 ? fuzz::kSegmentBytes : 0);
    if (i < 2) *member->add_ranks() = Manifest(job, step, i, 1 + static_cast<uint64_t>(i));
  }
  for (int i = 0; i < 9; ++i) p.add_chunk_crcs(0x1111111111111111ull * static_cast<uint64_t>(i));
  if (parity_id != 0) {
    p.set_parity_segment(SegmentName(parity_id));
    p.set_parity_bytes(fuzz::kSegmentBytes);
  }
  p.set_protected_unix_micros(1'700'000'000'000'000 + step);
  return p;
}

// Applies `batches` to a new RocksDbCatalog, then reads every (key, value)
// of its database, as Load sees them.
std::string CatalogSeed(const std::vector<CatalogBatch>& batches, uint64_t segment_ids) {
  char tmpl[] = "/tmp/holdfast-make-corpus-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) Fail("mkdtemp");
  const std::string dir = tmpl;
  {
    auto catalog = OpenRocksDbCatalog(dir + "/catalog");
    if (!catalog.ok()) Fail(catalog.status().ToString());
    for (const CatalogBatch& b : batches) {
      if (Status s = (*catalog)->Apply(b); !s.ok()) Fail(s.ToString());
    }
    if (segment_ids > 0 && !(*catalog)->AllocateSegmentIds(segment_ids).ok()) Fail("allocate");
  }
  rocksdb::DB* raw = nullptr;
  rocksdb::Options options;
  if (!rocksdb::DB::OpenForReadOnly(options, dir + "/catalog", &raw).ok()) Fail("reopen");
  std::unique_ptr<rocksdb::DB> db(raw);
  std::string seed;
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    fuzz::AppendField(&seed, it->key().ToStringView());
    fuzz::AppendField(&seed, it->value().ToStringView());
  }
  it.reset();
  db.reset();
  fs::remove_all(dir);
  return seed;
}

void CatalogSeeds(const fs::path& out) {
  // A 2-rank job with two complete versions, a protection of the newest.
  CatalogBatch job;
  job.put_jobs.push_back(Job("train-a", {0, 1}, 2));
  CatalogBatch v1b;
  v1b.put_manifests = {Manifest("train-a", 100, 0, 1), Manifest("train-a", 100, 1, 2)};
  v1b.put_versions = {Version("train-a", 100)};
  CatalogBatch v2b;
  v2b.put_manifests = {Manifest("train-a", 200, 0, 3), Manifest("train-a", 200, 1, 4)};
  v2b.put_versions = {Version("train-a", 200)};
  CatalogBatch prot;
  prot.put_protections = {Protection("train-a", 200, 0)};
  Write(out / "catalog_record" / "two_versions_protected", CatalogSeed({job, v1b, v2b, prot}, 5));

  // A partial version newer than the complete one (rank 1 not yet committed).
  CatalogBatch partial;
  partial.put_manifests = {Manifest("train-a", 300, 0, 3)};
  Write(out / "catalog_record" / "partial_newer", CatalogSeed({job, v1b, partial}, 4));

  // Only a protection, with parity, for a job without local ranks.
  CatalogBatch only;
  only.put_protections = {Protection("train-b", 7, 4)};
  Write(out / "catalog_record" / "protection_with_parity", CatalogSeed({only}, 0));

  // A version whose manifest names a segment of the wrong size, and one of
  // an unregistered job: both discarded by recovery.
  CatalogBatch bad;
  auto wrong = Manifest("train-a", 400, 0, 2);
  wrong.set_segment_bytes(4096);
  bad.put_manifests = {wrong, Manifest("ghost", 1, 0, 1)};
  bad.put_versions = {Version("train-a", 400), Version("ghost", 1)};
  Write(out / "catalog_record" / "discarded_versions", CatalogSeed({job, bad}, 2));

  Write(out / "catalog_record" / "empty", "");
}

void PeerSeed(const fs::path& out, const std::string& name, uint8_t kind,
              const google::protobuf::Message& message) {
  std::string bytes(1, static_cast<char>(kind));
  if (!message.AppendToString(&bytes)) Fail("serialize " + name);
  Write(out / "peer_request" / name, bytes);
}

// peer_request_fuzz.cc's group: node-a..node-f, this node at position 2.
void PeerSeeds(const fs::path& out) {
  const std::vector<std::string> group = {"node-a", "node-b", "node-c",
                                          "node-d", "node-e", "node-f"};
  v1::HelloRequest hello;
  auto* id = hello.mutable_from();
  id->set_cluster_id("train-7");
  id->set_config_hash(0x0123456789abcdefull);
  id->set_node_id("node-a");
  id->set_incarnation(0xfeedfacecafebeefull);
  id->set_ucx_address(std::string("\x01\x02\x03\x00\x04", 5));
  id->set_control_address("10.0.0.1:7410");
  id->set_data_address("10.0.0.1:7411");
  PeerSeed(out, "hello", 0, hello);

  v1::GroupStateRequest gs;
  gs.set_from_node("node-a");
  gs.set_job_id("train-a");
  PeerSeed(out, "group_state", 1, gs);

  v1::ProtectRequest protect;
  protect.set_from_node("node-a");
  protect.set_round_id(0x1234abcd);
  protect.set_job_id("train-a");
  protect.set_step(200);
  protect.set_k(4);
  protect.set_m(2);
  protect.set_alignment(4096);
  protect.set_window_bytes(1 << 20);
  for (size_t p = 0; p < group.size(); ++p) {
    protect.add_data_bytes(p < 4 ? (uint64_t{3} << 20) + p * 4097 : 0);
    protect.add_member_nodes(group[p]);
  }
  protect.set_world_size(4);
  protect.set_deadline_ms(60000);
  PeerSeed(out, "protect_4_2", 2, protect);
  v1::ProtectRequest replicate = protect;
  replicate.set_k(1);
  replicate.set_m(5);
  replicate.set_replicate(true);
  PeerSeed(out, "protect_replicate", 2, replicate);

  v1::ConcludeRequest conclude;
  conclude.set_from_node("node-a");
  conclude.set_round_id(0x1234abcd);
  conclude.set_job_id("train-a");
  conclude.set_step(200);
  conclude.set_protected_(true);
  v1::ProtectionRecord& m = *conclude.mutable_manifest();
  m.set_job_id("train-a");
  m.set_step(200);
  m.set_round_id(0x1234abcd);
  m.set_k(4);
  m.set_m(2);
  m.set_alignment(4096);
  m.set_world_size(4);
  for (size_t p = 0; p < group.size(); ++p) {
    auto* member = m.add_members();
    member->set_node_id(group[p]);
    member->set_data_bytes(protect.data_bytes(static_cast<int>(p)));
    if (p < 4) *member->add_ranks() = Manifest("train-a", 200, static_cast<int>(p), 1);
  }
  for (int i = 0; i < 36; ++i) m.add_chunk_crcs(0x9e3779b97f4a7c15ull * static_cast<uint64_t>(i));
  conclude.add_keep_steps(200);
  conclude.add_keep_steps(100);
  PeerSeed(out, "conclude_protected", 3, conclude);
  v1::ConcludeRequest abandoned;
  abandoned.set_from_node("node-a");
  abandoned.set_round_id(7);
  abandoned.set_job_id("train-a");
  abandoned.set_step(300);
  PeerSeed(out, "conclude_abandoned", 3, abandoned);

  v1::GetManifestRequest gm;
  gm.set_from_node("node-d");
  gm.set_job_id("train-a");
  gm.set_step(-1);
  PeerSeed(out, "get_manifest", 4, gm);

  // Chunks held at position 2 of a 6-node group: chunk c of stripe r lives
  // on node (r + c) % 6.
  for (uint32_t which = 0; which < 3; ++which) {
    v1::ReadChunksRequest rc;
    rc.set_from_node("node-d");
    rc.set_job_id("train-a");
    rc.set_step(200);
    rc.set_transfer_id(which);
    rc.set_window_bytes(1 << 20);
    for (int r = 0; r < 6; ++r) {
      auto* ref = rc.add_chunks();
      ref->set_stripe(r);
      ref->set_chunk((2 - r + 6) % 6);
    }
    rc.set_deadline_ms(60000);
    PeerSeed(out, "read_chunks_" + std::to_string(which), 5, rc);
  }

  v1::VerifyChunksRequest vc;
  vc.set_from_node("node-b");
  vc.set_job_id("train-a");
  vc.set_step(200);
  PeerSeed(out, "verify_chunks", 6, vc);
}

void YamlSeeds(const fs::path& source, const fs::path& out) {
  Write(out / "config" / "holdfastd.example.yaml", Read(source / "deploy/holdfastd.example.yaml"));
  Write(out / "config" / "small",
        "node_id: n03\nsocket: /run/holdfast/h.sock\nmemory: {budget: 1.5GiB}\n"
        "snapshots: {retain: 3, verify: commit, max_items: 4096}\n"
        "cluster: {file: /etc/holdfast/cluster.yaml}\nlog: {level: debug}\n");
  Write(out / "config" / "empty", "");
  Write(out / "cluster" / "cluster.example.yaml", Read(source / "deploy/cluster.example.yaml"));
  Write(out / "cluster" / "replicate",
        "cluster_id: pair\ncode: {mode: replicate, copies: 1}\nwindow: 256KiB\nnodes:\n"
        "  - {id: a, control: 127.0.0.1:7410, data: 127.0.0.1:7411}\n"
        "  - {id: b, control: 127.0.0.1:7420, data: 127.0.0.1:7421}\n");
  Write(out / "cluster" / "two_groups_domains",
        "cluster_id: c\ncode: {k: 2, m: 1}\nnodes:\n"
        "  - {id: n0, control: h0:1, data: h0:2, domain: r0}\n"
        "  - {id: n1, control: h1:1, data: h1:2, domain: r0}\n"
        "  - {id: n2, control: h2:1, data: h2:2, domain: r1}\n"
        "  - {id: n3, control: h3:1, data: h3:2, domain: r1}\n"
        "  - {id: n4, control: h4:1, data: h4:2, domain: r2}\n"
        "  - {id: n5, control: h5:1, data: h5:2}\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) Fail("usage: make_corpus SOURCE_DIR OUT_DIR");
  const fs::path source = argv[1];
  const fs::path out = argv[2];
  CatalogSeeds(out);
  PeerSeeds(out);
  YamlSeeds(source, out);
  return 0;
}
