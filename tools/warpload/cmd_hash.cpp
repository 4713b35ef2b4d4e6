// warpload hash PATH... [--backend NAME]: a manifest of per-tensor XXH3-64 digests on stdout.

#include <fmt/core.h>

#include "backend_names.hpp"
#include "commands.hpp"
#include "manifest.hpp"
#include "warpload/loader.hpp"

namespace warpload::cli {

void run_hash(const HashOptions& options) {
  if (!options.backend.empty()) {
    static_cast<void>(check_backend_name(options.backend, "--backend", false));
  }
  LoadOptions load_options;
  load_options.backend = options.backend;
  // The digests must be of the file's bytes: read them twice, by two different paths.
  load_options.verify = true;
  load_options.cancel = interrupt_flag();
  Loader loader(std::move(load_options));
  loader.add(options.paths);
  (void)loader.load();
  fmt::print("{}", manifest_json(digest_tensors(loader)));
}

}  // namespace warpload::cli
