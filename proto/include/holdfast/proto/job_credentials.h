// Per-job credentials on the Snapshot service (docs/security.md, "Job
// secrets"): every call of a registered job carries the job id and the job's
// secret in gRPC metadata; the daemon keeps only the secret's SHA-256 in its
// catalog and compares in constant time.
//
// A secret is 64 lowercase hex characters (256 bits): issued by the daemon
// at a job's first RegisterJob, or derived by every rank from a shared token
// as HMAC-SHA256(token, job_id) ($HOLDFAST_JOB_TOKEN).
//
// Thread-safety: the functions are pure (NewJobSecret reads the OS's
// randomness through OpenSSL, which is thread-safe).
#ifndef HOLDFAST_PROTO_JOB_CREDENTIALS_H_
#define HOLDFAST_PROTO_JOB_CREDENTIALS_H_

#include <string>
#include <string_view>

namespace holdfast::proto {

// Metadata keys (lowercase, as gRPC requires).
inline constexpr char kJobIdMetadata[] = "holdfast-job";
inline constexpr char kJobSecretMetadata[] = "holdfast-job-secret";

// Whether `value` may be sent as an ASCII metadata value (printable, no
// NUL: gRPC aborts the process on anything else). A job id that is not is
// left out of the metadata; the daemon refuses such ids anyway.
bool MetadataSafe(std::string_view value);

// A new random secret; empty if the OS has no randomness to give (the
// caller fails the call).
std::string NewJobSecret();

// HMAC-SHA256(token, job_id) as a secret.
std::string SecretFromToken(std::string_view token, std::string_view job_id);

// 64 lowercase hex characters.
bool WellFormedSecret(std::string_view secret);

// The 32-byte SHA-256 of a secret: what the daemon stores.
std::string HashSecret(std::string_view secret);

// Whether `secret` hashes to `hash`, in time independent of where they differ.
bool SecretMatches(std::string_view secret, std::string_view hash);

}  // namespace holdfast::proto

#endif  // HOLDFAST_PROTO_JOB_CREDENTIALS_H_
