// The libtorch and glibc calls tch 0.24 does not expose, as plain C functions for tram-native's FFI. Every
// function catches what libtorch throws: an exception must not cross into Rust.
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/CachingDeviceAllocator.h>
#include <malloc.h>

#include <atomic>
#include <climits>
#include <cstdio>
#include <exception>

namespace {
// c10::DeviceType of the two devices tram runs on.
c10::DeviceType device_type(int cuda) { return cuda ? c10::DeviceType::CUDA : c10::DeviceType::CPU; }

// The CPU allocator tram_count_cpu_tensors installs: libtorch's default (the C heap, c10's 64-byte alignment) with
// a count of the bytes its tensors hold, now and at the peak (what torch.cuda.max_memory_allocated is for CUDA).
// Each block starts with a 64-byte header holding its size.
constexpr size_t kHeader = 64;
std::atomic<long long> cpu_allocated{0};
std::atomic<long long> cpu_peak{0};

void free_counted(void* data) {
  if (data == nullptr) return;
  char* base = static_cast<char*>(data) - kHeader;
  cpu_allocated -= static_cast<long long>(*reinterpret_cast<size_t*>(base));
  std::free(base);
}

struct CountingAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    void* base = nullptr;
    if (posix_memalign(&base, kHeader, n + kHeader) != 0) {
      TORCH_CHECK_WITH(OutOfMemoryError, false, "tram: could not allocate ", n, " bytes for a CPU tensor");
    }
    *static_cast<size_t*>(base) = n;
    long long now = cpu_allocated += static_cast<long long>(n);
    long long peak = cpu_peak.load();
    while (now > peak && !cpu_peak.compare_exchange_weak(peak, now)) {
    }
    void* data = static_cast<char*>(base) + kHeader;
    return {data, data, &free_counted, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &free_counted; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};
bool counting = false;
}  // namespace

extern "C" {

// Installs the counting CPU allocator (tensors allocated before keep libtorch's). Returns 1 when installed.
int tram_count_cpu_tensors(void) {
  static CountingAllocator allocator;
  try {
    c10::SetCPUAllocator(&allocator, /*priority=*/1);
    counting = true;
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tram-native: CPU allocator: %s\n", e.what());
    return 0;
  }
}

// The most bytes CPU tensors held at once since the last reset (peak != 0), or now (peak == 0); -1 when the
// counting allocator is not installed.
long long tram_cpu_tensor_bytes(int peak) {
  if (!counting) return -1;
  return peak ? cpu_peak.load() : cpu_allocated.load();
}

// Starts a new peak from the bytes held now.
void tram_cpu_reset_peak(void) { cpu_peak = cpu_allocated.load(); }

// Enters an autocast region for the device with `dtype` (a c10::ScalarType value) and reports the region it
// replaces, as torch.autocast's __enter__: the previous enabled flag and dtype, restored by tram_autocast_exit.
// Returns 0, or 1 when libtorch refused (message written to stderr).
int tram_autocast_enter(int cuda, int dtype, int* prev_enabled, int* prev_dtype) {
  try {
    auto dev = device_type(cuda);
    *prev_enabled = at::autocast::is_autocast_enabled(dev) ? 1 : 0;
    *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(dev));
    at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(dtype));
    at::autocast::set_autocast_enabled(dev, true);
    at::autocast::increment_nesting();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tram-native: autocast: %s\n", e.what());
    return 1;
  }
}

// Leaves the region: the cache of casted weights is cleared when the outermost region ends (as torch.autocast's
// __exit__), so that weights changed between two regions are cast again.
int tram_autocast_exit(int cuda, int prev_enabled, int prev_dtype) {
  try {
    auto dev = device_type(cuda);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(dev, prev_enabled != 0);
    at::autocast::set_autocast_dtype(dev, static_cast<at::ScalarType>(prev_dtype));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tram-native: autocast: %s\n", e.what());
    return 1;
  }
}

int tram_autocast_enabled(int cuda) {
  try {
    return at::autocast::is_autocast_enabled(device_type(cuda)) ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

// TF32 for float32 matmuls and convolutions on CUDA (torch.set_float32_matmul_precision("high") and
// torch.backends.cudnn.allow_tf32), or back to IEEE float32 matmuls.
int tram_set_tf32(int allow) {
  try {
    at::globalContext().setFloat32MatmulPrecision(allow ? "high" : "highest");
    at::globalContext().setAllowTF32CuDNN(allow != 0);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tram-native: tf32: %s\n", e.what());
    return 1;
  }
}

// glibc serves allocations above a threshold (32 MiB at most, adaptively) with mmap and gives them back to the
// kernel on free; a step over large temporaries (logits over a 49k vocabulary) then pays page faults for every
// one of them, every step. Serving every allocation from the heap and never trimming it keeps that memory mapped.
// Returns 1 when both settings were accepted.
int tram_keep_freed_memory(void) {
  int a = mallopt(M_MMAP_MAX, 0);
  int b = mallopt(M_TRIM_THRESHOLD, INT_MAX);
  return a == 1 && b == 1;
}

// Gives the heap's free memory back to the kernel (the top of the heap unmapped, free pages inside it released):
// what tram_keep_freed_memory keeps during a run does not stay resident through the next one. Returns 1 when
// memory was released.
int tram_release_freed_memory(void) { return malloc_trim(0); }

// torch.cuda.max_memory_allocated(device): the peak of bytes the CUDA caching allocator has handed out since the
// last reset, or -1 (no CUDA, message on stderr).
long long tram_cuda_max_memory_allocated(int device) {
  try {
    auto stats = c10::getDeviceAllocator(c10::DeviceType::CUDA)->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    return stats.allocated_bytes[static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE)].peak;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tram-native: CUDA memory: %s\n", e.what());
    return -1;
  }
}

// torch.cuda.reset_peak_memory_stats(device); 0, or 1 when libtorch refused.
int tram_cuda_reset_peak_memory(int device) {
  try {
    c10::getDeviceAllocator(c10::DeviceType::CUDA)->resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tram-native: CUDA memory: %s\n", e.what());
    return 1;
  }
}

// The CUDA runtime version libtorch was built with (e.g. 13000 for 13.0), or -1 without libtorch's CUDA library.
long long tram_cuda_runtime_version(void) {
  try {
    return at::detail::getCUDAHooks().versionCUDART();
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
