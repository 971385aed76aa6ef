// defines: read_file, the one way hla::data reads a whole file (exact bytes, clear errors).
#pragma once

#include <string>

namespace hla::data {

// The exact bytes of the file at `path`. Throws hla::Error naming `op` and the path when it is
// missing, a directory, or unreadable.
std::string read_file(const std::string& path, const std::string& op);

}  // namespace hla::data
