// Running a program (the warpload CLI) from a test: stdin from /dev/null, stdout and stderr into
// files so neither can block it, the test's environment plus extra "NAME=value" entries.
#pragma once

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "support/temp_dir.hpp"

extern char** environ;

namespace warpload::testing {

struct CliResult {
  int status = -1;  // exit status, or 128 + signal number; -1 when it could not run
  std::string out;
  std::string err;
};

// The whole file, or "" when it cannot be read.
inline std::string read_whole_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// Starts `program` with `args`; returns its pid, or -1 when posix_spawn fails.
inline pid_t spawn_process(const std::string& program, const std::vector<std::string>& args,
                           const std::vector<std::string>& env, const std::filesystem::path& out,
                           const std::filesystem::path& err) {
  std::vector<std::string> all{program};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  argv.reserve(all.size() + 1);
  for (std::string& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> environment;
  for (char** e = environ; *e != nullptr; ++e) environment.emplace_back(*e);
  environment.insert(environment.end(), env.begin(), env.end());
  std::vector<char*> envp;
  envp.reserve(environment.size() + 1);
  for (std::string& e : environment) envp.push_back(e.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

// Waits for `pid`: its exit status, 128 + the signal that ended it, or -1.
inline int wait_exit_status(pid_t pid) {
  int status = 0;
  pid_t got = 0;
  while ((got = waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  if (got != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Runs `program` to the end and collects its output.
inline CliResult run_process(const std::string& program, const std::vector<std::string>& args,
                             const std::vector<std::string>& env = {}) {
  const TempDir io;
  const std::filesystem::path out = io.path() / "stdout";
  const std::filesystem::path err = io.path() / "stderr";
  CliResult result;
  const pid_t pid = spawn_process(program, args, env, out, err);
  if (pid < 0) return result;
  result.status = wait_exit_status(pid);
  result.out = read_whole_file(out);
  result.err = read_whole_file(err);
  return result;
}

}  // namespace warpload::testing
