// Private to catalog/: the argument checks both Catalog implementations make
// before applying a batch, so that they accept and reject the same batches.
#ifndef HOLDFAST_SMP_CATALOG_BATCH_VALIDATION_H_
#define HOLDFAST_SMP_CATALOG_BATCH_VALIDATION_H_

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "catalog/catalog.h"

namespace holdfast::smp::catalog_internal {

// `bytes` with non-printable bytes as \xNN, for error messages.
inline std::string Printable(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (char c : bytes) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '\\') {
      out.push_back(c);
    } else {
      char hex[5];
      std::snprintf(hex, sizeof(hex), "\\x%02x", u);
      out += hex;
    }
  }
  return out;
}

// True when `s` is well-formed UTF-8 as RFC 3629 defines it: no overlong
// forms, no surrogates, nothing above U+10FFFF.
inline bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    unsigned char lo = 0x80;  // the range of the second byte
    unsigned char hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      if (c == 0xe0) lo = 0xa0;  // overlong
      if (c == 0xed) hi = 0x9f;  // surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      if (c == 0xf0) lo = 0x90;  // overlong
      if (c == 0xf4) hi = 0x8f;  // above U+10FFFF
    } else {
      return false;
    }
    if (s.size() - i < len) return false;
    const auto second = static_cast<unsigned char>(s[i + 1]);
    if (second < lo || second > hi) return false;
    for (size_t k = 2; k < len; ++k) {
      const auto next = static_cast<unsigned char>(s[i + k]);
      if (next < 0x80 || next > 0xbf) return false;
    }
    i += len;
  }
  return true;
}

// The path ("items[3].spec.name") of the first proto3 `string` field in
// `message`, at any depth, that is not valid UTF-8; empty when there is none.
// Protobuf serializes such a field (logging an error) but refuses to parse
// it, so a record holding one would be written and then fail Load.
inline std::string FindInvalidUtf8(const google::protobuf::Message& message) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* reflection = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const FieldDescriptor* field : fields) {
    const bool repeated = field->is_repeated();
    const int count = repeated ? reflection->FieldSize(message, field) : 1;
    const auto name = [&](int i) {
      return repeated ? field->name() + "[" + std::to_string(i) + "]" : field->name();
    };
    if (field->type() == FieldDescriptor::TYPE_STRING) {
      std::string scratch;
      for (int i = 0; i < count; ++i) {
        const std::string& value =
            repeated ? reflection->GetRepeatedStringReference(message, field, i, &scratch)
                     : reflection->GetStringReference(message, field, &scratch);
        if (!IsValidUtf8(value)) return name(i);
      }
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      for (int i = 0; i < count; ++i) {
        const std::string inner =
            FindInvalidUtf8(repeated ? reflection->GetRepeatedMessage(message, field, i)
                                     : reflection->GetMessage(message, field));
        if (!inner.empty()) return name(i) + "." + inner;
      }
    }
  }
  return {};
}

inline Status CheckUtf8(const google::protobuf::Message& record, std::string_view where) {
  const std::string field = FindInvalidUtf8(record);
  if (field.empty()) return Status::Ok();
  return Status::InvalidArgument(std::string(where) + ": " + field + " is not valid UTF-8");
}

// Job ids end at a NUL byte in the RocksDB key space, so they cannot hold one.
inline Status CheckJobId(std::string_view job_id, std::string_view where) {
  if (job_id.find('\0') != std::string_view::npos) {
    return Status::InvalidArgument(std::string(where) + ": job id \"" + Printable(job_id) +
                                   "\" contains a NUL byte");
  }
  return Status::Ok();
}

// INVALID_ARGUMENT, naming the first bad field, when `batch` holds a job id
// with a NUL byte, a negative rank (ranks are stored unsigned, so a negative
// one would not sort), a protection with a negative position, k or m, or a
// record with a string that is not valid UTF-8 (at any depth: the group
// manifest's rank parts included).
inline Status ValidateBatch(const CatalogBatch& batch) {
  const auto at = [](std::string_view field, size_t i) {
    return std::string(field) + "[" + std::to_string(i) + "]";
  };
  for (size_t i = 0; i < batch.put_jobs.size(); ++i) {
    HOLDFAST_RETURN_IF_ERROR(CheckJobId(batch.put_jobs[i].job_id(), at("put_jobs", i)));
    HOLDFAST_RETURN_IF_ERROR(CheckUtf8(batch.put_jobs[i], at("put_jobs", i)));
  }
  for (size_t i = 0; i < batch.put_manifests.size(); ++i) {
    const v1::RankManifestRecord& m = batch.put_manifests[i];
    HOLDFAST_RETURN_IF_ERROR(CheckJobId(m.job_id(), at("put_manifests", i)));
    if (m.rank() < 0) {
      return Status::InvalidArgument(at("put_manifests", i) + ": negative rank " +
                                     std::to_string(m.rank()));
    }
    HOLDFAST_RETURN_IF_ERROR(CheckUtf8(m, at("put_manifests", i)));
  }
  for (size_t i = 0; i < batch.put_versions.size(); ++i) {
    HOLDFAST_RETURN_IF_ERROR(CheckJobId(batch.put_versions[i].job_id(), at("put_versions", i)));
    HOLDFAST_RETURN_IF_ERROR(CheckUtf8(batch.put_versions[i], at("put_versions", i)));
  }
  for (size_t i = 0; i < batch.put_protections.size(); ++i) {
    const v1::ProtectionRecord& p = batch.put_protections[i];
    HOLDFAST_RETURN_IF_ERROR(CheckJobId(p.job_id(), at("put_protections", i)));
    const auto not_negative = [&](std::string_view field, int32_t value) {
      if (value >= 0) return Status::Ok();
      return Status::InvalidArgument(at("put_protections", i) + ": negative " + std::string(field) +
                                     " " + std::to_string(value));
    };
    HOLDFAST_RETURN_IF_ERROR(not_negative("position", p.position()));
    HOLDFAST_RETURN_IF_ERROR(not_negative("k", p.k()));
    HOLDFAST_RETURN_IF_ERROR(not_negative("m", p.m()));
    HOLDFAST_RETURN_IF_ERROR(CheckUtf8(p, at("put_protections", i)));
  }
  for (size_t i = 0; i < batch.delete_versions.size(); ++i) {
    HOLDFAST_RETURN_IF_ERROR(CheckJobId(batch.delete_versions[i].job_id, at("delete_versions", i)));
  }
  for (size_t i = 0; i < batch.delete_parts.size(); ++i) {
    const PartKey& p = batch.delete_parts[i];
    HOLDFAST_RETURN_IF_ERROR(CheckJobId(p.job_id, at("delete_parts", i)));
    if (p.rank < 0) {
      return Status::InvalidArgument(at("delete_parts", i) + ": negative rank " +
                                     std::to_string(p.rank));
    }
  }
  for (size_t i = 0; i < batch.delete_protections.size(); ++i) {
    HOLDFAST_RETURN_IF_ERROR(
        CheckJobId(batch.delete_protections[i].job_id, at("delete_protections", i)));
  }
  for (size_t i = 0; i < batch.delete_jobs.size(); ++i) {
    HOLDFAST_RETURN_IF_ERROR(CheckJobId(batch.delete_jobs[i], at("delete_jobs", i)));
  }
  return Status::Ok();
}

}  // namespace holdfast::smp::catalog_internal

#endif  // HOLDFAST_SMP_CATALOG_BATCH_VALIDATION_H_
