"""accllm-gateway through OpenAI's official Node client (tests/openai, installed from the npm
registry into tests/openai/node_modules when missing).

Usage: openai_node_client_test.py SERVER_BINARY GATEWAY_BINARY DEFAULT_MODELS_DIR
"""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from gateway_stack import GatewayStack, stretched_stories  # noqa: E402

SERVER, GATEWAY, DEFAULT_MODELS = sys.argv[1:4]
MODELS = os.environ.get("ACCLLM_MODELS_DIR") or DEFAULT_MODELS
TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "openai")


def main():
    if not os.path.isdir(os.path.join(TESTS, "node_modules", "openai")):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--prefix", TESTS], check=True)
    with tempfile.TemporaryDirectory() as scratch, tempfile.NamedTemporaryFile("w", suffix=".keys") as keys:
        # A long context: the stream held open in the rate-limit test cannot end before it is checked.
        model = stretched_stories(MODELS, os.path.join(scratch, "stories-4k.bin"))
        keys.write("# test keys\nkey-a\nkey-b\n")
        keys.flush()
        with GatewayStack(SERVER, GATEWAY, model, os.path.join(MODELS, "tok512.bin"),
                          server_args=["--kv", "f32"],
                          gateway_args=["--api-key-file", keys.name, "--max-streams-per-key", "1"],
                          api_key="key-a") as stack:
            env = dict(os.environ, GATEWAY_URL=stack.gateway_url)
            result = subprocess.run(["node", "--test", "--test-reporter=spec", os.path.join(TESTS, "openai_client.test.mjs")],
                                    env=env, cwd=TESTS)
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
