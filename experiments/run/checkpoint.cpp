#include "experiments/run/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <map>

#include "data/hdf5.h"
#include "tensor/error.h"

namespace hla::run {

namespace fs = std::filesystem;
using data::h5::Handle;

namespace {

constexpr const char* kFormat = "hla-checkpoint";
constexpr int64_t kFormatVersion = 1;

// The dtype a tensor is stored in: its own, or f32 for bf16 (exact; HDF5 has no bf16 type).
DType stored_dtype(DType dtype) { return dtype == DType::bf16 ? DType::f32 : dtype; }

hid_t hdf5_type(DType dtype, const std::string& name) {
  if (dtype == DType::f32) return H5T_NATIVE_FLOAT;
  if (dtype == DType::f64) return H5T_NATIVE_DOUBLE;
  throw Error("checkpoint", "f32, f64 or bf16 tensors",
              std::string(dtype_name(dtype)) + " for '" + name + "'");
}

void write_tensor(hid_t file, const std::string& path, const Tensor& tensor) {
  const Tensor t = tensor.to(Device::CPU).contiguous().to(stored_dtype(tensor.dtype()));
  std::vector<hsize_t> dims(t.shape().begin(), t.shape().end());
  Handle space(H5_CHECK(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr)),
               H5Sclose);
  Handle link_props(H5_CHECK(H5Pcreate(H5P_LINK_CREATE)), H5Pclose);
  H5_CHECK(H5Pset_create_intermediate_group(link_props.get(), 1));
  const hid_t type = hdf5_type(t.dtype(), path);
  Handle dset(H5_CHECK(H5Dcreate2(file, path.c_str(), type, space.get(), link_props.get(),
                                  H5P_DEFAULT, H5P_DEFAULT)),
              H5Dclose);
  if (t.numel() > 0)
    H5_CHECK(H5Dwrite(dset.get(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.raw_data()));
}

// Reads dataset `path` into `dst` (same shape): HDF5 converts the element type to dst's stored
// dtype, and a bf16 dst takes those values rounded to bf16 (exact for a bf16 tensor's dataset).
void read_tensor(hid_t file, const std::string& file_name, const std::string& path, Tensor dst) {
  if (!data::h5::exists(file, path))
    throw Error("checkpoint " + file_name, "a dataset '" + path + "'", "none",
                "the checkpoint was written for another model or optimizer configuration");
  Handle dset(H5_CHECK(H5Dopen2(file, path.c_str(), H5P_DEFAULT)), H5Dclose);
  Handle space(H5_CHECK(H5Dget_space(dset.get())), H5Sclose);
  const int rank = H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
  const Shape shape(dims.begin(), dims.end());
  if (shape != dst.shape())
    throw Error("checkpoint " + file_name, "'" + path + "' of shape " + to_string(dst.shape()),
                to_string(shape));
  Tensor buffer = Tensor::empty(dst.shape(), stored_dtype(dst.dtype()));
  if (buffer.numel() > 0)
    H5_CHECK(H5Dread(dset.get(), hdf5_type(buffer.dtype(), path), H5S_ALL, H5S_ALL, H5P_DEFAULT,
                     buffer.raw_data()));
  dst.copy_(buffer);
}

int64_t bits_of(double x) {
  int64_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}
double double_of(int64_t b) {
  double x;
  std::memcpy(&x, &b, sizeof x);
  return x;
}

Handle open_checkpoint(const std::string& path) {
  data::h5::silence_hdf5_errors();
  if (!fs::exists(path))
    throw Error("checkpoint", "an existing checkpoint file", "'" + path + "' does not exist",
                "pass a run directory (with checkpoints/latest.h5) or a .h5 file");
  const hid_t id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0)
    throw Error("checkpoint", "an HDF5 checkpoint at '" + path + "'",
                "a file HDF5 cannot open (corrupted or truncated)",
                "resume from an intact checkpoint or start the run afresh");
  Handle file(id, H5Fclose);
  if (!data::h5::has_attr(file.get(), "format") ||
      data::h5::read_string_attr(file.get(), "format") != kFormat)
    throw Error("checkpoint",
                "an hla checkpoint (attribute format = \"hla-checkpoint\") at '" + path + "'",
                "another HDF5 file");
  return file;
}

// Runs `body`, turning any failure inside the HDF5 library into an error naming the file.
template <class F>
auto with_file_context(const std::string& path, const char* what, F&& body) {
  try {
    return body();
  } catch (const Error& e) {
    const std::string message = e.what();
    if (message.rfind("checkpoint", 0) == 0) throw;  // already names the file
    throw Error("checkpoint", std::string(what) + " '" + path + "'", message);
  }
}

}  // namespace

