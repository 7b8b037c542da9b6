//! How the allocator gives memory back.
//!
//! glibc's malloc serves a block above its mmap threshold (128 KiB at first) with a mapping
//! of its own and unmaps it when the block is freed. But every such block freed raises the
//! threshold to its size (up to 32 MiB), after which blocks that large come from the heap
//! and stay in the process once freed, where only blocks that fit the holes can reuse them.
//! The dataflow allocates and frees large blocks all the time: timely's batches, the
//! buffers differential merges into, the rows of an epoch on their way to the writers. A
//! fixed threshold keeps each of them mapped for its life and returns it when it is freed.
//!
//! Measured on 6 December 2026 (`run --input`, 2 workers, release; alternating runs): on the
//! 2M events of `clickflow bench`'s file (272,447 sessions, no model) the peak RSS went from
//! 812 MB to 708–724 MB (wall 4.89–5.14 s before, 4.74–5.03 s after); on the side-by-side
//! file from 240 MB to 234 MB. jemalloc (preloaded) peaked at 859–879 MB on the first file;
//! capping glibc's arenas at one or two added nothing; mimalloc was tried in an earlier
//! sitting (more memory, slower).

/// Fixes glibc's mmap threshold at 1 MiB, unless `MALLOC_MMAP_THRESHOLD_` says otherwise.
/// Call it first thing, before any thread starts.
#[allow(unsafe_code)] // A workspace exception (with the next one and `prefetch`): no safe API.
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // SAFETY: `mallopt` only sets one of malloc's parameters, and no other thread
        // exists yet to be allocating while it does.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        }
    }
}

/// Hands the pages of every freed block back to the system (glibc's `malloc_trim`). Freed
/// memory otherwise stays in the process, in the arena of the thread that freed it, where
/// only that thread's later allocations reuse it.
#[allow(unsafe_code)] // The same exception as above.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns free pages to the system; it is safe to call at
    // any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
