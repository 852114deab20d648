#!/usr/bin/env python3
"""Reads ThreadSanitizer report files (TSAN_OPTIONS=log_path=DIR/tsan) and fails on every report in
which our code makes one of the racing accesses.

Debian's gRPC and abseil are not built with ThreadSanitizer, so it cannot see how gRPC hands a call
from one of its threads to another. The parts of gRPC that live in headers (grpcpp's callback and
call-op machinery) are compiled into our binaries, instrumented, and so race against that
invisible synchronization, on gRPC's own state (its call op sets, tags, reference counts).

Who made an access is the innermost frame of its stack that is not the C++ standard library's
(std:: templates run on behalf of their caller, and so do protobuf and the message classes
generated from our .proto files) or TSan's interceptors'. A report is gRPC's own
when every racing access was made by gRPC or its abseil (a grpcpp/grpc header, a grpc:: function,
a gRPC or abseil library) and at least one access stack could be restored: those are counted and
ignored. So is a race with what gRPC runs at bind time from a StartWrite/Finish we called before
it bound the reactor (see deferred_by_grpc). Every other report fails, among them any other race
where one access is ours and the other gRPC's. Thread-creation and allocation stacks are not looked at. Where gRPC orders our code (a
reactor's Start*/Finish before its reactions), server/tsan_annotations.h tells TSan so.

usage: tsan_reports.py [LOG_FILE...]   (none: no report was written)
       tsan_reports.py --self-test       (the triage on two known reports)
"""
import re
import sys

ACCESS = re.compile(r"^  (?:Previous )?(?:[Aa]tomic )?(?:[Rr]ead|[Ww]rite) of size")


def reports(text):
    blocks = text.split("==================\n")
    return [b for b in blocks if "WARNING: ThreadSanitizer" in b]


FRAME = re.compile(r"^#\d+ (?P<function>.*?) (?P<file>\S+) \((?P<module>[^)]*)\)$")
STD = ("/usr/include/c++/",)
# A std:: template instantiated without line information prints no file ("<null>"): its name says
# whose it is (after a one-word return type, if one is printed; not a std:: argument type).
STD_FUNCTION = re.compile(r"^(?:[^\s(]+ )?std::")
# Protobuf's library and the message classes generated from our .proto files run on behalf of
# whoever called them, like std:: templates: who made the access is the caller.
PROTOBUF_FILES = ("/usr/include/google/protobuf/",)
GENERATED = re.compile(r"\.pb\.(cc|h):\d+$")
GRPC_FILES = ("/usr/include/grpcpp/", "/usr/include/grpc/", "/usr/include/grpc++/")
GRPC_MODULES = ("libgrpc", "libgpr", "libgrpc++", "libabsl_")  # abseil: gRPC's runtime, uninstrumented too
GRPC_FUNCTION = re.compile(r"(^|[\s<(])grpc(::|_)")  # after a return type, if one is printed


def made_by_grpc(stack):
    """Whether the innermost frame that is not the standard library's is gRPC's. Protobuf code run
    by gRPC's serializer (grpc::GenericSerialize below it) counts as gRPC's: gRPC chooses when,
    and on which thread, it serializes a message handed to it. So does freeing a reactor from
    the OnDone that gRPC calls."""
    if any("grpc::GenericSerialize" in frame for frame in stack[:12]):
        return True
    # A reactor freed in its OnDone is freed when gRPC says it is done with it (gRPC calls OnDone
    # last, after its own uses of the reactor on other threads).
    if stack and " operator delete(" in stack[0] and any(
            "::CallOnDone()" in frame for frame in stack[:4]):
        return True
    for frame in stack:
        m = FRAME.match(frame)
        if not m:
            return False
        function, file, module = m.group("function"), m.group("file"), m.group("module")
        if (file.startswith(STD) or STD_FUNCTION.match(function) or module.startswith(("libtsan", "libprotobuf")) or
                file.startswith(PROTOBUF_FILES) or GENERATED.search(file) or function.startswith("google::protobuf::")):
            continue  # std:: templates, TSan's interceptors, protobuf and generated messages
        return (file.startswith(GRPC_FILES) or GRPC_FUNCTION.search(function) is not None or
                module.startswith(GRPC_MODULES))
    return False


