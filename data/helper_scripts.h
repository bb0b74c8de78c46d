// data/helper_scripts.h — finding the Python helpers that some commands run (plots, the HF tokenizer
// and training-step comparisons) the way installed tools find their files: beside the executable, never
// through a source-tree path compiled into the binary.
#pragma once

#include <string>

namespace uio::data {

// The interpreter for helper scripts: `chosen` when not empty (a command's --python option), else the
// environment's UIO_PYTHON, else "python3" from PATH.
std::string python_interpreter(const std::string& chosen = "");

// The helper script `name` ("plot-eval.py"): $UIO_SCRIPTS_DIR/name when that variable is set, else
// share/uio/name beside the running executable (the build tree) or in ../share/uio/ (an installed bin/).
// Throws std::runtime_error naming every place it looked.
std::string helper_script(const std::string& name);

// Single-quotes `s` for a POSIX shell command line.
std::string shell_quote(const std::string& s);

}  // namespace uio::data
