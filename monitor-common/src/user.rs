//! Userspace-only trait impls (the `user` feature).

use crate::offsets::KernelOffsets;

// SAFETY: `KernelOffsets` is `#[repr(C)]`, made only of `u32` fields, with no
// padding (checked by its size assertion), so every bit pattern is valid.
unsafe impl aya::Pod for KernelOffsets {}
