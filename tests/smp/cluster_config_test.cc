// The cluster file and group formation: parsing, every validation error, and
// the domain-spreading invariant over random clusters.
#include "cluster/cluster_config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>

#include "holdfast/testing/seed.h"

namespace holdfast::smp {
namespace {

std::string Nodes(int count, int domains = 0) {
  std::string out = "nodes:\n";
  for (int i = 0; i < count; ++i) {
    out += "  - {id: n" + std::to_string(i) + ", control: 127.0.0.1:" + std::to_string(7000 + i) +
           ", data: 127.0.0.1:" + std::to_string(8000 + i);
    if (domains > 0) out += ", domain: rack" + std::to_string(i % domains);
    out += "}\n";
  }
  return out;
}

::testing::AssertionResult FailsWith(const std::string& text, const std::string& substring) {
  auto c = ParseClusterConfig(text, "test.yaml");
  if (c.ok()) return ::testing::AssertionFailure() << "parsed, expected an error with '" << substring << "'";
  if (c.status().code() != StatusCode::kInvalidArgument ||
      c.status().message().find(substring) == std::string::npos ||
      c.status().message().find("test.yaml") == std::string::npos) {
    return ::testing::AssertionFailure() << c.status().ToString();
  }
  return ::testing::AssertionSuccess();
}

TEST(ClusterConfigTest, ParsesEveryField) {
  auto c = ParseClusterConfig(
      "cluster_id: train-7\ncode: {k: 4, m: 2}\nwindow: 2MiB\nprotect_bandwidth: 1GiB\n"
      "protect_nice: 10\n" +
          Nodes(6, 6),
      "test.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->cluster_id, "train-7");
  EXPECT_EQ(c->code.mode, CodeSpec::Mode::kErasure);
  EXPECT_EQ(c->code.k, 4);
  EXPECT_EQ(c->code.m, 2);
  EXPECT_EQ(c->code.group_size(), 6);
  EXPECT_EQ(c->code.losses_tolerated(), 2);
  EXPECT_EQ(c->window_bytes, 2u << 20);
  EXPECT_EQ(c->protect_bandwidth, 1u << 30);
  EXPECT_EQ(c->protect_nice, 10);
  ASSERT_EQ(c->nodes.size(), 6u);
  EXPECT_EQ(c->nodes[5].id, "n5");
  EXPECT_EQ(c->nodes[5].control, "127.0.0.1:7005");
  EXPECT_EQ(c->nodes[5].data, "127.0.0.1:8005");
  EXPECT_EQ(c->nodes[5].domain, "rack5");
}

TEST(ClusterConfigTest, DefaultsAndReplication) {
  auto c = ParseClusterConfig("cluster_id: t\n" + Nodes(3), "test.yaml");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->code.group_size(), 3);  // 2+1
  EXPECT_EQ(c->window_bytes, 1u << 20);
  EXPECT_EQ(c->protect_bandwidth, 0u);
  EXPECT_EQ(c->protect_nice, 5);
  EXPECT_FALSE(ParseClusterConfig("cluster_id: t\nprotect_nice: 20\n" + Nodes(3), "test.yaml").ok());
  auto r = ParseClusterConfig("cluster_id: t\ncode: {mode: replicate, copies: 2}\n" + Nodes(3),
                              "test.yaml");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->code.mode, CodeSpec::Mode::kReplicate);
  EXPECT_EQ(r->code.group_size(), 3);
  EXPECT_EQ(r->code.losses_tolerated(), 2);
}

TEST(ClusterConfigTest, BadFilesAreClearErrors) {
  const std::string three = Nodes(3);
  EXPECT_TRUE(FailsWith("[1, 2]", "must be a mapping"));
  EXPECT_TRUE(FailsWith("cluster_id: t\nnodes: [\n", "test.yaml"));
  EXPECT_TRUE(FailsWith(three, "cluster_id is required"));
  EXPECT_TRUE(FailsWith("cluster_id: t\n", "nodes is required"));
  EXPECT_TRUE(FailsWith("cluster_id: t\nbogus: 1\n" + three, "unknown key 'bogus'"));
  EXPECT_TRUE(FailsWith("cluster_id: t\ncode: {k: 4, m: 0}\n" + three, "1 <= m <= 8"));
  EXPECT_TRUE(FailsWith("cluster_id: t\ncode: {k: 60, m: 8}\n" + three, "k + m <= 64"));
  EXPECT_TRUE(FailsWith("cluster_id: t\ncode: {k: x, m: 1}\n" + three, "code.k must be an integer"));
  EXPECT_TRUE(FailsWith("cluster_id: t\ncode: {mode: mirror}\n" + three, "erasure or replicate"));
  EXPECT_TRUE(FailsWith("cluster_id: t\ncode: {mode: replicate}\n" + three, "code.copies must be"));
  EXPECT_TRUE(
      FailsWith("cluster_id: t\ncode: {mode: replicate, copies: 1, k: 2}\n" + three, "do not apply"));
  EXPECT_TRUE(FailsWith("cluster_id: t\ncode: {copies: 1}\n" + three, "only to mode replicate"));
  EXPECT_TRUE(FailsWith("cluster_id: t\nwindow: 1000\n" + three, "multiple of 4 KiB"));
  EXPECT_TRUE(FailsWith("cluster_id: t\nwindow: lots\n" + three, "window"));
  EXPECT_TRUE(FailsWith("cluster_id: t\nnodes: {a: 1}\n", "nodes must be a list"));
  EXPECT_TRUE(FailsWith("cluster_id: t\nnodes:\n  - {id: a, control: h:1}\n", "node without data"));
  EXPECT_TRUE(FailsWith("cluster_id: t\nnodes:\n  - {id: a, control: h:1, data: h:99999}\n",
                        "not host:port"));
  EXPECT_TRUE(FailsWith("cluster_id: t\nnodes:\n  - {id: a, control: h, data: h:2}\n", "not host:port"));
  EXPECT_TRUE(
      FailsWith("cluster_id: t\nnodes:\n  - {id: a, control: h:1, data: h:2, rack: x}\n", "rack"));
  EXPECT_TRUE(FailsWith("cluster_id: t\nnodes:\n  - {id: a, control: h:1, data: h:2}\n"
                        "  - {id: a, control: h:3, data: h:4}\n",
                        "listed twice"));
  EXPECT_TRUE(FailsWith("cluster_id: t\nnodes:\n  - {id: a, control: h:1, data: h:2}\n"
                        "  - {id: b, control: h:3, data: h:1}\n",
                        "also used by node a"));
  EXPECT_TRUE(FailsWith("cluster_id: t\nnodes:\n  - {id: a, control: h:1, data: h:2, domain: r}\n"
                        "  - {id: b, control: h:3, data: h:4}\n",
                        "has no domain"));
}

TEST(ClusterConfigTest, LoadsAFileAndReportsAMissingOne) {
  const std::string path = ::testing::TempDir() + "/cluster_config_test.yaml";
  {
    std::ofstream out(path);
    out << "cluster_id: f\n" << Nodes(3);
  }
  auto c = LoadClusterFile(path);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->nodes.size(), 3u);
  EXPECT_EQ(LoadClusterFile(path + ".missing").status().code(), StatusCode::kNotFound);
}

