//! # tram-native
//!
//! The few libtorch and C library calls that tch 0.24 does not expose, through a small C++ shim
//! (`cpp/native.cpp`) built against the same libtorch:
//!
//! - [`Autocast`]: libtorch's own automatic mixed precision (the dispatcher's autocast policy — which ops run in
//!   the reduced type, which stay in float32 — exactly as `torch.autocast` applies it), on the CPU or CUDA, in
//!   bfloat16 or float16. tch offers only CUDA float16, through a deprecated call.
//! - [`set_tf32`]: TF32 for float32 matmuls and convolutions on CUDA.
//! - [`keep_freed_memory`]: glibc allocator settings for a training process whose steps allocate and free the
//!   same large temporaries over and over; [`release_freed_memory`] gives what they kept back between runs.
//! - [`peak_resident_bytes`], [`reset_peak_resident_bytes`], [`resident_bytes`]: the process's peak resident
//!   memory over a span and its resident memory now (Linux's VmHWM, `clear_refs` and VmRSS).
//! - [`cuda_max_memory_allocated`], [`cuda_reset_peak_memory`], [`cuda_runtime_version`]: the CUDA caching
//!   allocator's peak (`torch.cuda.max_memory_allocated`) and the CUDA version libtorch was built with.

use tch::{Device, Kind};

mod ffi {
    #![allow(unsafe_code)]
    use std::os::raw::c_int;

    extern "C" {
        pub fn tram_autocast_enter(
            cuda: c_int,
            dtype: c_int,
            prev_enabled: *mut c_int,
            prev_dtype: *mut c_int,
        ) -> c_int;
        pub fn tram_autocast_exit(cuda: c_int, prev_enabled: c_int, prev_dtype: c_int) -> c_int;
        pub fn tram_autocast_enabled(cuda: c_int) -> c_int;
        pub fn tram_set_tf32(allow: c_int) -> c_int;
        pub fn tram_keep_freed_memory() -> c_int;
        pub fn tram_release_freed_memory() -> c_int;
        pub fn tram_count_cpu_tensors() -> c_int;
        pub fn tram_cpu_tensor_bytes(peak: c_int) -> std::os::raw::c_longlong;
        pub fn tram_cpu_reset_peak();
        pub fn tram_cuda_max_memory_allocated(device: c_int) -> std::os::raw::c_longlong;
        pub fn tram_cuda_reset_peak_memory(device: c_int) -> c_int;
        pub fn tram_cuda_runtime_version() -> std::os::raw::c_longlong;
    }

    pub fn cuda_max_memory_allocated(device: c_int) -> i64 {
        // SAFETY: plain C function over an integer; it catches libtorch's exceptions.
        unsafe { tram_cuda_max_memory_allocated(device) }
    }

    pub fn cuda_reset_peak_memory(device: c_int) -> bool {
        // SAFETY: plain C function over an integer; it catches libtorch's exceptions.
        unsafe { tram_cuda_reset_peak_memory(device) == 0 }
    }

    pub fn cuda_runtime_version() -> i64 {
        // SAFETY: plain C function without arguments; it catches libtorch's exceptions.
        unsafe { tram_cuda_runtime_version() }
    }

    pub fn enter(cuda: bool, dtype: c_int) -> Option<(c_int, c_int)> {
        let (mut enabled, mut prev) = (0, 0);
        // SAFETY: plain C function; the two out-pointers are valid for the call.
        let rc = unsafe { tram_autocast_enter(cuda as c_int, dtype, &mut enabled, &mut prev) };
        (rc == 0).then_some((enabled, prev))
    }

    pub fn exit(cuda: bool, enabled: c_int, dtype: c_int) {
        // SAFETY: plain C function over integers.
        unsafe { tram_autocast_exit(cuda as c_int, enabled, dtype) };
    }

    pub fn enabled(cuda: bool) -> bool {
        // SAFETY: plain C function over an integer.
        unsafe { tram_autocast_enabled(cuda as c_int) != 0 }
    }

    pub fn set_tf32(allow: bool) -> bool {
        // SAFETY: plain C function over an integer.
        unsafe { tram_set_tf32(allow as c_int) == 0 }
    }

    pub fn keep_freed_memory() -> bool {
        // SAFETY: plain C function without arguments (glibc's mallopt).
        unsafe { tram_keep_freed_memory() != 0 }
    }

    pub fn release_freed_memory() -> bool {
        // SAFETY: plain C function without arguments (glibc's malloc_trim).
        unsafe { tram_release_freed_memory() != 0 }
    }

    pub fn count_cpu_tensors() -> bool {
        // SAFETY: plain C function without arguments; it catches libtorch's exceptions.
        unsafe { tram_count_cpu_tensors() != 0 }
    }

