// defines: write_token_dataset, Hdf5TokenSplit, is_hdf5_file (see token_dataset.h).
#include "data/token_dataset.h"

#include <filesystem>

#include "data/hdf5.h"
#include "tensor/error.h"

namespace hla::data {

namespace {

// ---- helpers

const std::string kLayoutHint =
    "hla data prepare writes the attributes tokenizer, vocab_size, eot_id and the datasets "
    "train/tokens, train/doc_offsets, val/tokens, val/doc_offsets";

void check_split(const std::string& op, const std::string& name, const TokenDatasetInfo& info,
                 const TokenSplit& split) {
  const auto& offsets = split.doc_offsets;
  const int64_t n = static_cast<int64_t>(split.tokens.size());
  bool ok = !offsets.empty() && offsets.front() == 0 && offsets.back() == n;
  for (size_t d = 0; ok && d + 1 < offsets.size(); ++d) {
    ok = offsets[d] < offsets[d + 1] && split.tokens[offsets[d]] == info.eot_id;
  }
  if (!ok) {
    throw Error(op,
                name + " doc_offsets increasing from 0 to " + std::to_string(n) +
                    ", each at an end-of-text token",
                std::to_string(offsets.size()) + " offsets that do not");
  }
  for (size_t i = 0; i < split.tokens.size(); ++i) {
    const int32_t id = split.tokens[i];
    if (id < 0 || id >= info.vocab_size) {
      throw Error(op, name + " token ids in [0, " + std::to_string(info.vocab_size) + ")",
                  "id " + std::to_string(id) + " at index " + std::to_string(i));
    }
  }
}

void write_split(hid_t file, const std::string& name, hid_t token_type, const TokenSplit& split) {
  h5::write_1d(file, name + "/tokens", token_type, H5T_NATIVE_INT32, split.tokens.data(),
               static_cast<int64_t>(split.tokens.size()), kTokenChunk);
  h5::write_1d(file, name + "/doc_offsets", H5T_STD_I64LE, H5T_NATIVE_INT64,
               split.doc_offsets.data(), static_cast<int64_t>(split.doc_offsets.size()), 4096);
}

}  // namespace

bool is_hdf5_file(const std::string& path) {
  h5::silence_hdf5_errors();
  return std::filesystem::is_regular_file(path) && H5Fis_hdf5(path.c_str()) > 0;
}

// ---- writing

void write_token_dataset(const std::string& path, const TokenDatasetInfo& info,
                         const TokenSplit& train, const TokenSplit& val) {
  const std::string op = "write token dataset " + path;
  if (info.vocab_size <= 0 || info.eot_id < 0 || info.eot_id >= info.vocab_size) {
    throw Error(op, "0 <= eot_id < vocab_size",
                "eot_id " + std::to_string(info.eot_id) + ", vocab_size " +
                    std::to_string(info.vocab_size));
  }
  check_split(op, "train", info, train);
  check_split(op, "val", info, val);
  h5::silence_hdf5_errors();
  const hid_t file_id = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (file_id < 0) {
    throw Error(op, "a writable path", h5::last_hdf5_error(),
                "check that the directory exists and is writable");
  }
  h5::Handle file(file_id, H5Fclose);
  // the narrowest unsigned type that holds every id
  const hid_t token_type = info.vocab_size <= 65536 ? H5T_STD_U16LE : H5T_STD_U32LE;
  write_split(file.get(), "train", token_type, train);
  write_split(file.get(), "val", token_type, val);
  h5::write_attr(file.get(), "format", std::string(kTokenFormat));
  h5::write_attr(file.get(), "format_version", kTokenFormatVersion);
  h5::write_attr(file.get(), "tokenizer", info.tokenizer);
  h5::write_attr(file.get(), "vocab_size", info.vocab_size);
  h5::write_attr(file.get(), "eot_id", info.eot_id);
  H5_CHECK(H5Fflush(file.get(), H5F_SCOPE_GLOBAL));
}

// ---- reading

struct Hdf5TokenSplit::Impl {
  std::string path, split;
  TokenDatasetInfo info;
  h5::Handle file, tokens, file_space;
  int64_t size = 0;
};

Hdf5TokenSplit::Hdf5TokenSplit(const std::string& path, const std::string& split)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = path;
  m.split = split;
  const std::string op = "token dataset " + path;
  if (!std::filesystem::exists(path)) {
    throw Error(op, "an existing .h5 file", "no such file",
                "create one with: hla data prepare --in TEXT_FILES --out " + path);
  }
  if (!is_hdf5_file(path)) {
    throw Error(op, "an HDF5 file", "a file without the HDF5 signature",
                "llm.c/nanoGPT token files are .bin; text must first go through hla data prepare");
  }
  const hid_t file_id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file_id < 0) throw Error(op, "a readable HDF5 file", h5::last_hdf5_error());
  m.file = h5::Handle(file_id, H5Fclose);

  for (const char* attr : {"tokenizer", "vocab_size", "eot_id"}) {
    if (!h5::has_attr(m.file.get(), attr)) {
      throw Error(op, std::string("the root attribute '") + attr + "'", "none", kLayoutHint);
    }
  }
  m.info.tokenizer = h5::read_string_attr(m.file.get(), "tokenizer");
  m.info.vocab_size = h5::read_int_attr(m.file.get(), "vocab_size");
  m.info.eot_id = h5::read_int_attr(m.file.get(), "eot_id");
  if (m.info.vocab_size <= 0) {
    throw Error(op, "a positive vocab_size attribute", std::to_string(m.info.vocab_size));
  }

  const std::string dataset = split + "/tokens";
  if (!h5::exists(m.file.get(), dataset)) {
    throw Error(op, "a dataset /" + dataset, "none", kLayoutHint);
  }
  h5::Handle access(H5_CHECK(H5Pcreate(H5P_DATASET_ACCESS)), H5Pclose);
  // A 64 MiB chunk cache (1024 chunks) keeps a small corpus entirely in memory after first use.
  H5_CHECK(H5Pset_chunk_cache(access.get(), 10007, 64u << 20, 1.0));
  m.tokens = h5::Handle(H5_CHECK(H5Dopen2(m.file.get(), dataset.c_str(), access.get())), H5Dclose);
  h5::Handle type(H5_CHECK(H5Dget_type(m.tokens.get())), H5Tclose);
  m.file_space = h5::Handle(H5_CHECK(H5Dget_space(m.tokens.get())), H5Sclose);
  const int rank = H5_CHECK(H5Sget_simple_extent_ndims(m.file_space.get()));
  if (H5Tget_class(type.get()) != H5T_INTEGER || rank != 1) {
    throw Error(op, "/" + dataset + " a 1-D integer dataset",
                std::to_string(rank) + "-D of another type", kLayoutHint);
  }
  m.size = H5_CHECK(H5Sget_simple_extent_npoints(m.file_space.get()));
}

