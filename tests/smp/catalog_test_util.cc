#include "catalog_test_util.h"

#include <stdlib.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <system_error>

namespace holdfast::smp::catalog_test {

std::string SeedTrace() {
  char text[48];
  std::snprintf(text, sizeof(text), "HOLDFAST_TEST_SEED=0x%016llx",
                static_cast<unsigned long long>(SuiteSeed()));
  return text;
}

std::mt19937_64 TestRng() {
  const ::testing::TestInfo* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info == nullptr ? "" : std::string(info->test_suite_name()) + info->name();
  return std::mt19937_64(SuiteSeed() ^ std::hash<std::string>()(name));
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") +
                     "/holdfast-catalog-test-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

v1::JobRecord Job(const std::string& job_id, int world_size) {
  v1::JobRecord job;
  job.set_job_id(job_id);
  job.set_world_size(world_size);
  for (int r = 0; r < world_size && r < 4; ++r) job.add_local_ranks(r);
  return job;
}

v1::RankManifestRecord Manifest(const std::string& job_id, int64_t step, int32_t rank, int items) {
  v1::RankManifestRecord m;
  m.set_job_id(job_id);
  m.set_step(step);
  m.set_rank(rank);
  m.set_segment_name("seg-" + job_id + "-" + std::to_string(step) + "-" + std::to_string(rank));
  m.set_committed_unix_micros(step * 1000 + rank);
  uint64_t offset = 0;
  for (int i = 0; i < items; ++i) {
    v1::Item* item = m.add_items();
    item->mutable_spec()->set_name("layers." + std::to_string(i) + ".weight");
    item->mutable_spec()->set_dtype(v1::DTYPE_BFLOAT16);
    item->mutable_spec()->add_shape(16);
    item->mutable_spec()->add_shape(i + 1);
    item->mutable_spec()->set_nbytes(uint64_t{32} * static_cast<uint64_t>(i + 1));
    item->set_offset(offset);
    item->set_checksum(std::hash<std::string>()(m.segment_name() + std::to_string(i)));
    offset += item->spec().nbytes();
  }
  m.set_segment_bytes(offset);
  return m;
}

v1::VersionRecord Version(const std::string& job_id, int64_t step) {
  v1::VersionRecord v;
  v.set_job_id(job_id);
  v.set_step(step);
  v.set_completed_unix_micros(step * 1000 + 999);
  return v;
}

v1::ProtectionRecord Protection(const std::string& job_id, int64_t step, int members) {
  constexpr int kRanksPerMember = 2;
  v1::ProtectionRecord p;
  p.set_job_id(job_id);
  p.set_step(step);
  p.set_round_id(static_cast<uint32_t>(step) * 7 + 1);
  p.set_group(static_cast<int32_t>(std::hash<std::string>()(job_id) % 5));
  p.set_position(members - 1);
  p.set_k(members > 1 ? members - 1 : 1);
  p.set_m(1);
  p.set_replicate(members == 1);
  p.set_alignment(4096);
  p.set_world_size(members * kRanksPerMember);
  for (int i = 0; i < members; ++i) {
    v1::GroupMemberRecord* member = p.add_members();
    member->set_node_id("node-" + std::to_string(i));
    uint64_t bytes = 0;
    for (int r = 0; r < kRanksPerMember; ++r) {
      *member->add_ranks() = Manifest(job_id, step, i * kRanksPerMember + r, r + 1);
      bytes += member->ranks(r).segment_bytes();
    }
    member->set_data_bytes(bytes);
  }
  for (int c = 0; c < members * members; ++c) {
    p.add_chunk_crcs(
        std::hash<std::string>()(job_id + "/" + std::to_string(step) + "/" + std::to_string(c)));
  }
  p.set_parity_segment("parity-" + job_id + "-" + std::to_string(step));
  p.set_parity_bytes(p.members(0).data_bytes());
  p.set_protected_unix_micros(step * 1000 + 998);
  return p;
}

std::vector<ManifestId> ManifestIds(const CatalogContents& c) {
  std::vector<ManifestId> out;
  for (const auto& m : c.manifests) out.emplace_back(m.job_id(), m.step(), m.rank());
  return out;
}
std::vector<VersionId> VersionIds(const CatalogContents& c) {
  std::vector<VersionId> out;
  for (const auto& v : c.versions) out.emplace_back(v.job_id(), v.step());
  return out;
}
std::vector<VersionId> ProtectionIds(const CatalogContents& c) {
  std::vector<VersionId> out;
  for (const auto& p : c.protections) out.emplace_back(p.job_id(), p.step());
  return out;
}
std::set<std::string> JobIds(const CatalogContents& c) {
  std::set<std::string> out;
  for (const auto& j : c.jobs) out.insert(j.job_id());
  return out;
}

std::string Dump(const CatalogContents& c) {
  std::vector<std::string> jobs;
  for (const auto& j : c.jobs) jobs.push_back("job " + j.ShortDebugString());
  std::sort(jobs.begin(), jobs.end());
  std::string out;
  for (const auto& j : jobs) out += j + "\n";
  for (const auto& m : c.manifests) out += "manifest " + m.ShortDebugString() + "\n";
  for (const auto& v : c.versions) out += "version " + v.ShortDebugString() + "\n";
  for (const auto& p : c.protections) out += "protection " + p.ShortDebugString() + "\n";
  out += "next_segment_id " + std::to_string(c.next_segment_id) + "\n";
  return out;
}

CatalogContents Expected(const std::vector<CatalogBatch>& batches) {
  std::map<std::string, v1::JobRecord> jobs;
  std::map<ManifestId, v1::RankManifestRecord> manifests;
  std::map<VersionId, v1::VersionRecord> versions;
  std::map<VersionId, v1::ProtectionRecord> protections;
  for (const CatalogBatch& b : batches) {
    for (const auto& j : b.put_jobs) jobs[j.job_id()] = j;
    for (const auto& m : b.put_manifests) manifests[{m.job_id(), m.step(), m.rank()}] = m;
    for (const auto& v : b.put_versions) versions[{v.job_id(), v.step()}] = v;
    for (const auto& p : b.put_protections) protections[{p.job_id(), p.step()}] = p;
    for (const auto& d : b.delete_versions) {
      versions.erase({d.job_id, d.step});
      std::erase_if(manifests, [&](const auto& e) {
        return std::get<0>(e.first) == d.job_id && std::get<1>(e.first) == d.step;
      });
    }
    for (const auto& d : b.delete_parts) manifests.erase({d.job_id, d.step, d.rank});
    for (const auto& d : b.delete_protections) protections.erase({d.job_id, d.step});
    for (const auto& job_id : b.delete_jobs) {
      jobs.erase(job_id);
      std::erase_if(manifests, [&](const auto& e) { return std::get<0>(e.first) == job_id; });
      std::erase_if(versions, [&](const auto& e) { return e.first.first == job_id; });
      std::erase_if(protections, [&](const auto& e) { return e.first.first == job_id; });
    }
  }
  CatalogContents out;
  for (auto& [k, j] : jobs) out.jobs.push_back(j);
  for (auto& [k, m] : manifests) out.manifests.push_back(m);
  for (auto& [k, v] : versions) out.versions.push_back(v);
  for (auto& [k, p] : protections) out.protections.push_back(p);
  return out;
}

}  // namespace holdfast::smp::catalog_test