TEST(FormGroupsTest, TwoPlusOneInFileOrder) {
  auto c = ParseClusterConfig("cluster_id: t\n" + Nodes(6), "test.yaml");
  ASSERT_TRUE(c.ok());
  auto groups = FormGroups(*c);
  ASSERT_TRUE(groups.ok()) << groups.status().ToString();
  ASSERT_EQ(groups->size(), 2u);
  // No domains: every node its own; dealt round robin over the two groups.
  EXPECT_EQ((*groups)[0].members, (std::vector<int>{0, 2, 4}));
  EXPECT_EQ((*groups)[1].members, (std::vector<int>{1, 3, 5}));
  auto where = Locate(*c, *groups, "n3");
  ASSERT_TRUE(where.ok());
  EXPECT_EQ(where->group, 1);
  EXPECT_EQ(where->position, 1);
  EXPECT_EQ(Locate(*c, *groups, "zz").status().code(), StatusCode::kNotFound);
}

TEST(FormGroupsTest, CountAndDomainErrors) {
  auto c = ParseClusterConfig("cluster_id: t\ncode: {k: 4, m: 2}\n" + Nodes(8), "test.yaml");
  ASSERT_TRUE(c.ok());
  auto g = FormGroups(*c);
  EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("multiple of the group size"), std::string::npos);
  // Six nodes, 2+1 (two groups), three of them in rack0: two would share a group.
  std::string text = "cluster_id: t\nnodes:\n";
  for (int i = 0; i < 6; ++i) {
    text += "  - {id: n" + std::to_string(i) + ", control: h:" + std::to_string(100 + i) +
            ", data: h:" + std::to_string(200 + i) + ", domain: " + (i < 3 ? "rack0" : "rack" + std::to_string(i)) + "}\n";
  }
  auto crowded = ParseClusterConfig(text, "test.yaml");
  ASSERT_TRUE(crowded.ok()) << crowded.status().ToString();
  g = FormGroups(*crowded);
  EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(g.status().message().find("domain rack0 has 3 nodes"), std::string::npos)
      << g.status().ToString();
}

