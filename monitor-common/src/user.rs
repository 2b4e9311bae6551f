//! Userspace-only trait impls (the `user` feature).

use crate::offsets::KernelOffsets;

// SAFETY: `KernelOffsets` is `#[repr(C)]`, made only of `u32` fields, with no
// padding (checked by its size assertion), so every bit pattern is valid.
unsafe impl aya::Pod for KernelOffsets {}

// SAFETY: `#[repr(C)]` integer-only records without padding (size asserted).
unsafe impl aya::Pod for crate::event::SockOwner {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::event::FlowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::event::FlowStats {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::event::IoKey {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::event::IoStats {}
// SAFETY: repr(C) byte arrays and integers, no padding.
unsafe impl aya::Pod for crate::event::ProxyHead {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::event::FwdKey {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::event::FwdStats {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::event::IfaceInfo {}
// SAFETY: plain u64 fields, no padding.
unsafe impl aya::Pod for crate::event::UnixLinks {}
