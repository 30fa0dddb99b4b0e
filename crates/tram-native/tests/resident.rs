//! The resident-memory calls, alone in their process (resident memory is process-wide) and on its main thread, as
//! tram trains (glibc serves a spawned thread's large blocks from fresh mappings whatever its settings): freed
//! heap memory kept by `keep_freed_memory` stays resident until `release_freed_memory`; the peak resident memory
//! rises with what is touched and starts afresh from what is resident now.

const MIB: u64 = 1 << 20;

fn resident_bytes() -> u64 {
    tram_native::resident_bytes().expect("/proc/self/status says VmRSS")
}

/// A block of `mib` MiB from the C heap, every page written.
fn touched(mib: u64) -> Vec<u8> {
    vec![1u8; (mib * MIB) as usize]
}

fn main() {
    freed_memory_is_kept_until_released_and_the_peak_starts_afresh();
    println!("test freed_memory_is_kept_until_released_and_the_peak_starts_afresh ... ok");
}

fn freed_memory_is_kept_until_released_and_the_peak_starts_afresh() {
    assert!(tram_native::keep_freed_memory());
    assert!(tram_native::reset_peak_resident_bytes(), "this kernel refused to reset the peak");
    let start = resident_bytes();
    let block = touched(256);
    let peak = tram_native::peak_resident_bytes().unwrap();
    assert!(peak >= start + 250 * MIB, "the peak holds the touched block: {peak} vs {start}");
    drop(block);
    let kept = resident_bytes();
    assert!(kept >= start + 250 * MIB, "a freed block stays resident: {kept} vs {start}");
    assert!(tram_native::release_freed_memory());
    let released = resident_bytes();
    assert!(released + 250 * MIB <= kept, "released: {released} vs {kept}");
    assert!(tram_native::reset_peak_resident_bytes());
    let fresh = tram_native::peak_resident_bytes().unwrap();
    assert!(fresh + 200 * MIB <= peak, "a reset starts from the resident memory now: {fresh} vs {peak}");
    // The heap's freed space is reused: a second block of the same size raises the peak by its size again.
    let again = touched(256);
    assert!(tram_native::peak_resident_bytes().unwrap() >= fresh + 250 * MIB);
    drop(again);
}
