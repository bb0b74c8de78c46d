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
  } catch (...) {}
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// What `latest` says, or "" when it is missing or not a small regular file; it is a hint, never a path
// that is followed (trainer/checkpoint.h).
std::string read_latest(const fs::path& root) {
  std::error_code ec;
  const auto path = root / kLatest;
  if (!fs::is_regular_file(fs::symlink_status(path, ec)) || fs::file_size(path, ec) > 256 || ec) return "";
  std::ifstream in(path, std::ios::binary);
  return trim(std::string(std::istreambuf_iterator<char>(in), {}));
}

// A name read from a file, for a message: at most 80 bytes, control bytes as '?'.
std::string shown(const std::string& name) {
  std::string out = name.substr(0, 80);
  for (auto& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return name.size() > 80 ? out + "..." : out;
}

// A manifest entry names a file directly inside its checkpoint directory: no separator, no "." or "..".
bool plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

// step-<digits> directories under `root` (symbolic links excluded: a checkpoint of this run lives here),
// newest first.
std::vector<std::pair<int64_t, fs::path>> step_directories(const fs::path& root) {
  std::vector<std::pair<int64_t, fs::path>> dirs;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return dirs;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const int64_t step = step_of(entry.path().filename().string());
    if (step >= 0 && fs::is_directory(entry.symlink_status(ec))) dirs.emplace_back(step, entry.path());
  }
  std::sort(dirs.rbegin(), dirs.rend());
  return dirs;
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
      throw std::runtime_error(file + ": write failed (" + std::strerror(ENOSPC) +
                               ", injected by UIO_CHECKPOINT_FAULT)");
}

CheckpointStore::CheckpointStore(std::string root, CheckpointOptions options, std::ostream* log)
    : root_(std::move(root)), options_(options) {
  check_checkpoint_options(options_);
  fs::create_directories(root_);
  recover(log);
}

void CheckpointStore::recover(std::ostream* log) const {
  // A writer stopped between save()'s renames leaves ".tmp-step-N-<pid>" (the new copy, complete once its
  // manifest is written) and, when step N was being written again, ".old-step-N-<pid>" (the previous
  // copy) with no step-N: the newest complete copy becomes step-N again; every other leftover goes.
  std::map<std::string, std::vector<fs::path>> leftovers;  // step name -> .tmp copies first, then .old ones
  std::vector<fs::path> all;
  for (const auto& entry : fs::directory_iterator(root_)) {
    const auto name = entry.path().filename().string();
    const bool tmp = name.rfind(".tmp-", 0) == 0, old = name.rfind(".old-", 0) == 0;
    if (!tmp && !old) continue;
    all.push_back(entry.path());
    const auto dash = name.rfind('-');
    const auto step = dash > 5 ? name.substr(5, dash - 5) : std::string();
    if (step_of(step) < 0 || !fs::is_directory(entry.symlink_status())) continue;
    auto& copies = leftovers[step];
    copies.insert(tmp ? copies.begin() : copies.end(), entry.path());
  }
  for (const auto& [step, copies] : leftovers) {
    const fs::path final_dir = fs::path(root_) / step;
    if (fs::exists(fs::symlink_status(final_dir))) continue;
    for (const auto& copy : copies) {
      try {
        verify_checkpoint(copy.string());
      } catch (const CheckpointError&) {
        continue;
      }
      std::error_code ec;  // another rank of the same job may have recovered it first
      fs::rename(copy, final_dir, ec);
      if (ec) break;
      fsync_path(root_, true);
      if (log)
        *log << "checkpoints: recovered " << final_dir.string() << " from " << copy.filename().string()
             << " (a save of it was interrupted between its renames)\n";
      break;
    }
  }
  for (const auto& path : all)
    if (fs::exists(fs::symlink_status(path))) remove_tree_quietly(path);
}

