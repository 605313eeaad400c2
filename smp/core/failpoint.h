// Named failpoints for fault-injection tests, compiled only into test builds
// (CMake option HOLDFAST_FAILPOINTS, on with HOLDFAST_BUILD_TESTS).
//
// HOLDFAST_FAILPOINT("commit.after_verify") does nothing unless the process
// was started with HOLDFAST_FAILPOINTS naming it, e.g.
//   HOLDFAST_FAILPOINTS=commit.after_verify=kill
// Actions: "kill" raises SIGKILL (a crash at exactly that point), "abort"
// calls abort(), "sleep:MS" pauses the thread that hit it for MS
// milliseconds (to widen a race). Several points are separated by commas.
#ifndef HOLDFAST_SMP_CORE_FAILPOINT_H_
#define HOLDFAST_SMP_CORE_FAILPOINT_H_

namespace holdfast::smp {
void TriggerFailpoint(const char* name);
}  // namespace holdfast::smp

#ifdef HOLDFAST_ENABLE_FAILPOINTS
#define HOLDFAST_FAILPOINT(name) ::holdfast::smp::TriggerFailpoint(name)
#else
#define HOLDFAST_FAILPOINT(name) \
  do {                           \
  } while (false)
#endif

#endif  // HOLDFAST_SMP_CORE_FAILPOINT_H_
