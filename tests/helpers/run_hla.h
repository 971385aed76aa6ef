// Running the built `hla` binary from a test: its exit code and everything it printed.
//
//   const auto r = hla::test::run_hla("train --config tiny.toml --out run");
//   REQUIRE(r.code == 0);
#pragma once

#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace hla::test {

struct CliResult {
  int code = -1;
  std::string output;  // stdout, with stderr mixed in unless only stdout was asked for
};

// Runs a shell command with one OpenMP thread (the runs are tiny and the machine shared).
inline CliResult run_command(const std::string& command, bool stdout_only = false) {
  const std::string cmd =
      "OMP_NUM_THREADS=1 " + command + (stdout_only ? " 2>/dev/null" : " 2>&1");
  CliResult r;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) r.output.append(buffer, n);
  const int status = ::pclose(pipe);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

inline CliResult run_hla(const std::string& args, bool stdout_only = false) {
  return run_command(HLA_BINARY_DIR "/hla " + args, stdout_only);
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The Python `hla` plots with ($HLA_PYTHON, else /usr/bin/python3) if it has h5py and
// matplotlib; "" otherwise.
inline std::string plotting_python() {
  const char* env = std::getenv("HLA_PYTHON");
  const std::string py = env && *env ? env
                         : std::filesystem::exists("/usr/bin/python3") ? "/usr/bin/python3"
                                                                       : "python3";
  if (std::system((py + " -c 'import h5py, matplotlib' >/dev/null 2>&1").c_str()) != 0) return "";
  return py;
}

}  // namespace hla::test
