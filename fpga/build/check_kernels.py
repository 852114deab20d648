#!/usr/bin/env python3
"""Static checks on the HLS kernel sources for what Vitis HLS cannot schedule as written. Run by
the test command (ctest HlsKernelCheck); `--self-test` shows it catches each kind of problem.

  1. A loop inside a `#pragma HLS PIPELINE` loop is unrolled completely, so its trip count must be
     a compile-time constant: a literal, a kConstant, or a template parameter (an upper-case name).
     No `while` or `do` there either. Functions the pipelined loop calls (defined in the checked
     sources, where HLS inlines them) count as inside it.
  2. A local array indexed by the variable of an unrolled loop (`#pragma HLS UNROLL`, or any loop
     inside a pipelined one) needs a `#pragma HLS ARRAY_PARTITION` naming it, or its one or two
     memory ports serialize the unrolled copies.

Usage: check_kernels.py FILE...   |   check_kernels.py --self-test
"""
import re
import sys

CONSTANT = re.compile(r"^(\d+|k[A-Z]\w*|[A-Z][A-Z0-9_]*|[A-Z])$")
ARRAY_DECL = re.compile(r"\b(?:int8_t|uint8_t|int16_t|uint16_t|int32_t|uint32_t|int64_t|int|float|double|Beat|Kv4Param)"
                        r"\s+(\w+)\s*\[")


def strip(text):
    """Comments and string literals blanked (lengths kept, so offsets stay valid)."""
    def blank(m):
        return re.sub(r"[^\n]", " ", m.group(0))
    return re.sub(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\])*"', blank, text, flags=re.S)


def match_close(text, open_index, open_char="(", close_char=")"):
    depth = 0
    for i in range(open_index, len(text)):
        if text[i] == open_char:
            depth += 1
        elif text[i] == close_char:
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced")


def statement_end(text, start):
    """End of the statement or braced block that starts at `start` (after whitespace)."""
    i = start
    while text[i].isspace():
        i += 1
    if text[i] == "{":
        return match_close(text, i, "{", "}") + 1
    if text.startswith("for", i) or text.startswith("if", i) or text.startswith("while", i):
        paren = text.index("(", i)
        end = statement_end(text, match_close(text, paren) + 1)
        rest = text[end:].lstrip()
        if text.startswith("if", i) and rest.startswith("else"):
            return statement_end(text, text.index("else", end) + 4)
        return end
    return text.index(";", i) + 1


class Loop:
    def __init__(self, text, start):
        paren = text.index("(", start)
        close = match_close(text, paren)
        self.header = text[paren + 1:close]
        self.start, self.body_start = start, close + 1
        self.end = statement_end(text, close + 1)
        body = text[self.body_start:self.end]
        self.body = body
        # The loop's own pragmas: those that open its body, before any statement.
        pragmas = []
        for text_line in body.lstrip().lstrip("{").split("\n"):
            m = re.match(r"\s*#pragma HLS (\w+)", text_line)
            if m:
                pragmas.append(m.group(1))
            elif text_line.strip():
                break
        self.pipelined = "PIPELINE" in pragmas
        self.unrolled = "UNROLL" in pragmas
        parts = self.header.split(";")
        m = re.match(r"\s*(?:const\s+)?(?:int|int64_t|unsigned)?\s*(\w+)\s*=", parts[0]) if len(parts) == 3 else None
        self.var = m.group(1) if m else None
        self.init = parts[0].split("=", 1)[1].strip() if len(parts) == 3 and "=" in parts[0] else ""
        cond = re.match(r"\s*(\w+)\s*(<=?)\s*(.+?)\s*$", parts[1]) if len(parts) == 3 else None
        self.bound = cond.group(3) if cond else parts[1].strip() if len(parts) == 3 else ""

    def constant_trip_count(self):
        return all(CONSTANT.match(v.replace(" ", "")) for v in (self.init, self.bound))


def loops_in(text, begin, end):
    return [Loop(text, begin + m.start()) for m in re.finditer(r"\bfor\s*\(", text[begin:end])]


def functions(text):
    """name -> (body start, body end) for every function definition in `text`."""
    out = {}
    for m in re.finditer(r"\b(\w+)\s*\(", text):
        name = m.group(1)
        if name in ("for", "if", "while", "switch", "return", "sizeof", "static_cast", "reinterpret_cast"):
            continue
        try:
            close = match_close(text, m.end() - 1)
        except ValueError:
            continue
        after = text[close + 1:close + 40].lstrip()
        if after.startswith("{") or after.startswith("const {"):
            brace = text.index("{", close)
            out.setdefault(name, (brace, match_close(text, brace, "{", "}") + 1))
    return out


