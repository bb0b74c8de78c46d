// trainer/checkpoint.cpp — atomic checkpoint directories, the `latest` pointer, verification, pruning.
#include "trainer/checkpoint.h"

#include "data/format/fingerprint.h"
#include "data/format/json_file.h"
#include "data/format/remove_tree.h"

#include <fcntl.h>
#include <ftw.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <sstream>
#include <thread>

#include <sys/stat.h>

namespace uio::trainer {
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

constexpr const char* kManifest = "trainer_state.json";
constexpr const char* kLatest = "latest";

std::string step_name(int64_t step) {
  std::ostringstream s;
  s << "step-" << std::setw(8) << std::setfill('0') << step;
  return s.str();
}

// The step of a directory named step-<digits>, or -1.
int64_t step_of(const std::string& name) {
  if (name.size() <= 5 || name.rfind("step-", 0) != 0) return -1;
  for (size_t i = 5; i < name.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  try {
    return std::stoll(name.substr(5));
  } catch (const std::exception&) {
    return -1;
  }
}

void fsync_path(const fs::path& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path.string() + ": cannot open to sync (" + std::strerror(errno) + ")");
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw std::runtime_error(path.string() + ": fsync failed (" + std::strerror(err) + ")");
}

// Writes `text` to `path` through a temporary name, fsync'ed, then renamed over it.
void write_text_atomically(const fs::path& path, const std::string& text) {
  const auto tmp = path.string() + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(tmp + ": cannot create (" + std::strerror(errno) + ")");
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd), ::unlink(tmp.c_str());
      throw std::runtime_error(tmp + ": write failed (" + std::strerror(err) + ")");
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw std::runtime_error(tmp + ": fsync/close failed (" + std::strerror(err) + ")");
  }
  fs::rename(tmp, path);
}

void remove_tree(const fs::path& path) { format::remove_tree(path.string()); }

void remove_tree_quietly(const fs::path& path) noexcept {
  try {
    remove_tree(path);
  } catch (...) {
  }
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError(path.string() + ": cannot open");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::map<std::string, std::string> parse_ini(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';' || line[0] == '[') continue;
    const auto eq = line.find('=');
    if (eq != std::string::npos) out[trim(line.substr(0, eq))] = trim(line.substr(eq + 1));
  }
  return out;
}

}  // namespace

void checkpoint_fault_point(const std::string& file) {
  if (const char* delay = std::getenv("UIO_CHECKPOINT_DELAY_MS"))
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoll(delay)));
  if (const char* fault = std::getenv("UIO_CHECKPOINT_FAULT"))
    if (file == fault)
      throw std::runtime_error(file + ": write failed (" + std::strerror(ENOSPC) + ", injected by UIO_CHECKPOINT_FAULT)");
}

CheckpointStore::CheckpointStore(std::string root, CheckpointOptions options)
    : root_(std::move(root)), options_(options) {
  if (options_.keep_last < 1)
    throw std::invalid_argument("checkpoints: keep_last must be >= 1, got " + std::to_string(options_.keep_last));
  if (options_.keep_every < 0)
    throw std::invalid_argument("checkpoints: keep_every must be >= 0, got " + std::to_string(options_.keep_every));
  fs::create_directories(root_);
  for (const auto& entry : fs::directory_iterator(root_)) {  // a crashed writer's leftovers
    const auto name = entry.path().filename().string();
    if (name.rfind(".tmp-", 0) == 0 || name.rfind(".old-", 0) == 0) remove_tree_quietly(entry.path());
  }
}

std::string CheckpointStore::save(int64_t step, Json state, const CheckpointWriter& write) {
  const auto name = step_name(step);
  const fs::path root(root_), final_dir = root / name;
  const fs::path tmp = root / (".tmp-" + name + "-" + std::to_string(::getpid()));
  std::string previous = "none";
  if (fs::exists(root / kLatest)) previous = trim(read_text(root / kLatest));
  try {
    remove_tree(tmp);
    fs::create_directories(tmp);
    write(tmp.string());
    // The manifest names every file with its size and checksum; it is written last, so a directory
    // without a valid one is never taken for a checkpoint.
    Json files = Json::object();
    std::vector<fs::path> paths;
    for (const auto& entry : fs::directory_iterator(tmp))
      if (entry.is_regular_file()) paths.push_back(entry.path());
    std::sort(paths.begin(), paths.end());
    for (const auto& p : paths) {
      fsync_path(p, false);
      files[p.filename().string()] = {{"bytes", fs::file_size(p)}, {"checksum", format::file_checksum(p.string())}};
    }
    state["files"] = files;
    state["step"] = step;
    checkpoint_fault_point(kManifest);
    write_text_atomically(tmp / kManifest, state.dump(2) + "\n");
    fsync_path(tmp, true);
    if (fs::exists(final_dir)) {  // the same step written again (a resumed run that stopped at once)
      const fs::path old = root / (".old-" + name + "-" + std::to_string(::getpid()));
      fs::rename(final_dir, old);
      fs::rename(tmp, final_dir);
      remove_tree(old);
    } else {
      fs::rename(tmp, final_dir);
    }
    fsync_path(root, true);
    checkpoint_fault_point(kLatest);
    write_text_atomically(root / kLatest, name + "\n");
    fsync_path(root, true);
  } catch (const std::exception& e) {
    remove_tree_quietly(tmp);
    throw CheckpointError("checkpoint " + name + " in " + root_ + " was not written: " + e.what() +
                          ". The previous checkpoint (latest: " + previous +
                          ") is intact; free disk space (or fix the error) and resume with --resume auto");
  }
  prune(name);
  return final_dir.string();
}

