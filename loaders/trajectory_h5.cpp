// HDF5 trajectory files (layout in trajectory_h5.h) through the HDF5 C API (1.10+).
#include "loaders/trajectory_h5.h"

#include <cstdio>
#include <filesystem>

#include "core/check.h"
#include "loaders/h5_check.h"

namespace cllm {
namespace {

using detail::H5Handle;
using detail::H5QuietErrors;
using detail::h5_error_text;
using detail::h5_link_exists;
using detail::h5_read_attr;
using detail::h5_read_string_attr;
using detail::h5_write_attr;
using detail::h5_write_string_attr;

constexpr int kFormatVersion = 1;
constexpr const char* kTempName = "/samples/.incomplete";

std::string sample_name(const char* group, int64_t index) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "/%s/%08lld", group, static_cast<long long>(index));
  return buf;
}

// --- attributes ---

void write_info(hid_t file, const TrajectoryFileInfo& info) {
  h5_write_attr<int32_t>(file, "format_version", H5T_NATIVE_INT32, kFormatVersion);
  h5_write_string_attr(file, "model", info.model);
  h5_write_attr<uint64_t>(file, "model_fingerprint", H5T_NATIVE_UINT64, info.model_fingerprint);
  h5_write_attr<int32_t>(file, "block", H5T_NATIVE_INT32, info.block);
  h5_write_attr<uint64_t>(file, "seed", H5T_NATIVE_UINT64, info.seed);
  h5_write_attr<int32_t>(file, "vocab_size", H5T_NATIVE_INT32, info.vocab_size);
  h5_write_attr<int32_t>(file, "max_new_tokens", H5T_NATIVE_INT32, info.max_new_tokens);
  h5_write_attr<int32_t>(file, "augment", H5T_NATIVE_INT32, info.augment ? 1 : 0);
  h5_write_attr<int32_t>(file, "max_repeat", H5T_NATIVE_INT32, info.max_repeat);
  h5_write_attr<int32_t>(file, "blocks", H5T_NATIVE_INT32, info.blocks);
  h5_write_string_attr(file, "init", info.init);
}

TrajectoryFileInfo read_info(hid_t file, const std::string& path) {
  const int version = h5_read_attr<int32_t>(file, "format_version", H5T_NATIVE_INT32, path);
  CLLM_CHECK(version == kFormatVersion,
             path << ": trajectory format_version " << version << ", this build reads " << kFormatVersion);
  TrajectoryFileInfo info;
  info.model = h5_read_string_attr(file, "model", path);
  if (H5Aexists(file, "model_fingerprint") > 0)
    info.model_fingerprint = h5_read_attr<uint64_t>(file, "model_fingerprint", H5T_NATIVE_UINT64, path);
  info.block = h5_read_attr<int32_t>(file, "block", H5T_NATIVE_INT32, path);
  info.seed = h5_read_attr<uint64_t>(file, "seed", H5T_NATIVE_UINT64, path);
  info.vocab_size = h5_read_attr<int32_t>(file, "vocab_size", H5T_NATIVE_INT32, path);
  info.max_new_tokens = h5_read_attr<int32_t>(file, "max_new_tokens", H5T_NATIVE_INT32, path);
  info.augment = h5_read_attr<int32_t>(file, "augment", H5T_NATIVE_INT32, path) != 0;
  info.max_repeat = h5_read_attr<int32_t>(file, "max_repeat", H5T_NATIVE_INT32, path);
  if (H5Aexists(file, "blocks") > 0) info.blocks = h5_read_attr<int32_t>(file, "blocks", H5T_NATIVE_INT32, path);
  if (H5Aexists(file, "init") > 0) info.init = h5_read_string_attr(file, "init", path);
  CLLM_CHECK(info.block >= 1, path << ": attribute 'block' is " << info.block);
  return info;
}

// Names the first field where a resumed file differs from what this run asks for.
void check_same_info(const TrajectoryFileInfo& file, const TrajectoryFileInfo& run, const std::string& path) {
  auto differ = [&](const char* what, const auto& a, const auto& b) {
    CLLM_CHECK(a == b, path << " was collected with " << what << " = " << a << " but this run asks for " << b
                            << "; use another --out or delete the file to start over");
  };
  // The weights, not the path: a checkpoint retrained into the same directory is another model, and
  // one model named by another path is the same. Files from before the fingerprint: the path.
  if (file.model_fingerprint != 0 && run.model_fingerprint != 0)
    CLLM_CHECK(file.model_fingerprint == run.model_fingerprint,
               path << " was collected with other model weights (" << file.model << ", fingerprint " << std::hex
                    << file.model_fingerprint << ") than this run's (" << run.model << ", fingerprint "
                    << run.model_fingerprint << std::dec
                    << "); use another --out or delete the file to start over");
  else
    differ("model", file.model, run.model);
  differ("block", file.block, run.block);
  differ("seed", file.seed, run.seed);
  differ("vocab_size", file.vocab_size, run.vocab_size);
  differ("max_new_tokens", file.max_new_tokens, run.max_new_tokens);
  differ("augment", file.augment, run.augment);
  differ("max_repeat", file.max_repeat, run.max_repeat);
  differ("blocks", file.blocks, run.blocks);
  differ("init", file.init, run.init);  // the guesses a state starts from
}

