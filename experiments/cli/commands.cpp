#include "experiments/cli/commands.h"

namespace hla::cli {

void add_all_commands(CLI::App& app) {
  add_data_command(app);
}

}  // namespace hla::cli
