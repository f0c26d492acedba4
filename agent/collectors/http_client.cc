#include "agent/collectors/http_client.h"

#include <httplib.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "agent/config.h"

namespace fleetwes::agent {
namespace {

// Network timeouts are real time by nature: they bound how long the agent waits on a socket,
// while window lengths always come from the sampler's Clock.
using SteadyClock = std::chrono::steady_clock;

std::chrono::microseconds ToMicros(absl::Duration d) {
  return std::chrono::microseconds(absl::ToInt64Microseconds(d));
}

std::string HumanBytes(size_t n) {
  if (n % (1 << 20) == 0) return absl::StrCat(n >> 20, " MiB");
  if (n % (1 << 10) == 0) return absl::StrCat(n >> 10, " KiB");
  return absl::StrCat(n, " bytes");
}

int64_t SteadyNanos() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now().time_since_epoch())
      .count();
}

// Why a TCP connect to the URL's host fails: the errno of a fresh connect attempt (0 when it
// connects). httplib reports only "connection failed", which cannot tell a stopped engine
// ("connection refused") from a wrong address.
int DiagnoseConnect(const std::string& base, absl::Duration timeout) {
  absl::string_view rest(base);
  std::string port = "80";
  if (absl::ConsumePrefix(&rest, "https://")) {
    port = "443";
  } else {
    absl::ConsumePrefix(&rest, "http://");
  }
  std::string host(rest);
  if (!host.empty() && host.front() == '[') {
    size_t close = host.find(']');
    if (close == std::string::npos) return EINVAL;
    if (close + 2 < host.size() && host[close + 1] == ':') port = host.substr(close + 2);
    host = host.substr(1, close - 1);
  } else if (size_t colon = host.rfind(':'); colon != std::string::npos) {
    port = host.substr(colon + 1);
    host = host.substr(0, colon);
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* result = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &result) != 0) return EHOSTUNREACH;
  int error = ECONNREFUSED;
  for (addrinfo* ai = result; ai != nullptr; ai = ai->ai_next) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    error = 0;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      error = errno;
      if (error == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        int ms = static_cast<int>(std::clamp<int64_t>(absl::ToInt64Milliseconds(timeout), 1, 1000));
        if (poll(&p, 1, ms) == 1) {
          socklen_t len = sizeof(error);
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len);
        } else {
          error = ETIMEDOUT;
        }
      }
    }
    close(fd);
    if (error == 0) break;
  }
  freeaddrinfo(result);
  return error;
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
  base_ = parsed->base;
  prefix_ = parsed->path_prefix;
  client_ = std::make_unique<httplib::Client>(base_);
  client_->set_keep_alive(true);
  client_->set_tcp_nodelay(true);
  client_->set_follow_location(false);
}

HttpClient::~HttpClient() = default;

absl::StatusOr<HttpResponse> HttpClient::Get(std::string_view path, absl::Duration timeout) {
  if (client_ == nullptr) return absl::InvalidArgumentError(url_error_);
  if (timeout <= absl::ZeroDuration()) {
    return absl::DeadlineExceededError("timed out (no time left)");
  }
  const auto start = SteadyClock::now();
  const auto deadline = start + ToMicros(timeout);
  client_->set_connection_timeout(ToMicros(timeout));
  client_->set_read_timeout(ToMicros(timeout));
  client_->set_write_timeout(ToMicros(timeout));

  HttpResponse out;
  bool too_large = false;
  bool too_late = false;
  errno = 0;
  httplib::Result result = client_->Get(
      prefix_ + std::string(path),
      [&](const httplib::Response& response) {
        out.status = response.status;
        out.content_type = response.get_header_value("Content-Type");
        // The body arrives in small pieces: room for all of it at once (a vLLM exposition is
        // some 50 KB) instead of a copy at every doubling. Never more than the cap.
        uint64_t length = 0;
        if (absl::SimpleAtoi(response.get_header_value("Content-Length"), &length)) {
          out.body.reserve(std::min<uint64_t>(length, max_body_bytes_));
        }
        return true;
      },
      [&](const char* data, size_t length) {
        if (SteadyClock::now() > deadline) {
          too_late = true;
          return false;
        }
        if (out.body.size() + length > max_body_bytes_) {
          too_large = true;
          return false;
        }
        out.body.append(data, length);
        return true;
      });
  const int saved_errno = errno;
  if (result) return out;

  // Socket waits may return a hair before the deadline measured here.
  const bool timed_out = SteadyClock::now() + std::chrono::milliseconds(20) >= deadline;
  const std::string after = absl::FormatDuration(timeout);
  switch (result.error()) {
    case httplib::Error::Canceled:
      if (too_large) {
        return absl::ResourceExhaustedError(
            absl::StrCat("response larger than ", HumanBytes(max_body_bytes_)));
      }
      return absl::DeadlineExceededError(absl::StrCat("timed out after ", after));
    case httplib::Error::ConnectionTimeout:
      return absl::DeadlineExceededError(absl::StrCat("connect timed out after ", after));
    case httplib::Error::Connection: {
      if (timed_out) {
        return absl::DeadlineExceededError(absl::StrCat("connect timed out after ", after));
      }
      int error = saved_errno == ECONNREFUSED ? saved_errno : DiagnoseConnect(base_, timeout);
      if (error == ECONNREFUSED) return absl::UnavailableError("connection refused");
      if (error == EHOSTUNREACH || error == ENETUNREACH) {
        return absl::UnavailableError("host unreachable");
      }
      if (error == ETIMEDOUT) {
        return absl::DeadlineExceededError(absl::StrCat("connect timed out after ", after));
      }
      return absl::UnavailableError(absl::StrCat("cannot connect to ", base_,
                                                 error != 0 ? ": " : "",
                                                 error != 0 ? std::strerror(error) : ""));
    }
    case httplib::Error::Read:
      if (timed_out || too_late) {
        return absl::DeadlineExceededError(absl::StrCat("timed out after ", after));
      }
      return absl::UnavailableError("connection closed before a complete response");
    case httplib::Error::Write:
      return absl::UnavailableError("connection closed while sending the request");
    case httplib::Error::SSLConnection:
    case httplib::Error::SSLServerVerification:
    case httplib::Error::SSLLoadingCerts:
      return absl::UnavailableError(
          absl::StrCat("TLS failure: ", httplib::to_string(result.error())));
    default:
      return absl::UnavailableError(
          absl::StrCat("request failed: ", httplib::to_string(result.error())));
  }
}

}  // namespace fleetwes::agent
