#include "agent/collectors/http_client.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "agent/config.h"
#include "agent/http/http.h"

namespace fleetwes::agent {
namespace {

// Network timeouts are real time by nature: they bound how long the agent waits on a socket,
// while window lengths always come from the sampler's Clock.
using SteadyClock = std::chrono::steady_clock;

std::string HumanBytes(size_t n) {
  if (n % (1 << 20) == 0) return absl::StrCat(n >> 20, " MiB");
  if (n % (1 << 10) == 0) return absl::StrCat(n >> 10, " KiB");
  return absl::StrCat(n, " bytes");
}

int64_t SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now().time_since_epoch())
      .count();
}

}  // namespace

RequestBudget::RequestBudget(absl::Duration total) : total_(total), start_ns_(SteadyNanos()) {}

absl::Duration RequestBudget::Remaining() const {
  return total_ - absl::Nanoseconds(SteadyNanos() - start_ns_);
}

HttpClient::HttpClient(std::string_view url, size_t max_body_bytes)
    : max_body_bytes_(max_body_bytes) {
  auto parsed = ParseEngineUrl(url);
  if (!parsed.ok()) {
    url_error_ = std::string(parsed.status().message());
    return;
  }
  if (!absl::StartsWith(parsed->base, "http://")) {
    url_error_ = std::string(kPlainHttpOnly);
    return;
  }
  base_ = parsed->base;
  prefix_ = parsed->path_prefix;
  http::Client::Options options;
  options.keep_alive = true;
  options.max_body_bytes = max_body_bytes_;
  client_ = std::make_unique<http::Client>(base_, options);
}

HttpClient::~HttpClient() = default;

absl::StatusOr<HttpResponse> HttpClient::Get(std::string_view path, absl::Duration timeout) {
  if (client_ == nullptr) return absl::InvalidArgumentError(url_error_);
  if (timeout <= absl::ZeroDuration()) {
    return absl::DeadlineExceededError("timed out (no time left)");
  }
  http::Timeouts timeouts;
  timeouts.connect = timeout;
  timeouts.idle = timeout;
  timeouts.total = timeout;
  http::Request request;
  request.target = prefix_ + std::string(path);

  HttpResponse out;
  const http::Result result = client_->Send(
      request, timeouts,
      [&](int status, const http::Headers& headers) {
        out.status = status;
        out.content_type = std::string(http::FindHeader(headers, "Content-Type"));
        // Room for all of the body at once (a vLLM exposition is some 50 KB) instead of a copy
        // at every doubling. Never more than the cap.
        uint64_t length = 0;
        const std::string_view value = http::FindHeader(headers, "Content-Length");
        if (absl::SimpleAtoi(absl::string_view(value.data(), value.size()), &length)) {
          out.body.reserve(std::min<uint64_t>(length, max_body_bytes_));
        }
        return true;
      },
      [&](const char* data, size_t length) {
        out.body.append(data, length);
        return true;
      });

  const std::string after = absl::FormatDuration(timeout);
  switch (result.error) {
    case http::Error::kNone:
      return out;
    case http::Error::kTooLarge:
      return absl::ResourceExhaustedError(
          absl::StrCat("response larger than ", HumanBytes(max_body_bytes_)));
    case http::Error::kTimeout:
    case http::Error::kCanceled:
      return absl::DeadlineExceededError(absl::StrCat("timed out after ", after));
    case http::Error::kConnectTimeout:
      return absl::DeadlineExceededError(absl::StrCat("connect timed out after ", after));
    case http::Error::kConnect:
      if (result.sys_errno == ECONNREFUSED) return absl::UnavailableError("connection refused");
      if (result.sys_errno == EHOSTUNREACH || result.sys_errno == ENETUNREACH) {
        return absl::UnavailableError("host unreachable");
      }
      if (result.sys_errno == ETIMEDOUT) {
        return absl::DeadlineExceededError(absl::StrCat("connect timed out after ", after));
      }
      return absl::UnavailableError(
          absl::StrCat("cannot connect to ", base_, result.sys_errno != 0 ? ": " : "",
                       result.sys_errno != 0 ? std::strerror(result.sys_errno) : ""));
    case http::Error::kRead:
      return absl::UnavailableError("connection closed before a complete response");
    case http::Error::kWrite:
      return absl::UnavailableError("connection closed while sending the request");
  }
  return absl::UnavailableError(absl::StrCat("request failed: ", result.message));
}

}  // namespace fleetwes::agent
