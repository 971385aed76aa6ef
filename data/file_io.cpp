// defines: read_file (see file_io.h).
#include "data/file_io.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tensor/error.h"

namespace hla::data {

std::string read_file(const std::string& path, const std::string& op) {
  if (std::filesystem::is_directory(path)) {
    throw Error(op, "a file", "the directory " + path);
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw Error(op, "a readable file", path + " (" + std::strerror(errno) + ")", "check the path");
  }
  std::ostringstream os;
  os << in.rdbuf();
  if (in.bad()) throw Error(op, "a readable file", "a read error in " + path);
  return std::move(os).str();
}

}  // namespace hla::data