std::string CheckpointStore::save(int64_t step, Json state, const CheckpointWriter& write) {
  const auto name = step_name(step);
  const fs::path root(root_), final_dir = root / name;
  const fs::path tmp = root / (".tmp-" + name + "-" + std::to_string(::getpid()));
  std::string previous = shown(read_latest(root));
  if (previous.empty()) previous = "none";
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

void check_checkpoint_options(const CheckpointOptions& options) {
  if (options.keep_last < 1)
    throw std::invalid_argument("keep_checkpoints must be >= 1 (the newest complete checkpoints kept), got " +
                                std::to_string(options.keep_last));
  if (options.keep_every < 0)
    throw std::invalid_argument("keep_checkpoint_every must be >= 0 (0: none), got " +
                                std::to_string(options.keep_every));
}

namespace {

Json verify_manifest(const fs::path& d) {
  const auto manifest = d / kManifest;
  const std::string fix = "; the checkpoint is damaged, use an earlier one or --resume auto";
  if (!fs::exists(fs::symlink_status(manifest)))
    throw CheckpointError(manifest.string() +
                          ": missing, so the checkpoint is incomplete (its writer was stopped "
                          "before the end); use an earlier checkpoint or --resume auto");
  Json state;
  try {
    state = format::read_json_file(manifest.string());
  } catch (const format::FormatError& e) {
    throw CheckpointError(std::string(e.what()) + fix);
  }
  if (!state.is_object() || !state.contains("files") || !state["files"].is_object() || !state.contains("step") ||
      !state["step"].is_number_integer() || state["step"].get<int64_t>() < 0)
    throw CheckpointError(manifest.string() +
                          ": lacks an object 'files' or a step number 'step'; not a checkpoint "
                          "written by uio train" +
                          fix);
  const int64_t named = step_of(d.filename().string());
  if (named >= 0 && state["step"].get<int64_t>() != named)
    throw CheckpointError(manifest.string() + ": says step " + std::to_string(state["step"].get<int64_t>()) +
                          ", but its directory is " + d.filename().string() + fix);
  for (const auto& [file, info] : state["files"].items()) {
    const std::string entry = manifest.string() + ": entry '" + shown(file) + "'";
    if (!plain_file_name(file))
      throw CheckpointError(entry +
                            " is not a file name inside the checkpoint directory (a manifest names its "
                            "own files only)" +
                            fix);
    if (!info.is_object() || !info.contains("bytes") || !info["bytes"].is_number_unsigned() ||
        !info.contains("checksum") || !info["checksum"].is_number_unsigned())
      throw CheckpointError(entry + " lacks unsigned integers 'bytes' and 'checksum'" + fix);
    const auto path = d / file;
    const auto status = fs::symlink_status(path);
    if (!fs::exists(status))
      throw CheckpointError(path.string() + ": missing (listed in " + std::string(kManifest) + ")" + fix);
    if (!fs::is_regular_file(status))
      throw CheckpointError(path.string() + ": not a regular file (listed in " + std::string(kManifest) + ")" + fix);
    const auto bytes = fs::file_size(path);
    const auto want = info["bytes"].get<uint64_t>();
    if (bytes != want)
      throw CheckpointError(path.string() + ": " + std::to_string(bytes) + " bytes, the manifest says " +
                            std::to_string(want) + " (truncated?); use an earlier checkpoint or --resume auto");
    if (format::file_checksum(path.string()) != info["checksum"].get<uint64_t>())
      throw CheckpointError(path.string() +
                            ": checksum differs from the manifest's (the file is damaged); use an "
                            "earlier checkpoint or --resume auto");
  }
  return state;
}

}  // namespace

Json verify_checkpoint(const std::string& dir) {
  const fs::path d(dir);
  try {
    if (!fs::is_directory(d))
      throw CheckpointError(dir +
                            ": no such checkpoint directory; pass a step-* directory under "
                            "<out_dir>/checkpoints, or --resume auto");
    return verify_manifest(d);
  } catch (const fs::filesystem_error& e) {  // unreadable entries, permissions
    throw CheckpointError(dir + ": cannot be read (" + e.what() + "); use an earlier checkpoint or --resume auto");
  }
}

std::optional<std::string> newest_checkpoint(const std::string& root_dir, std::ostream& log) {
  const fs::path root(root_dir);
  const auto named = read_latest(root);
  std::error_code ec;
  if (!named.empty() && (step_of(named) < 0 || !plain_file_name(named)))
    log << "resume: warning: " << root_dir << "/latest names '" << shown(named)
        << "', which is not a checkpoint directory of this run; ignored\n";
  const auto dirs = step_directories(root);
  if (named.empty() && !dirs.empty())
    log << "resume: warning: " << root_dir << "/latest is missing; looking for the newest complete checkpoint\n";
  for (const auto& [step, dir] : dirs) {
    try {
      verify_checkpoint(dir.string());
    } catch (const CheckpointError& e) {
      log << "resume: warning: skipping " << dir.string() << ": " << e.what() << "\n";
      continue;
    }
    if (!named.empty() && named != dir.filename().string() && step_of(named) >= 0)
      log << "resume: warning: " << root_dir << "/latest names " << named << ", but " << dir.filename().string()
          << " is the newest complete checkpoint (a run stopped before it moved latest, or an older one is "
             "damaged); using "
          << dir.string() << "\n";
    return dir.string();
  }
  return std::nullopt;
}

std::string resolve_compressor_dir(const std::string& path, std::ostream& log) {
  const fs::path p(path);
  std::error_code ec;
  if (fs::is_directory(p / "checkpoints", ec)) {
    const auto found = newest_checkpoint((p / "checkpoints").string(), log);
    if (!found)
      throw CheckpointError(path +
                            "/checkpoints holds no complete checkpoint; pass a checkpoint, compressor or "
                            "export directory");
    log << "using " << *found << ", the newest complete checkpoint of " << path << "\n";
    return *found;
  }
  if (fs::exists(fs::symlink_status(p / kManifest, ec)) || step_of(p.filename().string()) >= 0) verify_checkpoint(path);
  return path;
}

std::optional<std::string> CheckpointStore::find_latest(std::ostream& log) const {
  return newest_checkpoint(root_, log);
}

std::vector<std::string> compare_configs(const std::string& saved_ini, const std::string& current_ini,
                                         const std::vector<std::string>& must_match, std::vector<std::string>* changed,
                                         const std::map<std::string, std::string>& absent_means) {
  auto saved = parse_ini(saved_ini), now = parse_ini(current_ini);
  for (const auto& [key, value] : absent_means) saved.emplace(key, value), now.emplace(key, value);  // where absent
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
    if (std::find(must_match.begin(), must_match.end(), key) != must_match.end())
      mismatched.push_back(line);
    else if (changed)
      changed->push_back(line);
  }
  return mismatched;
}

TrainState read_train_state(const std::string& dir) {
  auto state = verify_checkpoint(dir);
  return TrainState::from_json(state, (fs::path(dir) / kManifest).string());
}

}  // namespace uio::trainer
