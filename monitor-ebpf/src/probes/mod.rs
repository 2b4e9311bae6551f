//! Programs, one module per hook family. Programs are named
//! `<family>_<hook>`: userspace attaches them by that name.

pub mod bench;
pub mod config;
pub mod forward;
pub mod net;
pub mod process;

/// Atomic add whose result is unused, which the BPF backend emits as one
/// `lock xadd`. `core::sync::atomic` offers no `fetch_add` on this target
/// (it has no compare-and-swap), so the intrinsic is used directly.
#[inline(always)]
pub unsafe fn atomic_add(dst: *mut u64, v: u64) {
    // SAFETY: `dst` points into a live map value.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            dst, v,
        )
    };
}
