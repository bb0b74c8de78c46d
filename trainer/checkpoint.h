// trainer/checkpoint.h — training checkpoints on disk: one directory per step under <out_dir>/checkpoints,
// written into a temporary directory (every file fsync'ed), renamed into place, then the `latest`
// pointer replaced atomically; the last N kept plus any marked to keep. A checkpoint is complete when
// its manifest (trainer_state.json) names every file with its size and checksum and they all match;
// nothing else is ever loaded. A manifest names only files directly inside its own directory, and
// `latest` is a hint for people and scripts: resuming takes the newest complete step-* directory of the
// run, whatever `latest` says (a writer stopped after its rename but before `latest` moved). What goes into a
// checkpoint is the trainer's (trainer/train.h).
//
//   checkpoints/step-00000100/
//     uio_config.json, uio_memory.safetensors   the compressor (model/memory_io.h; `uio generate --memory` reads it)
//     optimizer.safetensors                      AdamW state (optim/optimizer.h names)
//     config.ini                                 the resolved options of the run
//     trainer_state.json                         counters; per rank: data position, reservoir and random
//                                                generator states (CPU, each CUDA device); manifest (last)
//     keep                                       (optional) never pruned
//   checkpoints/latest                           "step-00000100\n"
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "trainer/train_state.h"

namespace uio::trainer {

// A checkpoint that cannot be used: missing, truncated or corrupt files, or one from another model.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct CheckpointOptions {
  int64_t keep_last = 3;  // complete checkpoints kept (older ones are deleted), >= 1
  int64_t keep_every = 0;  // also keep every checkpoint whose step is a multiple of this (0: none)
};

// Writes the files of one checkpoint into a directory it is given; throws on any failure.
using CheckpointWriter = std::function<void(const std::string& dir)>;

class CheckpointStore {
 public:
  // `root`: <out_dir>/checkpoints (created); options checked (check_checkpoint_options). A crashed
  // writer's leftovers are cleaned up by recover(), said on `log` when given.
  CheckpointStore(std::string root, CheckpointOptions options, std::ostream* log = nullptr);

  // Writes checkpoint `step`: `write` fills a fresh temporary directory, then save() adds the manifest
  // (`state`, with "files" filled in, as trainer_state.json, written last), fsyncs every file and the
  // directory, renames it to step-<step>, points `latest` at it and prunes. On any failure the temporary
  // directory is removed, the previous checkpoints and `latest` are untouched, and a CheckpointError
  // says what failed. Returns the checkpoint's directory.
  std::string save(int64_t step, nlohmann::json state, const CheckpointWriter& write);

  // newest_checkpoint() of this store.
  std::optional<std::string> find_latest(std::ostream& log) const;
  const std::string& root() const { return root_; }

 private:
  void prune(const std::string& newest) const;
  // A save stopped between its renames (of step N written again) leaves .tmp-step-N-* and .old-step-N-*
  // without step-N: the newest complete copy (the .tmp one, else the .old one) becomes step-N again, said
  // on `log`. Every other leftover .tmp-* / .old-* directory is removed.
  void recover(std::ostream* log) const;

  std::string root_;
  CheckpointOptions options_;
};

// Throws std::invalid_argument naming the option (keep_checkpoints, keep_checkpoint_every) when out of range.
void check_checkpoint_options(const CheckpointOptions& options);

// The newest complete checkpoint under `root` (<out_dir>/checkpoints): the newest step-* directory that
// verifies. Skipped ones, a `latest` that names another or is not a step-* name of this run, are said
// on `log` as warnings. None: std::nullopt. Reads only; changes nothing.
std::optional<std::string> newest_checkpoint(const std::string& root, std::ostream& log);

// Checks that `dir` is a complete checkpoint (its manifest's files exist with the recorded sizes and
// checksums; each entry a plain file name, a regular file there) and returns trainer_state.json; throws
// CheckpointError naming the file or entry and the fix, never another exception.
nlohmann::json verify_checkpoint(const std::string& dir);
// The compressor directory that `uio generate --memory`, `uio eval --memory` and `uio export --checkpoint`
// read, from what the user gave: a run's out_dir (its newest complete checkpoint, said on `log`), a
// checkpoint directory (verified first: damaged files are refused as when resuming), or a compressor or
// export directory (returned as it is). Throws CheckpointError naming the path and the fix.
std::string resolve_compressor_dir(const std::string& path, std::ostream& log);

// verify_checkpoint, then its trainer_state.json as a TrainState (trainer/train_state.h).
TrainState read_train_state(const std::string& dir);

// Test hook for crash and I/O-error tests: UIO_CHECKPOINT_FAULT=<file name> makes writing that file of
// a checkpoint fail as a full disk would (ENOSPC); UIO_CHECKPOINT_DELAY_MS=<n> sleeps n ms after each
// file, so a kill lands inside a write. Read from the environment on every save.
void checkpoint_fault_point(const std::string& file);

// Compares two resolved configs (INI text, `key = value` lines): returns "key: saved -> now" for every
// key in `must_match` whose value differs, and fills `changed` with the same for the other keys. A key
// a config lacks takes its value from `absent_means` when it is there (an option added after the run was
// written, or one a caller's config leaves out: the value every run had before it existed).
std::vector<std::string> compare_configs(const std::string& saved_ini, const std::string& current_ini,
                                         const std::vector<std::string>& must_match,
                                         std::vector<std::string>* changed = nullptr,
                                         const std::map<std::string, std::string>& absent_means = {});

}  // namespace uio::trainer