// --- datasets ---

// An int32 dataset of shape [rows] (cols == 0) or [rows, cols]; rows may be 0.
void write_ints(hid_t group, const char* name, const std::vector<int32_t>& data, hsize_t cols) {
  const hsize_t rows = cols ? data.size() / cols : data.size();
  const hsize_t dims[2] = {rows, cols};
  H5Handle space(CLLM_H5(H5Screate_simple(cols ? 2 : 1, dims, nullptr)), H5Sclose);
  H5Handle ds(CLLM_H5(H5Dcreate2(group, name, H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)),
            H5Dclose);
  if (!data.empty()) CLLM_H5(H5Dwrite(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()));
}

// Reads an int32 dataset of rank 1, or rank 2 with `cols` columns.
std::vector<int32_t> read_ints(hid_t group, const char* name, hsize_t cols, const std::string& where) {
  CLLM_CHECK(h5_link_exists(group, name), where << ": missing dataset '" << name << "'");
  H5Handle ds(CLLM_H5(H5Dopen2(group, name, H5P_DEFAULT)), H5Dclose);
  H5Handle space(CLLM_H5(H5Dget_space(ds)), H5Sclose);
  const int rank = CLLM_H5(H5Sget_simple_extent_ndims(space));
  hsize_t dims[2] = {0, 0};
  CLLM_CHECK(rank == (cols ? 2 : 1), where << "/" << name << ": rank " << rank << ", expected " << (cols ? 2 : 1));
  CLLM_H5(H5Sget_simple_extent_dims(space, dims, nullptr));
  if (cols)
    CLLM_CHECK(dims[1] == cols, where << "/" << name << ": " << dims[1] << " columns, expected the block size " << cols);
  // The shape against the bytes stored before anything is allocated: a damaged header can claim any
  // shape (cllm writes these datasets whole, int32).
  const hsize_t elements = dims[0] * (cols ? cols : 1);
  const hsize_t stored = H5Dget_storage_size(ds);
  CLLM_CHECK(elements <= (hsize_t{1} << 40) && stored == elements * sizeof(int32_t),
             where << "/" << name << ": shape [" << dims[0] << (cols ? ", " + std::to_string(cols) : "") << "] needs "
                   << elements * sizeof(int32_t) << " bytes but " << stored << " are stored: the file is damaged");
  std::vector<int32_t> data(elements);
  if (!data.empty()) CLLM_H5(H5Dread(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()));
  return data;
}

// Child names of a group, ascending (the zero-padded names sort as their indices).
std::vector<int64_t> list_indices(hid_t file, const char* group, const std::string& path) {
  std::vector<int64_t> out;
  if (!h5_link_exists(file, group)) return out;
  H5Handle g(CLLM_H5(H5Gopen2(file, group, H5P_DEFAULT)), H5Gclose);
  H5G_info_t gi;
  CLLM_H5(H5Gget_info(g, &gi));
  for (hsize_t i = 0; i < gi.nlinks; ++i) {
    char name[64] = {};
    CLLM_H5(H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof(name), H5P_DEFAULT));
    if (name[0] == '.') continue;  // an incomplete sample left by an interrupted run
    char* end = nullptr;
    const long long v = std::strtoll(name, &end, 10);
    CLLM_CHECK(end && *end == '\0' && v >= 0, path << ": unexpected entry '" << group << "/" << name << "'");
    out.push_back(v);
  }
  return out;
}

void ensure_group(hid_t file, const char* name) {
  if (!h5_link_exists(file, name))
    H5Handle(CLLM_H5(H5Gcreate2(file, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)), H5Gclose);
}

// The id of an H5Fopen/H5Fcreate of the output file, or a one-line error (HDF5's own stack is
// quiet: H5QuietErrors at the caller). HDF5 locks a file it writes; a lock held elsewhere means
// another process (typically a second `cllm trajectories` on the same --out) has it open.
hid_t checked_file_id(hid_t id, const std::string& path) {
  if (id >= 0) return id;
  const std::string why = h5_error_text();
  CLLM_CHECK(why.find("unable to lock the file") == std::string::npos,
             path << ": the file is locked by another process: another cllm trajectories (or a reader) has it open; "
                     "each process needs its own --out (several processes: --shard I/K, one file each)");
  CLLM_FAIL(path << ": cannot open or create the trajectory file" << why);
}

