"""accllm-server driven by a client that is not ours: Debian's python3-grpcio, with message
classes that protoc generates from our .proto files at build time.

Usage: grpcio_client_test.py SERVER_BINARY CLI_BINARY PROTO_PY_DIR DEFAULT_MODELS_DIR
($ACCLLM_MODELS_DIR, when set, wins over DEFAULT_MODELS_DIR, as in the C++ tests.)
"""
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

SERVER, CLI, PROTO_DIR, DEFAULT_MODELS = sys.argv[1:5]
MODELS = os.environ.get("ACCLLM_MODELS_DIR") or DEFAULT_MODELS
sys.path.insert(0, PROTO_DIR)
from accllm.v1 import generation_pb2 as pb  # noqa: E402
# Our generated grpc.health.v1 module lives in a "grpc" folder that grpcio's own package
# shadows, so it is loaded by path.
_spec = importlib.util.spec_from_file_location(
    "health_pb2", os.path.join(PROTO_DIR, "grpc", "health", "v1", "health_pb2.py"))
health_pb2 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(health_pb2)

MODEL = os.path.join(MODELS, "stories260K.bin")


class GrpcioClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.log = tempfile.NamedTemporaryFile(prefix="accllm-server-", suffix=".log", delete=False)
        cls.server = subprocess.Popen(
            [SERVER, "-m", MODEL, "--listen", "127.0.0.1:0", "--kv", "f32"],
            stderr=cls.log, stdout=subprocess.DEVNULL)
        port = None
        for _ in range(3000):
            with open(cls.log.name) as f:
                m = re.search(r"serving .* on port (\d+)", f.read())
            if m:
                port = int(m.group(1))
                break
            if cls.server.poll() is not None:
                break
            time.sleep(0.01)
        if port is None:
            with open(cls.log.name) as f:
                raise RuntimeError("the server did not start:\n" + f.read())
        cls.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        cls.generate = cls.channel.unary_stream(
            "/accllm.v1.Generation/Generate",
            request_serializer=pb.GenerateRequest.SerializeToString,
            response_deserializer=pb.GenerateResponse.FromString)
        cls.tokenize = cls.channel.unary_unary(
            "/accllm.v1.Generation/Tokenize",
            request_serializer=pb.TokenizeRequest.SerializeToString,
            response_deserializer=pb.TokenizeResponse.FromString)
        cls.server_info = cls.channel.unary_unary(
            "/accllm.v1.Generation/ServerInfo",
            request_serializer=pb.ServerInfoRequest.SerializeToString,
            response_deserializer=pb.ServerInfoResponse.FromString)
        cls.health = cls.channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.terminate()
        code = cls.server.wait(timeout=60)
        os.unlink(cls.log.name)
        assert code == 0, f"accllm-server exited with {code} on SIGTERM"

    def test_sampled_stream_equals_accllm_generate_with_the_same_seed(self):
        request = pb.GenerateRequest(text="Once upon a time", max_new_tokens=30, return_token_ids=True,
                                     sampling=pb.SamplingParams(temperature=0.8, top_p=0.9, seed=7))
        ids, text, final = [], "", None
        for response in self.generate(request, timeout=60):
            if response.HasField("chunk"):
                ids.extend(response.chunk.token_ids)
                text += response.chunk.text
            else:
                final = response.final
        cli = subprocess.run([CLI, "generate", "-m", MODEL, "-p", "Once upon a time", "-n", "30", "--temperature",
                              "0.8", "--top-p", "0.9", "--seed", "7", "--engine", "cpu", "--kv", "f32", "--output",
                              "ids"], capture_output=True, text=True, check=True)
        expected = [int(x) for x in cli.stdout.split()]
        prompt = list(self.tokenize(pb.TokenizeRequest(text="Once upon a time", add_bos=True), timeout=10).ids)
        self.assertEqual(prompt + ids, expected)
        self.assertTrue(text.startswith(","), text)
        self.assertEqual(final.usage.generated_tokens, len(ids))
        self.assertEqual(final.device, "cpu:0")

    def test_tokenize_text_beyond_ascii(self):
        # Pieces are token bytes; a piece may be half of a UTF-8 character. Python's protobuf
        # refuses invalid UTF-8 in a string field, so this parses only because pieces are bytes.
        text = "café au lait, naïve"
        reply = self.tokenize(pb.TokenizeRequest(text=text, add_bos=False), timeout=10)
        self.assertEqual(len(reply.ids), len(reply.pieces))
        joined = b"".join(reply.pieces)
        self.assertIn(text.encode("utf-8"), joined)
        partial = False
        for piece in reply.pieces:
            try:
                piece.decode("utf-8")
            except UnicodeDecodeError:
                partial = True
        self.assertTrue(partial, "expected byte tokens for é and ï")

    def test_bad_numbers_and_bounds_are_invalid_argument(self):
        for bad in (pb.GenerateRequest(text="hi", time_limit_seconds=float("nan")),
                    pb.GenerateRequest(text="hi", time_limit_seconds=float("inf")),
                    pb.GenerateRequest(text="hi", stop=["x"] * 10000)):
            with self.assertRaises(grpc.RpcError) as refused:
                list(self.generate(bad, timeout=30))
            self.assertEqual(refused.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)

    def test_errors_are_grpc_status_codes(self):
        with self.assertRaises(grpc.RpcError) as bad:
            list(self.generate(pb.GenerateRequest(text="hi", sampling=pb.SamplingParams(top_p=3.0)), timeout=10))
        self.assertEqual(bad.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("top_p", bad.exception.details())
        with self.assertRaises(grpc.RpcError) as unknown:
            list(self.generate(pb.GenerateRequest(model="llama-70b", text="hi"), timeout=10))
        self.assertEqual(unknown.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_health_and_server_info(self):
        self.assertEqual(self.health(health_pb2.HealthCheckRequest(), timeout=10).status,
                         health_pb2.HealthCheckResponse.SERVING)
        info = self.server_info(pb.ServerInfoRequest(), timeout=10)
        self.assertEqual(info.state, pb.SERVING)
        self.assertEqual([d.name for d in info.devices], ["cpu:0"])

    def test_cancel_mid_stream(self):
        call = self.generate(pb.GenerateRequest(text="Once upon a time", max_new_tokens=400, ignore_eos=True),
                             timeout=60)
        next(call)
        call.cancel()
        with self.assertRaises(grpc.RpcError) as cancelled:
            list(call)
        self.assertEqual(cancelled.exception.code(), grpc.StatusCode.CANCELLED)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1], verbosity=2)
