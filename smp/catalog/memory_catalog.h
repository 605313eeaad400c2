// In-memory Catalog for unit tests, with fault injection: the next N applies
// (or loads) fail with a given status, leaving the contents unchanged.
#ifndef HOLDFAST_SMP_CATALOG_MEMORY_CATALOG_H_
#define HOLDFAST_SMP_CATALOG_MEMORY_CATALOG_H_

#include <memory>

#include "catalog/catalog.h"

namespace holdfast::smp {

class MemoryCatalog : public Catalog {
 public:
  MemoryCatalog();
  ~MemoryCatalog() override;

  Result<CatalogContents> Load() override;
  Status Apply(const CatalogBatch& batch) override;
  Result<uint64_t> AllocateSegmentIds(uint64_t count) override;

  // The next `count` calls to Apply fail with `status` and change nothing.
  void FailNextApplies(int count, Status status);
  int applies() const;  // successful Apply calls so far

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace holdfast::smp

#endif  // HOLDFAST_SMP_CATALOG_MEMORY_CATALOG_H_