// Walks every group and object header of the file, read-only, and refuses the file when a part of
// it cannot be read. Run before a file is opened for writing: HDF5 writing into a damaged group
// fails in ways that leave the file impossible to close, and the library then crashes at exit.
void check_structure(const std::string& path) {
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) return;  // the open for writing that follows reports it
  const auto visit = [](hid_t, const char*, const H5O_info_t*, void*) -> herr_t { return 0; };
  const herr_t walked = H5Ovisit(id, H5_INDEX_NAME, H5_ITER_INC, visit, nullptr);
  const std::string why = walked < 0 ? h5_error_text() : "";
  const herr_t closed = H5Fclose(id);
  CLLM_CHECK(walked >= 0 && closed >= 0, path << ": the file is damaged: part of its structure cannot be read"
                                               << why << "; resume into a new --out, or repair or remove it");
}

hid_t open_existing(const std::string& path, unsigned flags) {
  CLLM_CHECK(std::filesystem::exists(path), path << ": no such file");
  CLLM_CHECK(!std::filesystem::is_directory(path), path << " is a directory: a trajectory file (.h5) is one file");
  htri_t is_h5 = 0;
  H5E_BEGIN_TRY { is_h5 = H5Fis_hdf5(path.c_str()); }
  H5E_END_TRY;
  CLLM_CHECK(is_h5 > 0, path << " is not an HDF5 file");
  if (flags == H5F_ACC_RDWR) check_structure(path);
  return checked_file_id(H5Fopen(path.c_str(), flags, H5P_DEFAULT), path);
}

}  // namespace

struct TrajectoryWriter::File {
  hid_t id = -1;
  ~File() {
    H5QuietErrors quiet;  // a close that fails (a full disk) was reported by the write before it
    if (id >= 0) H5Fclose(id);
  }
};

TrajectoryWriter::TrajectoryWriter(const std::string& path, const TrajectoryFileInfo& info)
    : file_(std::make_unique<File>()), path_(path) {
  CLLM_CHECK(info.block >= 1, "trajectory block size must be >= 1, got " << info.block);
  H5QuietErrors quiet;  // failures throw one line; HDF5 would also print its whole error stack
  if (std::filesystem::exists(path)) {
    file_->id = open_existing(path, H5F_ACC_RDWR);
    check_same_info(read_info(file_->id, path), info, path);
    if (h5_link_exists(file_->id, kTempName)) CLLM_H5(H5Ldelete(file_->id, kTempName, H5P_DEFAULT));
    for (int64_t i : list_indices(file_->id, "/samples", path)) done_.insert(i);
    for (int64_t i : list_indices(file_->id, "/dropped", path)) {
      CLLM_CHECK(done_.insert(i).second, path << ": prompt " << i << " is both kept and dropped");
    }
  } else {
    file_->id = checked_file_id(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT), path);
    write_info(file_->id, info);
  }
  ensure_group(file_->id, "/samples");
  ensure_group(file_->id, "/dropped");
  CLLM_H5(H5Fflush(file_->id, H5F_SCOPE_GLOBAL));
}

TrajectoryWriter::~TrajectoryWriter() = default;

std::vector<int32_t> TrajectoryWriter::stored_prompt(int64_t index) const {
  H5QuietErrors quiet;
  const std::string kept = sample_name("samples", index);
  const std::string name = h5_link_exists(file_->id, kept) ? kept : sample_name("dropped", index);
  CLLM_CHECK(h5_link_exists(file_->id, name), path_ << ": prompt " << index << " is not in the file");
  H5Handle g(CLLM_H5(H5Gopen2(file_->id, name.c_str(), H5P_DEFAULT)), H5Gclose);
  return read_ints(g, "prompt", 0, path_ + ":" + name);
}