std::string latest_checkpoint_path(const std::string& run_dir) {
  return (fs::path(run_dir) / "checkpoints" / "latest.h5").string();
}

std::string resolve_checkpoint(const std::string& dir_or_file) {
  if (fs::is_directory(dir_or_file)) {
    const std::string latest = latest_checkpoint_path(dir_or_file);
    if (!fs::exists(latest))
      throw Error("checkpoint", "a run directory with checkpoints/latest.h5",
                  "'" + dir_or_file + "' has none", "the run has not reached its first checkpoint");
    return latest;
  }
  if (!fs::exists(dir_or_file))
    throw Error("checkpoint",
                "a run directory (holding checkpoints/latest.h5) or a checkpoint file",
                "'" + dir_or_file + "' does not exist");
  return dir_or_file;
}

void save_checkpoint(const std::string& path, const std::string& config_toml,
                     const nn::Module& model, const std::string& optimizer_name,
                     const optim::Optimizer& optimizer, const TrainState& state) {
  data::h5::silence_hdf5_errors();
  const std::string tmp = path + ".tmp";
  fs::create_directories(fs::path(path).parent_path());
  with_file_context(tmp, "to write the checkpoint", [&] {
    Handle file(H5_CHECK(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT)),
                H5Fclose);
    const hid_t f = file.get();
    data::h5::write_attr(f, "format", std::string(kFormat));
    data::h5::write_attr(f, "format_version", kFormatVersion);
    data::h5::write_attr(f, "config", config_toml);
    data::h5::write_attr(f, "step", state.step);
    data::h5::write_attr(f, "tokens_seen", state.tokens_seen);
    data::h5::write_attr(f, "optimizer", optimizer_name);
    data::h5::write_attr(f, "optimizer_steps", optimizer.steps());
    data::h5::write_attr(f, "data_rng_counter", static_cast<int64_t>(state.data_rng.counter));
    data::h5::write_attr(f, "data_rng_has_spare", int64_t{state.data_rng.has_spare});
    data::h5::write_attr(f, "data_rng_spare_bits", bits_of(state.data_rng.spare));
    for (const auto& [name, var] : model.named_parameters())
      write_tensor(f, "model/" + name, var.data());
    for (const auto& [name, tensor] : optimizer.state())
      write_tensor(f, "optimizer/" + name, tensor);
    H5_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL));
  });
  fs::rename(tmp, path);  // atomic on POSIX: readers see the old file or the new one
}

CheckpointInfo read_checkpoint_info(const std::string& path) {
  Handle file = open_checkpoint(path);
  return with_file_context(path, "to read the checkpoint attributes of", [&] {
    const hid_t f = file.get();
    for (const char* attr : {"config", "step", "tokens_seen", "optimizer", "optimizer_steps",
                             "data_rng_counter", "data_rng_has_spare", "data_rng_spare_bits"})
      if (!data::h5::has_attr(f, attr))
        throw Error("checkpoint " + path, std::string("the attribute '") + attr + "'", "none");
    CheckpointInfo info;
    info.config_toml = data::h5::read_string_attr(f, "config");
    info.optimizer = data::h5::read_string_attr(f, "optimizer");
    info.optimizer_steps = data::h5::read_int_attr(f, "optimizer_steps");
    info.state.step = data::h5::read_int_attr(f, "step");
    info.state.tokens_seen = data::h5::read_int_attr(f, "tokens_seen");
    info.state.data_rng.counter =
        static_cast<uint64_t>(data::h5::read_int_attr(f, "data_rng_counter"));
    info.state.data_rng.has_spare = data::h5::read_int_attr(f, "data_rng_has_spare") != 0;
    info.state.data_rng.spare = double_of(data::h5::read_int_attr(f, "data_rng_spare_bits"));
    return info;
  });
}

void load_model_weights(const std::string& path, nn::Module& model) {
  Handle file = open_checkpoint(path);
  with_file_context(path, "to read the model weights of", [&] {
    for (auto& [name, var] : model.named_parameters())
      read_tensor(file.get(), path, "model/" + name, var.data());
  });
}

void load_optimizer_state(const std::string& path, optim::Optimizer& optimizer) {
  Handle file = open_checkpoint(path);
  with_file_context(path, "to read the optimizer state of", [&] {
    std::map<std::string, Tensor> state;
    for (const auto& [name, tensor] : optimizer.state()) {
      Tensor t = Tensor::empty(tensor.shape(), tensor.dtype());
      read_tensor(file.get(), path, "optimizer/" + name, t);
      state[name] = t;
    }
    optimizer.load_state(state, data::h5::read_int_attr(file.get(), "optimizer_steps"));
  });
}

}  // namespace hla::run
