// Column-aligned plain-text tables for the CLI's human-readable output.
//
//   TextTable table({{"NAME"}, {"BYTES", TextTable::kRight}});
//   table.add_row({"lm_head.weight", "524288"});
//   fmt::print("{}", table.render());
//
// Widths are measured in code points, so UTF-8 cells such as "×" or "—" line up.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "warpload/plan.hpp"

namespace warpload::cli {

class TextTable {
 public:
  enum Align : std::uint8_t { kLeft, kRight };
  struct Column {
    std::string title;
    Align align = kLeft;
  };

  explicit TextTable(std::vector<Column> columns) : columns_(std::move(columns)) {}

  void add_row(std::vector<std::string> cells) {
    cells.resize(columns_.size());
    rows_.push_back(std::move(cells));
  }
  [[nodiscard]] bool empty() const noexcept { return rows_.empty(); }

  // Header line, then one line per row; columns separated by two spaces; no trailing blanks.
  [[nodiscard]] std::string render() const {
    std::vector<std::size_t> widths(columns_.size());
    for (std::size_t c = 0; c < columns_.size(); ++c) {
      widths[c] = display_width(columns_[c].title);
      for (const auto& row : rows_) {
        widths[c] = std::max(widths[c], display_width(row[c]));
      }
    }
    std::string out;
    auto append_line = [&](auto cell_of) {
      std::string line;
      for (std::size_t c = 0; c < columns_.size(); ++c) {
        const std::string_view cell = cell_of(c);
        const std::string pad(widths[c] - display_width(cell), ' ');
        if (c > 0) {
          line += "  ";
        }
        if (columns_[c].align == kRight) {
          line += pad;
          line += cell;
        } else {
          line += cell;
          line += pad;
        }
      }
      line.erase(line.find_last_not_of(' ') + 1);
      out += line;
      out += '\n';
    };
    append_line([&](std::size_t c) -> std::string_view { return columns_[c].title; });
    for (const auto& row : rows_) {
      append_line([&](std::size_t c) -> std::string_view { return row[c]; });
    }
    return out;
  }

  [[nodiscard]] static std::size_t display_width(std::string_view text) noexcept {
    return static_cast<std::size_t>(std::count_if(text.begin(), text.end(), [](char ch) {
      return (static_cast<unsigned char>(ch) & 0xC0) != 0x80;  // not a continuation byte
    }));
  }

 private:
  std::vector<Column> columns_;
  std::vector<std::vector<std::string>> rows_;
};

// How to name each file in a table: its file name when those are unique, else its path.
[[nodiscard]] inline std::map<std::filesystem::path, std::string> file_labels(
    const std::vector<PlannedFile>& files) {
  std::map<std::string, int> name_counts;
  for (const PlannedFile& f : files) {
    ++name_counts[f.path.filename().string()];
  }
  std::map<std::filesystem::path, std::string> labels;
  for (const PlannedFile& f : files) {
    const std::string name = f.path.filename().string();
    labels[f.path] = name_counts[name] == 1 ? name : f.path.string();
  }
  return labels;
}

}  // namespace warpload::cli
