// warpload inspect PATH... [--json]

#include <fmt/core.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "commands.hpp"
#include "json_writer.hpp"
#include "text_table.hpp"
#include "units.hpp"
#include "warpload/loader.hpp"

namespace warpload::cli {
namespace {

struct DTypeTotal {
  std::uint64_t bytes = 0;
  std::uint64_t tensors = 0;
};

// Per-dtype totals, largest first.
std::vector<std::pair<std::string, DTypeTotal>> totals_by_dtype(const Loader& loader) {
  std::map<std::string, DTypeTotal> by_name;
  for (const PlannedFile& file : loader.files()) {
    for (const TensorInfo& t : file.header.tensors) {
      DTypeTotal& total = by_name[std::string(dtype_name(t.dtype))];
      total.bytes += t.nbytes();
      ++total.tensors;
    }
  }
  std::vector<std::pair<std::string, DTypeTotal>> sorted(by_name.begin(), by_name.end());
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const auto& a, const auto& b) { return a.second.bytes > b.second.bytes; });
  return sorted;
}

std::uint64_t tensor_count(const Loader& loader) {
  std::uint64_t n = 0;
  for (const PlannedFile& file : loader.files()) {
    n += file.header.tensors.size();
  }
  return n;
}

void print_json(const Loader& loader) {
  std::string out;
  JsonWriter w(out);
  w.begin_object();
  w.key("files").begin_array();
  for (const PlannedFile& file : loader.files()) {
    w.begin_object()
        .field("path", file.path.string())
        .field("header_length", file.header.header_length)
        .field("data_offset", file.header.data_offset())
        .field("data_size", file.header.data_size());
    w.key("metadata").begin_object();
    for (const auto& [key, value] : file.header.metadata) {
      w.field(key, value);
    }
    w.end_object();
    w.end_object();
  }
  w.end_array();

  w.key("tensors").begin_array();
  for (const PlannedFile& file : loader.files()) {
    for (const TensorInfo& t : file.header.tensors) {
      w.begin_object()
          .field("file", file.path.string())
          .field("name", t.name)
          .field("dtype", dtype_name(t.dtype));
      w.key("shape").begin_array();
      for (const std::uint64_t dim : t.shape) {
        w.value(dim);
      }
      w.end_array();
      w.field("nbytes", t.nbytes());
      w.key("data_offsets").begin_array().value(t.begin).value(t.end).end_array();
      w.end_object();
    }
  }
  w.end_array();

  w.field("total_bytes", loader.total_bytes()).field("total_tensors", tensor_count(loader));
  w.key("bytes_by_dtype").begin_object();
  for (const auto& [name, total] : totals_by_dtype(loader)) {
    w.field(name, total.bytes);
  }
  w.end_object();
  w.end_object();
  out.push_back('\n');
  fmt::print("{}", out);
}

void print_text(const Loader& loader) {
  const std::vector<PlannedFile>& files = loader.files();
  const auto labels = file_labels(files);

  TextTable file_table({{"FILE"},
                        {"TENSORS", TextTable::kRight},
                        {"HEADER", TextTable::kRight},
                        {"DATA OFFSET", TextTable::kRight},
                        {"DATA BYTES", TextTable::kRight}});
  for (const PlannedFile& file : files) {
    file_table.add_row({labels.at(file.path), std::to_string(file.header.tensors.size()),
                        std::to_string(file.header.header_length),
                        std::to_string(file.header.data_offset()),
                        std::to_string(file.header.data_size())});
  }

  const bool several_files = files.size() > 1;
  std::vector<TextTable::Column> columns = {
      {"NAME"}, {"DTYPE"}, {"SHAPE"}, {"BYTES", TextTable::kRight}};
  if (several_files) {
    columns.push_back({"FILE"});
  }
  TextTable tensor_table(std::move(columns));
  for (const PlannedFile& file : files) {
    for (const TensorInfo& t : file.header.tensors) {
      std::vector<std::string> row = {t.name, std::string(dtype_name(t.dtype)),
                                      format_shape(t.shape), std::to_string(t.nbytes())};
      if (several_files) {
        row.push_back(labels.at(file.path));
      }
      tensor_table.add_row(std::move(row));
    }
  }

  std::string out = file_table.render();
  out += '\n';
  out += tensor_table.render();
  out += '\n';
  const std::uint64_t total = loader.total_bytes();
  out += fmt::format("total: {} file{}, {} tensors, {} bytes ({})\n", files.size(),
                     several_files ? "s" : "", tensor_count(loader), total, format_bytes(total));
  for (const auto& [name, dtype_total] : totals_by_dtype(loader)) {
    const double share =
        total > 0 ? 100.0 * static_cast<double>(dtype_total.bytes) / static_cast<double>(total)
                  : 0.0;
    out +=
        fmt::format("  {:<12} {:>15} bytes ({:>10}, {:5.1f}%)  {} tensors\n", name,
                    dtype_total.bytes, format_bytes(dtype_total.bytes), share, dtype_total.tensors);
  }
  const std::map<std::string, std::string> metadata = loader.metadata();
  if (!metadata.empty()) {
    out += "metadata:";
    for (const auto& [key, value] : metadata) {
      out += fmt::format(" {}={}", key, value);
    }
    out += '\n';
  }
  fmt::print("{}", out);
}

}  // namespace

void run_inspect(const InspectOptions& options) {
  Loader loader;
  loader.add(options.paths);
  if (options.json) {
    print_json(loader);
  } else {
    print_text(loader);
  }
}

}  // namespace warpload::cli
