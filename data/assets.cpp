// defines: assets_dir, asset_path (see assets.h).
#include "data/assets.h"

#include <cstdlib>
#include <filesystem>

#include "tensor/error.h"

#ifndef HLA_ASSETS_DIR
#error "hla_data needs the compile definition HLA_ASSETS_DIR (set in the top-level CMakeLists.txt)"
#endif

namespace hla::data {

std::string assets_dir() {
  const char* env = std::getenv("HLA_ASSETS_DIR");
  return (env && *env) ? std::string(env) : std::string(HLA_ASSETS_DIR);
}

std::string asset_path(const std::string& relative) {
  const std::string path = assets_dir() + "/" + relative;
  if (!std::filesystem::is_regular_file(path)) {
    throw Error("assets", "a file " + relative + " in the assets directory", "no file " + path,
                "set HLA_ASSETS_DIR to the folder data/assets of the hla sources");
  }
  return path;
}

}  // namespace hla::data
