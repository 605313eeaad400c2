#include "protect/peer_tls.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include "config/config.h"

namespace holdfast::smp {
namespace {

Result<std::string> ReadPem(const std::string& path, const std::string& key) {
  auto text = ReadSmallFile(path);
  if (!text.ok()) return text.status().WithContext(key);
  if (text->find("-----BEGIN ") == std::string::npos) {
    return Status::InvalidArgument(key + ": " + path + " holds no PEM block");
  }
  return std::move(text).value();
}

std::vector<std::string> Names(const std::shared_ptr<const grpc::AuthContext>& auth) {
  std::vector<std::string> out;
  if (!auth || !auth->IsPeerAuthenticated()) return out;
  // The identity gRPC derives from the verified certificate: its SANs, or
  // its CN when it has none.
  for (const grpc::string_ref& name : auth->GetPeerIdentity()) {
    out.emplace_back(name.data(), name.size());
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<PeerTls>> PeerTls::Load(const PeerTlsFiles& files) {
  const int set = !files.ca.empty() + !files.cert.empty() + !files.key.empty();
  if (set == 0) return std::unique_ptr<PeerTls>();
  if (set != 3) {
    return Status::InvalidArgument("cluster.tls needs ca, cert and key together (got" +
                                   std::string(files.ca.empty() ? "" : " ca") +
                                   (files.cert.empty() ? "" : " cert") +
                                   (files.key.empty() ? "" : " key") + ")");
  }
  std::unique_ptr<PeerTls> tls(new PeerTls());
  HOLDFAST_ASSIGN_OR_RETURN(tls->ca_, ReadPem(files.ca, "cluster.tls.ca"));
  HOLDFAST_ASSIGN_OR_RETURN(tls->cert_, ReadPem(files.cert, "cluster.tls.cert"));
  HOLDFAST_ASSIGN_OR_RETURN(tls->key_, ReadPem(files.key, "cluster.tls.key"));
  struct stat st {};
  if (stat(files.key.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    spdlog::warn(
        "cluster.tls.key {} is readable by others than its owner (mode {:o}): whoever "
        "reads it can pose as this node; chmod 600 it",
        files.key, st.st_mode & 0777);
  }
  return tls;
}

std::shared_ptr<grpc::ServerCredentials> PeerTls::ServerCredentials() const {
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = ca_;
  options.pem_key_cert_pairs.push_back({key_, cert_});
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> PeerTls::ChannelCredentials() const {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = ca_;
  options.pem_private_key = key_;
  options.pem_cert_chain = cert_;
  return grpc::SslCredentials(options);
}

std::vector<std::string> PeerNames(const grpc::ServerContextBase& ctx) {
  return Names(ctx.auth_context());
}

bool HasOperatorRole(const std::vector<std::string>& names) {
  for (const std::string& n : names) {
    if (n.size() > std::string_view(kOperatorPrefix).size() && n.starts_with(kOperatorPrefix)) {
      return true;
    }
  }
  return false;
}

std::string JoinNames(const std::vector<std::string>& names) {
  if (names.empty()) return "no name";
  std::string out;
  for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace holdfast::smp
