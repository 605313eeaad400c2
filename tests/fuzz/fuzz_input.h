// The framing shared by the fuzz targets and the corpus generator: an input
// is a sequence of fields, each a varint length and that many bytes. A
// truncated last field ends the input.
#ifndef HOLDFAST_TESTS_FUZZ_FUZZ_INPUT_H_
#define HOLDFAST_TESTS_FUZZ_FUZZ_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace holdfast::fuzz {

class FieldReader {
 public:
  FieldReader(const uint8_t* data, size_t size)
      : rest_(reinterpret_cast<const char*>(data), size) {}

  // The next field; false when none is left.
  bool Next(std::string_view* field) {
    uint64_t length = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (rest_.empty()) return false;
      const auto byte = static_cast<uint8_t>(rest_.front());
      rest_.remove_prefix(1);
      length |= uint64_t{byte & 0x7fu} << shift;
      if ((byte & 0x80) == 0) break;
    }
    if (length > rest_.size()) return false;
    *field = rest_.substr(0, length);
    rest_.remove_prefix(length);
    return true;
  }

 private:
  std::string_view rest_;
};

inline void AppendField(std::string* out, std::string_view field) {
  uint64_t length = field.size();
  while (length >= 0x80) {
    out->push_back(static_cast<char>((length & 0x7f) | 0x80));
    length >>= 7;
  }
  out->push_back(static_cast<char>(length));
  out->append(field);
}

}  // namespace holdfast::fuzz

#endif  // HOLDFAST_TESTS_FUZZ_FUZZ_INPUT_H_
