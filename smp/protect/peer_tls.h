// Mutual TLS on the control address (docs/security.md, "Peers with mutual
// TLS"): the credentials of the peer server and of every channel to a peer,
// and the names a caller's certificate carries.
//
// A node's certificate names its node id in its subjectAltName (DNS:<id>);
// channels to peer P check that P's server certificate names P (the TLS
// target name is the node id, not the address), and the Peer service checks
// that the caller's certificate names the node its requests claim to come
// from. An operator's certificate carries a name starting with
// kOperatorPrefix.
//
// Thread-safety: PeerTls is immutable after Load; the functions are pure.
#ifndef HOLDFAST_SMP_PROTECT_PEER_TLS_H_
#define HOLDFAST_SMP_PROTECT_PEER_TLS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "holdfast/ec/status.h"

namespace holdfast::smp {

inline constexpr const char* kOperatorPrefix = "operator:";

struct PeerTlsFiles {
  std::string ca;    // PEM: the CA every peer certificate must chain to
  std::string cert;  // PEM: this node's certificate (chain)
  std::string key;   // PEM: its private key
};

class PeerTls {
 public:
  // Reads the three PEM files. nullptr (OK) when all three paths are empty:
  // TLS is off. INVALID_ARGUMENT when only some are set, or a file holds no
  // PEM block; the file's error (NOT_FOUND, PERMISSION_DENIED) otherwise.
  static Result<std::unique_ptr<PeerTls>> Load(const PeerTlsFiles& files);

  // TLS, client certificate required and verified against the CA.
  std::shared_ptr<grpc::ServerCredentials> ServerCredentials() const;
  // TLS with this node's certificate; the server is verified against the CA.
  std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials() const;

 private:
  PeerTls() = default;
  std::string ca_, cert_, key_;
};

// The names the caller's verified certificate carries: its subjectAltName
// entries, or its common name when it has none. Empty for a caller without
// a certificate (an insecure port).
std::vector<std::string> PeerNames(const grpc::ServerContextBase& ctx);

// Whether one of `names` carries the operator role (kOperatorPrefix).
bool HasOperatorRole(const std::vector<std::string>& names);

// "a, b" or "no name" for messages.
std::string JoinNames(const std::vector<std::string>& names);

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_PROTECT_PEER_TLS_H_