// Random clusters: every node in exactly one group, groups of the right size,
// no domain twice in a group, and the same answer every time.
TEST(FormGroupsTest, RandomClustersSpreadDomains) {
  std::mt19937_64 rng(testing::SuiteSeed());
  for (int round = 0; round < 300; ++round) {
    const int k = 1 + static_cast<int>(rng() % 6);
    const int m = 1 + static_cast<int>(rng() % 3);
    const int n = k + m;
    const int groups = 1 + static_cast<int>(rng() % 5);
    const int total = n * groups;
    // Domains with at most `groups` nodes each.
    std::vector<std::string> domain_of(total);
    std::map<std::string, int> used;
    const int domain_count = n + static_cast<int>(rng() % (n + 1));
    for (int i = 0; i < total; ++i) {
      for (;;) {
        std::string d = "d" + std::to_string(rng() % domain_count);
        if (used[d] < groups) {
          ++used[d];
          domain_of[i] = d;
          break;
        }
      }
    }
    std::string text = "cluster_id: r\ncode: {k: " + std::to_string(k) + ", m: " +
                       std::to_string(m) + "}\nnodes:\n";
    for (int i = 0; i < total; ++i) {
      text += "  - {id: n" + std::to_string(i) + ", control: h:" + std::to_string(1000 + i) +
              ", data: h:" + std::to_string(30000 + i) + ", domain: " + domain_of[i] + "}\n";
    }
    auto c = ParseClusterConfig(text, "random.yaml");
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    auto g = FormGroups(*c);
    ASSERT_TRUE(g.ok()) << "round " << round << ": " << g.status().ToString();
    ASSERT_EQ(static_cast<int>(g->size()), groups);
    std::set<int> seen;
    for (const Group& group : *g) {
      ASSERT_EQ(static_cast<int>(group.members.size()), n);
      std::set<std::string> domains;
      for (int member : group.members) {
        ASSERT_TRUE(seen.insert(member).second) << "node " << member << " in two groups";
        ASSERT_TRUE(domains.insert(domain_of[member]).second)
            << "round " << round << ": domain " << domain_of[member] << " twice in group "
            << group.index;
      }
    }
    EXPECT_EQ(static_cast<int>(seen.size()), total);
    auto again = FormGroups(*c);
    ASSERT_TRUE(again.ok());
    for (size_t i = 0; i < g->size(); ++i) EXPECT_EQ((*g)[i].members, (*again)[i].members);
  }
}

// The example in deploy/ loads and forms its groups: one 4+2 group over six
// racks.
TEST(ClusterConfigTest, ExampleFileLoads) {
  auto config = LoadClusterFile(std::string(HOLDFAST_SOURCE_DIR) + "/deploy/cluster.example.yaml");
  ASSERT_TRUE(config.ok()) << config.status().ToString();
  EXPECT_EQ(config->code.k, 4);
  EXPECT_EQ(config->code.m, 2);
  auto groups = FormGroups(*config);
  ASSERT_TRUE(groups.ok()) << groups.status().ToString();
  ASSERT_EQ(groups->size(), 1u);
  EXPECT_EQ((*groups)[0].members.size(), 6u);
}

}  // namespace
}  // namespace holdfast::smp
