// Test helpers that run commands: a shell, and TLS certificates made by the openssl CLI.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "tests/test_support.h"

namespace accllm::testing {

// `command` through /bin/sh; its exit status.
inline int Shell(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Certificates made by the openssl command line for one test: a CA, a server certificate for
// 127.0.0.1 and a client certificate, all signed by the CA.
class TestCertificates {
 public:
  TestCertificates() {
    const std::string d = dir_.path().string();
    const std::string script = absl::StrCat(
        "set -e; cd ", d, "; ",
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout ca.key -out ca.pem; ",
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' >san.ext; ",
        "openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout server.key -out server.csr; ",
        "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile san.ext -out server.pem; ",
        "openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout client.key -out client.csr; ",
        "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -out client.pem");
    ok_ = Shell(absl::StrCat("(", script, ") >", d, "/openssl.log 2>&1")) == 0;
  }
  bool ok() const { return ok_; }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string pem(const std::string& name) const { return ReadFile(dir_ / name); }

 private:
  ScratchDir dir_;
  bool ok_ = false;
};

}  // namespace accllm::testing