Hdf5TokenSplit::~Hdf5TokenSplit() = default;

int64_t Hdf5TokenSplit::size() const {
  return impl_->size;
}
int64_t Hdf5TokenSplit::vocab_size() const {
  return impl_->info.vocab_size;
}
std::string Hdf5TokenSplit::describe() const {
  return impl_->path + " [" + impl_->split + "]";
}
const TokenDatasetInfo& Hdf5TokenSplit::info() const {
  return impl_->info;
}

std::vector<int64_t> Hdf5TokenSplit::doc_offsets() const {
  const Impl& m = *impl_;
  const std::string dataset = m.split + "/doc_offsets";
  if (!h5::exists(m.file.get(), dataset)) {
    throw Error("token dataset " + m.path, "a dataset /" + dataset, "none", kLayoutHint);
  }
  std::vector<int64_t> offsets = h5::read_int64(m.file.get(), dataset);
  bool ok = !offsets.empty() && offsets.front() == 0 && offsets.back() == m.size;
  for (size_t d = 0; ok && d + 1 < offsets.size(); ++d) ok = offsets[d] < offsets[d + 1];
  if (!ok) {
    throw Error("token dataset " + m.path,
                "/" + dataset + " increasing from 0 to the token count " + std::to_string(m.size),
                std::to_string(offsets.size()) + " offsets that do not",
                "the file is damaged; prepare it again");
  }
  return offsets;
}

void Hdf5TokenSplit::read_range(int64_t start, int64_t count, int32_t* out) const {
  const Impl& m = *impl_;
  if (count == 0) return;
  const hsize_t offset[1] = {static_cast<hsize_t>(start)};
  const hsize_t n[1] = {static_cast<hsize_t>(count)};
  H5_CHECK(H5Sselect_hyperslab(m.file_space.get(), H5S_SELECT_SET, offset, nullptr, n, nullptr));
  h5::Handle mem_space(H5_CHECK(H5Screate_simple(1, n, nullptr)), H5Sclose);
  H5_CHECK(H5Dread(m.tokens.get(), H5T_NATIVE_INT32, mem_space.get(), m.file_space.get(),
                   H5P_DEFAULT, out));
}

}  // namespace hla::data
