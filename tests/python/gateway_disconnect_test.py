"""A client that leaves mid-request cancels its generation: Python's own http.client (Debian)
against accllm-gateway and accllm-server processes. The daemon's cancelled counter moves, its
KV pages return to the pool and it stops spending tokens on the request.

Usage: gateway_disconnect_test.py SERVER_BINARY GATEWAY_BINARY DEFAULT_MODELS_DIR
"""
import http.client
import json
import os
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from gateway_stack import GatewayStack, stretched_stories  # noqa: E402

SERVER, GATEWAY, DEFAULT_MODELS = sys.argv[1:4]
MODELS = os.environ.get("ACCLLM_MODELS_DIR") or DEFAULT_MODELS


def wait_for(condition, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


class GatewayDisconnectTest(unittest.TestCase):
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
        _, text = __import__("gateway_stack").get(self.stack.metrics_url)
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

    def test_leaving_a_stream(self):
        self.leave(stream=True)

    def test_leaving_a_whole_response(self):
        self.leave(stream=False)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
