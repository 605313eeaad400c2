// Where a client keeps its job's secret for a daemon (docs/client.md, "Job
// secrets"; docs/security.md). Every call of a registered job carries the
// job's secret; the library finds it here, in order:
//   1. $HOLDFAST_JOB_TOKEN set: HMAC-SHA256(token, job id). Nothing is
//      stored; every rank and every restarted trainer with the same token
//      derives the same secret, on every node.
//   2. The file <dir>/<endpoint hash>-<job id> (mode 0600), written when the
//      daemon issued the secret at the job's first registration. A
//      restarted trainer of the same user reads it back.
// <dir> is $HOLDFAST_SECRET_DIR, else $XDG_RUNTIME_DIR/holdfast, else
// $HOME/.holdfast/secrets; it is created 0700 and must belong to this user
// and not be writable by others.
//
// Thread-safety: the functions may be called from any thread; registration
// is serialized across processes of the user by a lock on <dir>.
#ifndef HOLDFAST_CLIENT_JOB_SECRET_H_
#define HOLDFAST_CLIENT_JOB_SECRET_H_

#include <functional>
#include <string>

#include "holdfast/ec/status.h"

namespace holdfast::client {

// The secret the client would present for `job_id` at `endpoint` now: the
// token-derived one, the stored one, or "" when it has none.
Result<std::string> LoadJobSecret(const std::string& endpoint, const std::string& job_id);

// Registers a job holding the store's lock: `call` gets the secret to
// present ("" when none) and returns the secret the daemon issued ("" when
// it issued none); an issued secret is stored. Returns the secret to carry
// from now on.
Result<std::string> RegisterWithJobSecret(
    const std::string& endpoint, const std::string& job_id,
    const std::function<Result<std::string>(const std::string& secret)>& call);

}  // namespace holdfast::client

#endif  // HOLDFAST_CLIENT_JOB_SECRET_H_
