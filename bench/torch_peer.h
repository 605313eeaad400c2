// The torch.save / torch.load peer of smp_bench: bench/torch_save_bench.py
// running in --serve mode under a Python with torch, driven over pipes so
// that its timed calls take turns with the bench's other contenders.
//
// Thread-safety: not thread-safe; one caller at a time.
#ifndef HOLDFAST_BENCH_TORCH_PEER_H_
#define HOLDFAST_BENCH_TORCH_PEER_H_

#include <sys/types.h>

#include <cstdio>
#include <string>

namespace holdfast::bench {

class TorchPeer {
 public:
  TorchPeer() = default;
  ~TorchPeer() { Stop(); }
  TorchPeer(const TorchPeer&) = delete;
  TorchPeer& operator=(const TorchPeer&) = delete;

  // Starts `python script --serve`, which builds a state dict of `items`
  // fp32 tensors from the raw bytes of `data_file` and saves to and loads
  // from `out_file`; returns once it is ready. Fatal() if it fails.
  void Start(const std::string& python, const std::string& script, const std::string& data_file,
             const std::string& out_file, int items);

  // Runs "save" (times torch.save only) or "load" (times torch.load only)
  // and returns the seconds the script measured. Fatal() on any error.
  double Time(const char* command);

  // Saves the state dict to the output file, untimed, and keeps it there
  // (Stage), or deletes it (Unstage): for a torch.load in another process.
  void Stage();
  void Unstage();

  // Asks the script to quit and reaps it; no-op if not started.
  void Stop();

  // "<torch> <numpy> <python>" versions, as the script reported them.
  const std::string& versions() const { return versions_; }

 private:
  std::string ReadLine();
  void Expect(const char* command, const char* answer);

  pid_t pid_ = 0;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
  std::string versions_;
};

}  // namespace holdfast::bench

#endif  // HOLDFAST_BENCH_TORCH_PEER_H_
