// defines: PendingFile, so that a writer never leaves a partial file at its output path.
//
// Writers write to temp_path() (the output path plus ".partial", in the same directory so the
// final rename is atomic) and call commit() when the file is complete. If commit() is never
// reached (an exception, an interrupt handled by the caller), the destructor deletes the
// temporary file and the output path is untouched.
//
//   PendingFile out("corpus.h5");
//   write_everything(out.temp_path());
//   out.commit();   // rename corpus.h5.partial -> corpus.h5
#pragma once

#include <string>

namespace hla::data {

class PendingFile {
 public:
  explicit PendingFile(std::string final_path);
  ~PendingFile();
  PendingFile(const PendingFile&) = delete;
  PendingFile& operator=(const PendingFile&) = delete;

  const std::string& temp_path() const { return temp_path_; }
  // Moves the finished file to the final path (replacing any file there).
  void commit();

 private:
  std::string final_path_, temp_path_;
  bool committed_ = false;
};

}  // namespace hla::data