void CheckpointStore::prune(const std::string& newest) const {
  std::vector<std::pair<int64_t, fs::path>> dirs;
  for (const auto& entry : fs::directory_iterator(root_)) {
    const int64_t step = step_of(entry.path().filename().string());
    if (step >= 0 && entry.is_directory()) dirs.emplace_back(step, entry.path());
  }
  std::sort(dirs.rbegin(), dirs.rend());
  // The newest keep_last complete ones (the one just written among them), plus the marked ones.
  int64_t kept = 0;
  for (const auto& [step, dir] : dirs) {
    const bool complete = fs::exists(dir / kManifest) || dir.filename() == newest;
    const bool recent = complete && kept++ < options_.keep_last;
    const bool marked = fs::exists(dir / "keep") || (options_.keep_every > 0 && step % options_.keep_every == 0);
    if (recent || marked || dir.filename() == newest) continue;
    remove_tree_quietly(dir);
  }
}

Json verify_checkpoint(const std::string& dir) {
  const fs::path d(dir);
  if (!fs::is_directory(d))
    throw CheckpointError(dir + ": no such checkpoint directory; pass a step-* directory under <out_dir>/checkpoints, "
                                "or --resume auto");
  const auto manifest = d / kManifest;
  if (!fs::exists(manifest))
    throw CheckpointError(manifest.string() + ": missing, so the checkpoint is incomplete (its writer was stopped "
                                              "before the end); use an earlier checkpoint or --resume auto");
  Json state;
  try {
    state = format::read_json_file(manifest.string());
  } catch (const format::FormatError& e) {
    throw CheckpointError(std::string(e.what()) + "; the checkpoint is damaged, use an earlier one or --resume auto");
  }
  if (!state.contains("files") || !state["files"].is_object() || !state.contains("step"))
    throw CheckpointError(manifest.string() + ": lacks 'files' or 'step'; not a checkpoint written by uio train");
  for (const auto& [file, info] : state["files"].items()) {
    const auto path = d / file;
    if (!fs::exists(path))
      throw CheckpointError(path.string() + ": missing (listed in " + std::string(kManifest) +
                            "); the checkpoint is damaged, use an earlier one or --resume auto");
    const auto bytes = fs::file_size(path);
    if (bytes != info.at("bytes").get<uint64_t>())
      throw CheckpointError(path.string() + ": " + std::to_string(bytes) + " bytes, the manifest says " +
                            std::to_string(info.at("bytes").get<uint64_t>()) +
                            " (truncated?); use an earlier checkpoint or --resume auto");
    if (format::file_checksum(path.string()) != info.at("checksum").get<uint64_t>())
      throw CheckpointError(path.string() + ": checksum differs from the manifest's (the file is damaged); use an "
                                            "earlier checkpoint or --resume auto");
  }
  return state;
}

std::optional<std::string> CheckpointStore::find_latest(std::ostream& log) const {
  const fs::path root(root_);
  std::string named;
  if (fs::exists(root / kLatest)) {
    named = trim(read_text(root / kLatest));
    try {
      verify_checkpoint((root / named).string());
      return (root / named).string();
    } catch (const CheckpointError& e) {
      log << "resume: warning: " << root_ << "/latest names '" << named << "', which is not usable: " << e.what()
          << "; looking for the newest complete checkpoint instead\n";
    }
  } else if (fs::exists(root)) {
    bool any = false;
    for (const auto& entry : fs::directory_iterator(root)) any = any || step_of(entry.path().filename().string()) >= 0;
    if (any) log << "resume: warning: " << root_ << "/latest is missing; looking for the newest complete checkpoint\n";
  }
  std::vector<std::pair<int64_t, fs::path>> dirs;
  if (fs::exists(root))
    for (const auto& entry : fs::directory_iterator(root)) {
      const int64_t step = step_of(entry.path().filename().string());
      if (step >= 0 && entry.is_directory() && entry.path().filename() != named) dirs.emplace_back(step, entry.path());
    }
  std::sort(dirs.rbegin(), dirs.rend());
  for (const auto& [step, dir] : dirs) {
    try {
      verify_checkpoint(dir.string());
      log << "resume: warning: using " << dir.string() << "\n";
      return dir.string();
    } catch (const CheckpointError& e) {
      log << "resume: warning: skipping " << dir.string() << ": " << e.what() << "\n";
    }
  }
  return std::nullopt;
}

std::vector<std::string> compare_configs(const std::string& saved_ini, const std::string& current_ini,
                                         const std::vector<std::string>& must_match, std::vector<std::string>* changed) {
  const auto saved = parse_ini(saved_ini), now = parse_ini(current_ini);
  std::vector<std::string> mismatched;
  auto value = [](const std::map<std::string, std::string>& m, const std::string& key) {
    auto it = m.find(key);
    return it == m.end() ? std::string("(unset)") : it->second;
  };
  std::map<std::string, bool> keys;
  for (const auto& [k, v] : saved) keys[k] = true;
  for (const auto& [k, v] : now) keys[k] = true;
  for (const auto& [key, unused] : keys) {
    const auto a = value(saved, key), b = value(now, key);
    if (a == b) continue;
    const auto line = key + ": " + a + " -> " + b;
    if (std::find(must_match.begin(), must_match.end(), key) != must_match.end()) mismatched.push_back(line);
    else if (changed) changed->push_back(line);
  }
  return mismatched;
}

TrainState read_train_state(const std::string& dir) {
  auto state = verify_checkpoint(dir);
  return TrainState::from_json(state, (fs::path(dir) / kManifest).string());
}

}  // namespace uio::trainer