    pub fn cpu_tensor_bytes(peak: bool) -> i64 {
        // SAFETY: plain C function over an integer (atomic loads).
        unsafe { tram_cpu_tensor_bytes(peak as c_int) }
    }

    pub fn cpu_reset_peak() {
        // SAFETY: plain C function without arguments (atomic stores).
        unsafe { tram_cpu_reset_peak() }
    }
}

/// An autocast region on one device, active on this thread until dropped (regions nest; the outermost one's end
/// clears libtorch's cache of casted weights, so weights changed in between are cast again).
///
/// Inside it, libtorch's autocast policy runs each op in the reduced type or in float32 as PyTorch's does:
/// matmuls, linear layers and convolutions in `dtype`; losses (and, on CUDA, softmax, log-softmax and norms) in
/// float32; parameters and their gradients stay float32. Backward runs outside the region, each op in the type
/// its forward used.
#[must_use = "the region ends when the guard is dropped"]
pub struct Autocast {
    cuda: bool,
    previous: (i32, i32),
}

impl Autocast {
    /// Enters a region on `device` in `dtype` (`Kind::BFloat16` or `Kind::Half`). `None` for another dtype, or
    /// when libtorch refuses (it prints why), e.g. a dtype its policy does not support on that device.
    pub fn enter(device: Device, dtype: Kind) -> Option<Self> {
        let cuda = device.is_cuda();
        // c10::ScalarType's values of the two reduced types autocast offers.
        let scalar_type = match dtype {
            Kind::Half => 5,
            Kind::BFloat16 => 15,
            _ => return None,
        };
        let previous = ffi::enter(cuda, scalar_type)?;
        Some(Self { cuda, previous })
    }

    /// Whether an autocast region is active on this thread for `device`'s type.
    pub fn is_active(device: Device) -> bool {
        ffi::enabled(device.is_cuda())
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        ffi::exit(self.cuda, self.previous.0, self.previous.1);
    }
}

/// Allows (or forbids) TF32 in float32 matmuls and convolutions on CUDA, process-wide (no effect on the CPU).
/// Returns false when libtorch refused.
pub fn set_tf32(allow: bool) -> bool {
    ffi::set_tf32(allow)
}

/// Asks glibc to serve every allocation from the heap and never to trim it, so that the large temporaries a step
/// frees are reused by the next step instead of being unmapped and faulted in again (measured: whole steps of the
/// causal-LM task 14–23% faster on the CPU). Process-wide; call it once at the start of a training program.
/// With `TRAM_KEEP_FREED_MEMORY=0` in the environment it leaves glibc's defaults (docs/precision.md, "The
/// allocator, before and after"). Returns whether the settings are in effect: false when disabled so, or when
/// glibc refused a setting.
pub fn keep_freed_memory() -> bool {
    std::env::var("TRAM_KEEP_FREED_MEMORY").as_deref() != Ok("0") && ffi::keep_freed_memory()
}

/// Gives the C heap's free memory back to the kernel (glibc's `malloc_trim`): what [`keep_freed_memory`] keeps
/// mapped for a run's steps is released before the next run, so that a sweep's resident memory is its largest
/// run's, not the sum of what every run left behind (docs/paper-scale.md). Returns whether memory was released.
pub fn release_freed_memory() -> bool {
    ffi::release_freed_memory()
}

/// The process's peak resident memory since the last [`reset_peak_resident_bytes`] (or since it started): Linux's
/// `VmHWM`; `None` where `/proc/self/status` does not say.
pub fn peak_resident_bytes() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// The process's resident memory now: Linux's `VmRSS`; `None` where `/proc/self/status` does not say.
pub fn resident_bytes() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// A size field of `/proc/self/status` (given in kB), in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status.lines().find_map(|l| l.strip_prefix(field))?.trim().strip_suffix("kB")?.trim();
    kib.parse::<u64>().ok().map(|k| k * 1024)
}

