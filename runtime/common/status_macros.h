// Early-return helpers for absl::Status / absl::StatusOr. Abseil does not publish these macros,
// so they are hand-written here (the same shape as the ones inside Google's codebases).
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define ACCLLM_CONCAT_INNER(a, b) a##b
#define ACCLLM_CONCAT(a, b) ACCLLM_CONCAT_INNER(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                  \
  do {                                         \
    ::absl::Status accllm_status_ = (expr);    \
    if (!accllm_status_.ok()) return accllm_status_; \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, MakeX());` declares/assigns `x` or returns the error.
#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(ACCLLM_CONCAT(accllm_statusor_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL(statusor, lhs, expr) \
  auto statusor = (expr);                          \
  if (!statusor.ok()) return statusor.status();    \
  lhs = std::move(statusor).value()
