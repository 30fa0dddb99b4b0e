//! The counting CPU allocator, alone in its process (the counts are process-wide).

use tch::{Device, Kind, Tensor};

#[test]
fn cpu_tensors_are_counted_now_and_at_their_peak() {
    assert_eq!(tram_native::peak_tensor_bytes(Device::Cpu), None, "nothing counted before the allocator is installed");
    assert!(tram_native::count_cpu_tensors());
    let before = tram_native::cpu_tensor_bytes().unwrap();
    tram_native::reset_peak_tensor_bytes(Device::Cpu);
    assert_eq!(tram_native::peak_tensor_bytes(Device::Cpu), Some(before));
    let a = Tensor::zeros([1 << 20], (Kind::Float, Device::Cpu));
    let b = Tensor::ones([1 << 19], (Kind::Double, Device::Cpu));
    assert_eq!(tram_native::cpu_tensor_bytes().unwrap(), before + (8 << 20), "4 MiB of float32 and 4 MiB of f64");
    let sum = (&b + 1.0).sum(Kind::Double).double_value(&[]);
    assert_eq!(sum, 2.0 * (1 << 19) as f64, "tensors from the counting allocator compute as any other");
    drop(a);
    drop(b);
    let after = tram_native::cpu_tensor_bytes().unwrap();
    assert_eq!(after, before, "freed tensors are uncounted");
    let peak = tram_native::peak_tensor_bytes(Device::Cpu).unwrap();
    assert!(peak >= before + (12 << 20), "the peak held a, b and b + 1 at once: {peak} - {before}");
    tram_native::reset_peak_tensor_bytes(Device::Cpu);
    assert_eq!(tram_native::peak_tensor_bytes(Device::Cpu), Some(after), "a reset starts from the bytes held now");
}
