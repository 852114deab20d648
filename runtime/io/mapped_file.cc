#include "runtime/io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace accllm {
namespace {

absl::Status ErrnoError(const std::string& path, const char* what) {
  const int err = errno;
  const std::string message = absl::StrCat(path, ": ", what, ": ", std::strerror(err));
  return err == ENOENT ? absl::NotFoundError(message) : absl::FailedPreconditionError(message);
}

class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() { ::close(fd_); }

 private:
  int fd_;
};

}  // namespace

const char* LoadModeName(LoadMode mode) {
  return mode == LoadMode::kMap ? "mmap" : "anonymous";
}

absl::StatusOr<std::unique_ptr<MappedFile>> MappedFile::Open(const std::string& path,
                                                             LoadMode mode) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(path, "cannot open");
  FdCloser closer(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return ErrnoError(path, "cannot stat");
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));

  std::unique_ptr<MappedFile> file(new MappedFile());
  file->path_ = path;
  file->size_ = static_cast<std::size_t>(st.st_size);
  if (file->size_ == 0) return file;  // mmap rejects empty files; an empty view is fine.

  if (mode == LoadMode::kMap) {
    void* p = ::mmap(nullptr, file->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) return ErrnoError(path, "cannot mmap");
    file->mapping_ = p;
    file->data_ = static_cast<const std::byte*>(p);
    return file;
  }

  file->buffer_ = AlignedBuffer(file->size_);
  if (file->buffer_.size() != file->size_) {
    return absl::ResourceExhaustedError(
        absl::StrCat(path, ": cannot allocate ", file->size_, " bytes to load it"));
  }
  std::size_t done = 0;
  while (done < file->size_) {
    const ssize_t n = ::pread(fd, file->buffer_.data() + done, file->size_ - done,
                              static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(path, "read failed");
    if (n == 0) return absl::DataLossError(absl::StrCat(path, ": file shrank while reading"));
    done += static_cast<std::size_t>(n);
  }
  file->data_ = file->buffer_.data();
  return file;
}

MappedFile::~MappedFile() {
  if (mapping_ != nullptr) ::munmap(mapping_, size_);
}

}  // namespace accllm
