#include "agent/http/http.h"

#include <atomic>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fleetwes::agent::http {
namespace {

using ::testing::HasSubstr;

std::string Base(const Server& server) {
  return "http://127.0.0.1:" + std::to_string(server.port());
}

Timeouts Short() {
  Timeouts t;
  t.connect = absl::Seconds(5);
  t.idle = absl::Seconds(10);
  return t;
}

struct Received {
  int status = 0;
  Headers headers;
  std::string body;
  int pieces = 0;
  Result result;
};

Received Call(Client& client, Request request, const Timeouts& timeouts = Short()) {
  Received r;
  r.result = client.Send(
      request, timeouts,
      [&r](int status, const Headers& headers) {
        r.status = status;
        r.headers = headers;
        return true;
      },
      [&r](const char* data, size_t n) {
        r.body.append(data, n);
        ++r.pieces;
        return true;
      });
  return r;
}

TEST(HttpTest, FixedChunkedHeadAndKeepAlive) {
  std::atomic<int> handled{0};
  auto server = Server::Start({}, [&](const ServerRequest& req, Responder& res) {
    ++handled;
    if (req.path == "/fixed") {
      res.Send(200, "text/plain", "hello " + req.method + " " + req.target + " " + req.body,
               {{"X-Echo", std::string(FindHeader(req.headers, "x-in"))}});
    } else if (req.path == "/chunked") {
      ASSERT_TRUE(res.Start(200, {{"Content-Type", "application/x-ndjson"}}, std::nullopt));
      EXPECT_TRUE(res.Write("{\"a\":1}\n"));
      EXPECT_TRUE(res.Write("{\"done\":true}\n"));
      EXPECT_TRUE(res.Finish());
    } else {
      res.Send(404, "text/plain", "no\n");
    }
  });
  ASSERT_TRUE(server.ok()) << server.status();
  Client client(Base(**server), {});

  Request post;
  post.method = "POST";
  post.target = "/fixed?q=1";
  post.headers = {{"X-In", "v"}};
  post.body = "body";
  Received r = Call(client, post);
  ASSERT_TRUE(r.result.ok()) << r.result.message;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hello POST /fixed?q=1 body");
  EXPECT_EQ(FindHeader(r.headers, "x-echo"), "v");
  EXPECT_EQ(FindHeader(r.headers, "content-type"), "text/plain");

  Request get;
  get.target = "/chunked";
  r = Call(client, get);
  ASSERT_TRUE(r.result.ok()) << r.result.message;
  EXPECT_EQ(r.body, "{\"a\":1}\n{\"done\":true}\n");
  EXPECT_EQ(FindHeader(r.headers, "Transfer-Encoding"), "chunked");

  Request head;
  head.method = "HEAD";
  head.target = "/fixed";
  r = Call(client, head);
  ASSERT_TRUE(r.result.ok()) << r.result.message;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "");
  EXPECT_EQ(FindHeader(r.headers, "Content-Length"), "18");  // "hello HEAD /fixed "

  get.target = "/nothing";
  r = Call(client, get);
  ASSERT_TRUE(r.result.ok());
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(handled.load(), 4);
}

TEST(HttpTest, OversizedRequestIs413WithoutTheHandler) {
  std::atomic<int> too_large{0};
  std::atomic<int> handled{0};
  ServerOptions options;
  options.max_body_bytes = 100;
  options.on_too_large = [&] { ++too_large; };
  auto server = Server::Start(options, [&](const ServerRequest&, Responder& res) {
    ++handled;
    res.Send(200, "text/plain", "ok");
  });
  ASSERT_TRUE(server.ok());
  Client client(Base(**server), {});
  Request big;
  big.method = "POST";
  big.target = "/x";
  big.body = std::string(4096, 'x');
  Received r = Call(client, big);
  ASSERT_TRUE(r.result.ok()) << r.result.message;
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(too_large.load(), 1);
  EXPECT_EQ(handled.load(), 0);
  // The next request opens a new connection (the server closed the last one).
  big.body = "small";
  r = Call(client, big);
  ASSERT_TRUE(r.result.ok()) << r.result.message;
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(handled.load(), 1);
}

TEST(HttpTest, ClientErrors) {
  Client::Options capped;
  capped.max_body_bytes = 10;
  absl::Notification release;
  auto server = Server::Start({}, [&](const ServerRequest& req, Responder& res) {
    if (req.path == "/hang") {
      res.Start(200, {{"Content-Type", "text/plain"}}, std::nullopt);
      res.Write("first");
      release.WaitForNotification();
      return;  // unfinished: the connection closes
    }
    res.Send(200, "text/plain", std::string(100, 'y'));
  });
  ASSERT_TRUE(server.ok());

  Client small(Base(**server), capped);
  Request get;
  get.target = "/big";
  EXPECT_EQ(Call(small, get).result.error, Error::kTooLarge);

  // The total budget ends a response that stalls; its first piece arrived.
  Client client(Base(**server), {});
  get.target = "/hang";
  Timeouts quick = Short();
  quick.total = absl::Milliseconds(200);
  Received r = Call(client, get, quick);
  EXPECT_EQ(r.result.error, Error::kTimeout);
  EXPECT_EQ(r.body, "first");

  // Cancel() from another thread ends a stalled response.
  absl::Notification started;
  std::thread canceller([&] {
    started.WaitForNotification();
    client.Cancel();
  });
  r.body.clear();
  Received c;
  c.result = client.Send(get, Short(), nullptr, [&](const char*, size_t) {
    started.Notify();
    return true;
  });
  canceller.join();
  EXPECT_EQ(c.result.error, Error::kCanceled);
  EXPECT_EQ(Call(client, get).result.error, Error::kCanceled);  // and every later one
  release.Notify();
  (*server)->Stop();

  Client refused(Base(**server), {});
  r = Call(refused, get);
  EXPECT_EQ(r.result.error, Error::kConnect);
  EXPECT_EQ(r.result.sys_errno, ECONNREFUSED);

  Client tls("https://127.0.0.1:1", {});
  r = Call(tls, get);
  EXPECT_EQ(r.result.error, Error::kConnect);
  EXPECT_THAT(r.result.message, HasSubstr("http://host[:port]"));
}

TEST(HttpTest, ListenErrorsAreUnavailable) {
  auto first = Server::Start(
      {}, [](const ServerRequest&, Responder& res) { res.Send(200, "text/plain", ""); });
  ASSERT_TRUE(first.ok());
  ServerOptions same;
  same.port = (*first)->port();
  auto second = Server::Start(same, [](const ServerRequest&, Responder&) {});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(second.status().message(), HasSubstr("cannot listen on 127.0.0.1:"));
}

}  // namespace
}  // namespace fleetwes::agent::http