def access_stacks(report):
    """The stacks of the racing accesses; one TSan could not restore (too old) is left out."""
    stacks, current = [], None
    for line in report.splitlines():
        if ACCESS.match(line):
            current = []
            stacks.append(current)
        elif current is not None and "[failed to restore the stack]" in line:
            stacks.pop()
            current = None
        elif current is not None and line.strip().startswith("#"):
            current.append(line.strip())
        elif current is not None and not line.strip():
            current = None
    return stacks


def deferred_by_grpc(stack):
    """An access gRPC makes while running, at bind time, a StartWrite/Finish we called before it
    had bound the reactor to its call (its backlog). That order is kept by the call's mutex, which
    TSan cannot see (abseil's Mutex, uninstrumented); the race is with our writes made before we
    handed the message or status over."""
    return made_by_grpc(stack) and any(
        "::InternalBindWriter(" in frame or "::InternalBindCall(" in frame for frame in stack[:24])


def grpcs_own(report):
    stacks = access_stacks(report)
    return bool(stacks) and (all(made_by_grpc(stack) for stack in stacks) or  # (the restored stacks)
                             any(deferred_by_grpc(stack) for stack in stacks))


# A report from CI (2026-12-02, trimmed): a test's ClientReader::Finish reads the status details
# that gRPC's core wrote on its own thread (abseil's Cord, uninstrumented). Every access is
# gRPC's; the std::string frames without a file are the standard library's.
GRPC_ONLY = """WARNING: ThreadSanitizer: data race (pid=23389)
  Read of size 1 at 0x7b1000005330 by main thread:
    #0 void std::__cxx11::basic_string<char>::_S_copy_chars<unsigned char*>(char*, unsigned char*, unsigned char*) /usr/include/c++/12/bits/basic_string.h:454 (accllm_server_tests+0xad2e4)
    #1 grpc::internal::CallOpClientRecvStatus::FinishOp(bool*) <null> (accllm_server_tests+0x7498a)
    #2 grpc::ClientReader<accllm::v1::GenerateResponse>::Finish() /usr/include/grpcpp/support/sync_stream.h:233 (accllm_server_tests+0x9450f)
    #3 accllm::server::ServerTest::Generate(accllm::v1::GenerateRequest const&) /work/tests/server_fixture.h:177 (accllm_server_tests+0x8634e)

  Previous write of size 1 at 0x7b1000005330 by thread T2:
    #0 memset ../../../../src/libsanitizer/sanitizer_common/sanitizer_common_interceptors.inc:799 (libtsan.so.2+0x5cbc4)
    #1 std::char_traits<char>::assign(char*, unsigned long, char) <null> (accllm_server_tests+0x6e828)
    #2 std::__cxx11::basic_string<char>::resize(unsigned long, char) /usr/include/c++/12/bits/basic_string.tcc:401 (accllm_server_tests+0x2865f3)
    #3 absl::debian3::CopyCordToString(absl::debian3::Cord const&, std::__cxx11::basic_string<char>*) <null> (libabsl_cord.so.20220623+0x9cff)

"""
# The same race with the write made by our code: reported, also where our frame has no file and
# takes a std:: argument.
OURS = [GRPC_ONLY.replace("#1 std::char_traits<char>::assign(char*, unsigned long, char) <null> (accllm_server_tests+0x6e828)",
                          ours) for ours in (
    "#1 accllm::server::GenerateReactor::OnWriteDone(bool) /work/server/generation_service.cc:210 (accllm_server_tests+0x6e828)",
    "#1 accllm::server::Tokenize(std::basic_string<char, std::char_traits<char> > const&) <null> (accllm_server_tests+0x6e828)")]


def self_test():
    assert grpcs_own(GRPC_ONLY), "a race wholly inside gRPC was counted as ours"
    for report in OURS:
        assert not grpcs_own(report), "a race with our code was counted as gRPC's"
    print("tsan_reports.py self-test: passed")
    return 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    files = sys.argv[1:]
    ours, theirs = [], 0
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for report in reports(f.read()):
                if grpcs_own(report):
                    theirs += 1
                else:
                    ours.append((path, report))
    print(f"tsan: {theirs} report(s) of gRPC's own (its header code against its uninstrumented core), "
          f"{len(ours)} involving our code")
    for path, report in ours:
        print(f"--- {path}\n{report}")
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main())
