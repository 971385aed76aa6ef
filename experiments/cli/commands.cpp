#include "experiments/cli/commands.h"

namespace hla::cli {

void add_all_commands(CLI::App& app) {
  add_data_command(app);
  add_train_command(app);
  add_eval_command(app);
  add_generate_command(app);
  add_op_command(app);
  add_inspect_command(app);
  add_sweep_command(app);
  add_convert_command(app);
  add_export_command(app);
}

}  // namespace hla::cli
