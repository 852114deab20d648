"""accllm-gateway and accllm-server processes driven by HTTP clients we did not write:

- curl: the raw SSE framing and the error shapes, byte for byte where a client can tell;
- Python's own http.client (Debian): a client that leaves mid-request cancels its generation
  (the daemon's cancelled counter moves, its KV pages return to the pool, it stops spending
  tokens on the request).

Usage: gateway_http_clients_test.py SERVER_BINARY GATEWAY_BINARY DEFAULT_MODELS_DIR
"""
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from gateway_stack import GatewayStack, get, stretched_stories  # noqa: E402

SERVER, GATEWAY, DEFAULT_MODELS = sys.argv[1:4]
MODELS = os.environ.get("ACCLLM_MODELS_DIR") or DEFAULT_MODELS


def wait_for(condition, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def curl(*args):
    """curl's output, headers included (-i), and exit status."""
    result = subprocess.run(["curl", "-s", "-i", "-N", *args], capture_output=True, timeout=60)
    return result.stdout.decode(), result.returncode


class GatewayHttpClientsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        model = stretched_stories(MODELS, os.path.join(cls.dir.name, "stories-4k.bin"))
        cls.stack = GatewayStack(SERVER, GATEWAY, model, os.path.join(MODELS, "tok512.bin"), server_args=["--kv", "f32"])
        cls.stack.__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.stack.__exit__(None, None, None)
        cls.dir.cleanup()

    def cancelled(self):
        return self.stack.daemon_metric('accllm_requests_total{finish_reason="cancelled"}') or 0

    def pages_used(self):
        _, text = get(self.stack.metrics_url)
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("accllm_kv_pages_used{"))

    def generated(self):
        return self.stack.daemon_metric("accllm_generated_tokens_total") or 0

    def leave(self, stream):
        before = self.cancelled()
        body = json.dumps({"model": "stories-4k", "prompt": "Once", "max_tokens": 4000, "ignore_eos": True,
                           "stream": stream})
        conn = http.client.HTTPConnection("127.0.0.1", self.stack.gateway_port, timeout=30)
        conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        if stream:
            response = conn.getresponse()
            self.assertEqual(response.status, 200)
            self.assertTrue(response.readline().startswith(b"data: "))  # generation is under way
            response.close()  # the socket closes once nothing refers to it
        else:
            self.assertTrue(wait_for(lambda: self.pages_used() > 0), "the request never started")
        conn.sock.close()
        conn.close()
        self.assertTrue(wait_for(lambda: self.cancelled() == before + 1), "the daemon never saw the cancellation")
        self.assertTrue(wait_for(lambda: self.pages_used() == 0), "the KV pages did not return to the pool")
        spent = self.generated()
        time.sleep(0.2)
        self.assertEqual(self.generated(), spent, "the daemon went on generating")
        self.assertLess(spent, 4000 * (2 if not stream else 1))

    def post(self, path, body):
        return curl(f"{self.stack.gateway_url}{path}", "-H", "Content-Type: application/json", "-d", json.dumps(body))

    def test_sse_framing_seen_by_curl(self):
        out, rc = self.post("/v1/chat/completions", {
            "model": "stories-4k", "messages": [{"role": "user", "content": "Lily"}], "max_tokens": 8,
            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}})
        self.assertEqual(rc, 0)
        head, _, body = out.partition("\r\n\r\n")
        head += "\r\n"
        self.assertRegex(head, r"^HTTP/1.1 200 OK\r\n")
        self.assertIn("\r\nContent-Type: text/event-stream\r\n", head)
        self.assertIn("\r\nTransfer-Encoding: chunked\r\n", head)
        self.assertIn("\r\nCache-Control: no-cache\r\n", head)
        # Events: "data: <json>" lines, each followed by a blank line; [DONE] last.
        self.assertTrue(body.endswith("data: [DONE]\n\n"), body[-80:])
        events = body.split("\n\n")[:-1]
        self.assertTrue(all(e.startswith("data: ") and "\n" not in e for e in events), events)
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        self.assertEqual(chunks[0]["choices"][0]["delta"], {"role": "assistant", "content": ""})
        self.assertEqual(chunks[-2]["choices"][0]["finish_reason"], "length")
        self.assertEqual(chunks[-1]["choices"], [])
        self.assertEqual(chunks[-1]["usage"]["completion_tokens"], 8)
        self.assertEqual(len({c["id"] for c in chunks}), 1)

    def test_error_shapes_seen_by_curl(self):
        cases = [
            (self.post("/v1/completions", {"model": "nope", "prompt": "a"}), 404, "invalid_request_error", "model_not_found", None),
            (self.post("/v1/completions", {"model": "stories-4k", "prompt": "a", "n": 0}), 400, "invalid_request_error", None, "n"),
            (curl(f"{self.stack.gateway_url}/v1/completions", "-H", "Content-Type: application/json", "-d", "{oops"),
             400, "invalid_request_error", None, None),
            (curl(f"{self.stack.gateway_url}/v2/anything"), 404, "invalid_request_error", None, None),
        ]
        for (out, rc), status, kind, code, param in cases:
            self.assertEqual(rc, 0)
            head, _, body = out.partition("\r\n\r\n")
            self.assertTrue(head.startswith(f"HTTP/1.1 {status} "), head)
            self.assertIn("Content-Type: application/json", head)
            error = json.loads(body)["error"]
            self.assertEqual(set(error), {"message", "type", "param", "code"})
            self.assertEqual((error["type"], error["code"], error["param"]), (kind, code, param))
            self.assertTrue(error["message"])

    def test_a_large_body_gets_100_continue(self):
        # A client that asks "Expect: 100-continue" (curl does for large bodies, HTTP libraries on
        # request) waits for the go-ahead before it sends the body.
        out, rc = curl(f"{self.stack.gateway_url}/v1/completions", "-H", "Expect: 100-continue", "-d", json.dumps({
            "model": "stories-4k", "prompt": "Once upon a time " * 200, "max_tokens": 2}))
        self.assertEqual(rc, 0)
        self.assertTrue(out.startswith("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), out[:200])
        self.assertEqual(json.loads(out.partition("\r\n\r\n")[2].partition("\r\n\r\n")[2])["usage"]["completion_tokens"], 2)

    def test_leaving_a_stream(self):
        self.leave(stream=True)

    def test_leaving_a_whole_response(self):
        self.leave(stream=False)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
