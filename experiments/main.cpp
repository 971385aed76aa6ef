// hla: the command line. Each subcommand lives in experiments/cli/cmd_<name>.cpp; this file
// only assembles them and turns errors into a message and a non-zero exit status.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "experiments/cli/commands.h"
#include "tensor/error.h"

int main(int argc, char** argv) {
  CLI::App app{"hla: hybrid linear attention research framework"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Print help for every subcommand");
  hla::cli::add_all_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const hla::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