def check(sources):
    """Problems found in {path: text}, as 'path:line: message' strings."""
    problems = []
    stripped = {path: strip(text) for path, text in sources.items()}
    defined = {}
    for path, text in stripped.items():
        for name, span in functions(text).items():
            defined.setdefault(name, (path, span))

    def line(path, index):
        return stripped[path].count("\n", 0, index) + 1

    def inside_pipeline(path, begin, end, where, seen):
        text = stripped[path]
        for loop in loops_in(text, begin, end):
            if not loop.constant_trip_count():
                problems.append(f"{path}:{line(path, loop.start)}: loop `for ({loop.header.strip()})` under PIPELINE "
                                f"({where}) has no constant trip count")
        for m in re.finditer(r"\b(while|do)\b", text[begin:end]):
            problems.append(f"{path}:{line(path, begin + m.start())}: `{m.group(1)}` loop under PIPELINE ({where})")
        for m in re.finditer(r"\b(\w+)\s*(?:<[^<>;()]*>)?\s*\(", text[begin:end]):
            name = m.group(1)
            if name in defined and name not in seen:
                callee_path, (b, e) = defined[name]
                inside_pipeline(callee_path, b, e, f"{where}, in {name}", seen | {name})

    for path, text in stripped.items():
        for loop in loops_in(text, 0, len(text)):
            if loop.pipelined:
                inside_pipeline(path, loop.body_start, loop.end, f"line {line(path, loop.start)}", frozenset())
        # Arrays indexed by unrolled loops.
        for name, (begin, end) in functions(text).items():
            body = text[begin:end]
            arrays = set(ARRAY_DECL.findall(body))
            partitioned = set(re.findall(r"#pragma HLS ARRAY_PARTITION variable\s*=\s*(\w+)", sources[path][begin:end]))
            unrolled = []
            for loop in loops_in(text, begin, end):
                if loop.unrolled:
                    unrolled.append(loop)
                if loop.pipelined:
                    unrolled += loops_in(text, loop.body_start, loop.end)
            for loop in unrolled:
                if not loop.var:
                    continue
                for array in arrays - partitioned:
                    if re.search(rf"\b{array}\s*(?:\[[^\]]*\]\s*)*\[[^\]]*\b{loop.var}\b", loop.body):
                        problems.append(f"{path}:{line(path, loop.start)}: array `{array}` is indexed by the unrolled "
                                        f"loop over `{loop.var}` but has no ARRAY_PARTITION")
    return sorted(set(problems))


SELF_TEST = {
    "variable bound under PIPELINE": """
void f(const float* x, float* y, int n, int m) {
  for (int i = 0; i < n; ++i) {
#pragma HLS PIPELINE II = 1
    float s = 0;
    for (int j = 0; j < m; ++j) s += x[j];
    y[i] = s;
  }
}""",
    "while under PIPELINE, in a called function": """
float g(unsigned v) { while (v > 1) v >>= 1; return v; }
void f(const unsigned* x, float* y, int n) {
  for (int i = 0; i < n; ++i) {
#pragma HLS PIPELINE II = 1
    y[i] = g(x[i]);
  }
}""",
    "unpartitioned array under UNROLL": """
void f(const float* x, float* y) {
  float acc[16];
  for (int r = 0; r < 16; ++r) {
#pragma HLS UNROLL
    acc[r] = x[r] * 2;
  }
  for (int r = 0; r < 16; ++r) y[r] = acc[r];
}""",
}
GOOD = """
template <int N>
void f(const float* x, float* y, int n) {
  float acc[kLanes];
#pragma HLS ARRAY_PARTITION variable = acc complete
  for (int i = 0; i < n; ++i) {
#pragma HLS PIPELINE II = 1
    for (int r = 0; r < kLanes; ++r) acc[r] = x[i * N + r];
    for (int d = 0; d < N; ++d) y[d] += acc[d % kLanes];
  }
}"""


def self_test():
    failures = 0
    for what, source in SELF_TEST.items():
        found = check({f"<{what}>": source})
        if not found:
            print(f"self-test: not caught: {what}")
            failures += 1
    found = check({"<good>": GOOD})
    if found:
        print("self-test: false alarm:", *found, sep="\n  ")
        failures += 1
    print("self-test:", "failed" if failures else "every problem caught, no false alarm")
    return 1 if failures else 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    sources = {}
    for path in sys.argv[1:]:
        with open(path) as f:
            sources[path] = f.read()
    problems = check(sources)
    for p in problems:
        print(p)
    print(f"check_kernels: {len(problems)} problem(s) in {len(sources)} file(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