void TrajectoryWriter::write(int64_t index, const Trajectory& t) {
  H5QuietErrors quiet;
  CLLM_CHECK(!done_.count(index), path_ << ": prompt " << index << " is already in the file");
  const size_t n = static_cast<size_t>(t.block);
  CLLM_CHECK(n >= 1 && t.states.size() % n == 0 && t.fixed_points.size() == t.iterations.size() * n &&
                 t.augmented.size() == t.augmented_block.size() * n,
             "trajectory of prompt " << index << " has inconsistent shapes for block " << n);
  {
    H5Handle g(CLLM_H5(H5Gcreate2(file_->id, kTempName, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)), H5Gclose);
    write_ints(g, "prompt", t.prompt, 0);
    write_ints(g, "states", t.states, n);
    write_ints(g, "fixed_points", t.fixed_points, n);
    write_ints(g, "iterations", t.iterations, 0);
    write_ints(g, "augmented", t.augmented, n);
    write_ints(g, "augmented_block", t.augmented_block, 0);
    h5_write_attr<int64_t>(g, "prompt_index", H5T_NATIVE_INT64, index);
    h5_write_attr<int32_t>(g, "num_tokens", H5T_NATIVE_INT32, t.num_tokens);
    h5_write_attr<int32_t>(g, "stopped", H5T_NATIVE_INT32, t.stopped ? 1 : 0);
  }
  CLLM_H5(H5Lmove(file_->id, kTempName, file_->id, sample_name("samples", index).c_str(), H5P_DEFAULT, H5P_DEFAULT));
  CLLM_H5(H5Fflush(file_->id, H5F_SCOPE_GLOBAL));
  done_.insert(index);
}

void TrajectoryWriter::write_dropped(int64_t index, const std::vector<int32_t>& prompt) {
  H5QuietErrors quiet;
  CLLM_CHECK(!done_.count(index), path_ << ": prompt " << index << " is already in the file");
  {
    H5Handle g(CLLM_H5(H5Gcreate2(file_->id, kTempName, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)), H5Gclose);
    write_ints(g, "prompt", prompt, 0);
  }
  CLLM_H5(H5Lmove(file_->id, kTempName, file_->id, sample_name("dropped", index).c_str(), H5P_DEFAULT, H5P_DEFAULT));
  CLLM_H5(H5Fflush(file_->id, H5F_SCOPE_GLOBAL));
  done_.insert(index);
}

struct TrajectoryReader::File {
  hid_t id = -1;
  ~File() {
    H5QuietErrors quiet;  // a close that fails (a full disk) was reported by the write before it
    if (id >= 0) H5Fclose(id);
  }
};

TrajectoryReader::TrajectoryReader(const std::string& path) : file_(std::make_unique<File>()), path_(path) {
  H5QuietErrors quiet;
  file_->id = open_existing(path, H5F_ACC_RDONLY);
  info_ = read_info(file_->id, path);
}

TrajectoryReader::~TrajectoryReader() = default;

std::vector<int64_t> TrajectoryReader::samples() const {
  H5QuietErrors quiet;
  return list_indices(file_->id, "/samples", path_);
}
std::vector<int64_t> TrajectoryReader::dropped() const {
  H5QuietErrors quiet;
  return list_indices(file_->id, "/dropped", path_);
}

Trajectory TrajectoryReader::read(int64_t index) const {
  H5QuietErrors quiet;
  const std::string name = sample_name("samples", index);
  const std::string where = path_ + ":" + name;
  CLLM_CHECK(h5_link_exists(file_->id, name), path_ << ": no sample for prompt " << index);
  H5Handle g(CLLM_H5(H5Gopen2(file_->id, name.c_str(), H5P_DEFAULT)), H5Gclose);
  const hsize_t n = static_cast<hsize_t>(info_.block);
  Trajectory t;
  t.block = info_.block;
  t.prompt = read_ints(g, "prompt", 0, where);
  t.states = read_ints(g, "states", n, where);
  t.fixed_points = read_ints(g, "fixed_points", n, where);
  t.iterations = read_ints(g, "iterations", 0, where);
  t.augmented = read_ints(g, "augmented", n, where);
  t.augmented_block = read_ints(g, "augmented_block", 0, where);
  t.num_tokens = h5_read_attr<int32_t>(g, "num_tokens", H5T_NATIVE_INT32, where);
  t.stopped = h5_read_attr<int32_t>(g, "stopped", H5T_NATIVE_INT32, where) != 0;
  CLLM_CHECK(h5_read_attr<int64_t>(g, "prompt_index", H5T_NATIVE_INT64, where) == index,
             where << ": attribute prompt_index does not match the group name");
  CLLM_CHECK(static_cast<size_t>(t.num_blocks()) * n == t.fixed_points.size(),
             where << ": " << t.num_blocks() << " iterations entries but " << t.fixed_points.size() / n
                   << " fixed points");
  int64_t rows = 0;
  for (int32_t it : t.iterations) rows += it;
  CLLM_CHECK(rows == t.num_states(), where << ": iterations sum to " << rows << " but states has " << t.num_states()
                                           << " rows");
  CLLM_CHECK(t.augmented_block.size() * n == t.augmented.size(),
             where << ": augmented_block and augmented disagree on the row count");
  return t;
}

}  // namespace cllm
