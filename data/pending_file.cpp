// defines: PendingFile (see pending_file.h).
#include "data/pending_file.h"

#include <filesystem>

#include "tensor/error.h"

namespace hla::data {

PendingFile::PendingFile(std::string final_path)
    : final_path_(std::move(final_path)), temp_path_(final_path_ + ".partial") {
  const auto dir = std::filesystem::absolute(final_path_).parent_path();
  if (!std::filesystem::is_directory(dir)) {
    throw Error("output " + final_path_, "an existing directory", "no directory " + dir.string(),
                "create it first");
  }
}

PendingFile::~PendingFile() {
  if (!committed_) {
    std::error_code ignored;  // nothing to report from a destructor; the file may not exist
    std::filesystem::remove(temp_path_, ignored);
  }
}

void PendingFile::commit() {
  std::error_code ec;
  std::filesystem::rename(temp_path_, final_path_, ec);
  if (ec) {
    throw Error("output " + final_path_, "a rename from " + temp_path_, ec.message());
  }
  committed_ = true;
}

}  // namespace hla::data