/// Starts [`peak_resident_bytes`] afresh from the resident memory now (Linux's `clear_refs`, value 5). False where
/// the kernel refused: the peak then still counts from the process's start.
pub fn reset_peak_resident_bytes() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Makes libtorch allocate CPU tensors through an allocator that counts the bytes they hold (the C heap as before,
/// with a 64-byte header per tensor), so that [`peak_tensor_bytes`] can say on the CPU what CUDA's caching
/// allocator says on a GPU. Process-wide; call it once at the start, before any tensor worth counting. False when
/// libtorch refused.
pub fn count_cpu_tensors() -> bool {
    ffi::count_cpu_tensors()
}

/// The most bytes tensors on `device` held at once since the last [`reset_peak_tensor_bytes`]: on CUDA the
/// caching allocator's `max_memory_allocated`, on the CPU the counting allocator's; `None` without CUDA, or on
/// the CPU when [`count_cpu_tensors`] was not called.
pub fn peak_tensor_bytes(device: Device) -> Option<u64> {
    match device {
        Device::Cuda(i) => cuda_max_memory_allocated(i),
        _ => u64::try_from(ffi::cpu_tensor_bytes(true)).ok(),
    }
}

/// Bytes tensors on the CPU hold now, where [`count_cpu_tensors`] was called.
pub fn cpu_tensor_bytes() -> Option<u64> {
    u64::try_from(ffi::cpu_tensor_bytes(false)).ok()
}

/// Starts [`peak_tensor_bytes`] afresh on `device`, from what its tensors hold now.
pub fn reset_peak_tensor_bytes(device: Device) {
    match device {
        Device::Cuda(i) => {
            cuda_reset_peak_memory(i);
        }
        _ => ffi::cpu_reset_peak(),
    }
}

/// `torch.cuda.max_memory_allocated(device)`: the most bytes CUDA's caching allocator has handed out at once since
/// the last [`cuda_reset_peak_memory`]; `None` without CUDA.
pub fn cuda_max_memory_allocated(device: usize) -> Option<u64> {
    u64::try_from(ffi::cuda_max_memory_allocated(device as std::os::raw::c_int)).ok()
}

/// `torch.cuda.reset_peak_memory_stats(device)`; false without CUDA.
pub fn cuda_reset_peak_memory(device: usize) -> bool {
    ffi::cuda_reset_peak_memory(device as std::os::raw::c_int)
}

/// The CUDA runtime version libtorch was built with, as `major.minor` (e.g. "13.0"); `None` when this libtorch has
/// no CUDA library loaded.
pub fn cuda_runtime_version() -> Option<String> {
    let v = ffi::cuda_runtime_version();
    (v > 0).then(|| format!("{}.{}", v / 1000, (v % 1000) / 10))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Tensor;

    #[test]
    fn autocast_follows_libtorchs_cpu_policy_and_nests() {
        let x = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([8, 8], (Kind::Float, Device::Cpu));
        assert!(!Autocast::is_active(Device::Cpu));
        {
            let _outer = Autocast::enter(Device::Cpu, Kind::BFloat16).expect("CPU bf16 autocast");
            assert!(Autocast::is_active(Device::Cpu));
            let y = x.matmul(&w);
            assert_eq!(y.kind(), Kind::BFloat16, "matmul runs in the reduced type");
            let labels = Tensor::zeros([4], (Kind::Int64, Device::Cpu));
            let loss = y.cross_entropy_for_logits(&labels);
            assert_eq!(loss.kind(), Kind::Float, "losses stay in float32");
            assert_eq!((&y + &x).kind(), Kind::Float, "promotion: bf16 + f32 is f32");
            {
                let _inner = Autocast::enter(Device::Cpu, Kind::BFloat16).unwrap();
                assert!(Autocast::is_active(Device::Cpu));
            }
            assert!(Autocast::is_active(Device::Cpu), "the inner region's end keeps the outer one");
        }
        assert!(!Autocast::is_active(Device::Cpu));
        assert_eq!(x.matmul(&w).kind(), Kind::Float, "outside a region float32 stays float32");
    }

    #[test]
    fn gradients_reach_float32_parameters_through_reduced_ops() {
        let w = Tensor::randn([8, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let x = Tensor::randn([5, 8], (Kind::Float, Device::Cpu));
        let loss = {
            let _a = Autocast::enter(Device::Cpu, Kind::BFloat16).unwrap();
            x.matmul(&w).cross_entropy_for_logits(&Tensor::zeros([5], (Kind::Int64, Device::Cpu)))
        };
        loss.backward();
        assert_eq!(w.grad().kind(), Kind::Float);
        assert!(w.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    #[test]
    fn half_precision_autocast_exists_on_the_cpu() {
        let x = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let _a = Autocast::enter(Device::Cpu, Kind::Half).expect("CPU fp16 autocast");
        assert_eq!(x.matmul(&x.transpose(0, 1)).kind(), Kind::Half);
    }

    #[test]
    fn allocator_settings_are_accepted() {
        assert!(keep_freed_memory());
        assert!(set_tf32(false));
    }

    #[test]
    fn cuda_memory_is_none_without_a_device() {
        if !tch::Cuda::is_available() {
            assert_eq!(cuda_max_memory_allocated(0), None);
            assert!(!cuda_reset_peak_memory(0));
        }
    }
}
