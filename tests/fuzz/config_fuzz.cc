// Fuzz target: holdfastd's configuration file (smp/config/config.cc), parsed
// and validated as `holdfastd --config FILE` does (LoadConfigFile's parser,
// then Validate). Input: the file's text. An INVALID_ARGUMENT is expected;
// an exception escaping, a crash or a sanitizer report is a bug.
#include <cstdint>
#include <string>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = holdfast::smp::ParseConfigText(text, "fuzz.yaml");
  if (config.ok()) (void)holdfast::smp::Validate(*config);
  return 0;
}
